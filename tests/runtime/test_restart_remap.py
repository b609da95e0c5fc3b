"""tls-exit and remap-usr1: which restarts become exits or hard restarts (supervisor.py)."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.runtime.supervisor import Exit, Reconnect, remap_restart

BASE = "client\ndev tun\nremote vpn.example.com 1194\nca ca.crt\ncert c.crt\nkey c.key\n"


@pytest.mark.directive("tls-exit")
def test_tls_exit_turns_only_a_tls_error_into_an_exit() -> None:
    failed = Reconnect("handshake_failed", "verify: name")
    assert remap_restart(failed, tls_exit=True, remap_usr1=None) == \
        Exit(0, "tls_exit", "verify: name")
    ping = Reconnect("ping_restart")
    assert remap_restart(ping, tls_exit=True, remap_usr1=None) == ping


@pytest.mark.directive("remap-usr1")
def test_remap_usr1_sighup_makes_every_restart_a_hard_one() -> None:
    out = remap_restart(Reconnect("ping_restart"), tls_exit=False, remap_usr1="SIGHUP")
    assert isinstance(out, Reconnect) and out.hard and out.reason == "ping_restart"


@pytest.mark.directive("remap-usr1")
def test_remap_usr1_sigterm_makes_every_restart_an_exit() -> None:
    out = remap_restart(Reconnect("server_restart"), tls_exit=False, remap_usr1="SIGTERM")
    assert out == Exit(0, "remap_usr1", "server_restart")


@pytest.mark.directive("remap-usr1")
def test_remap_usr1_accepts_only_sighup_and_sigterm() -> None:
    assert parse_config(BASE + "remap-usr1 SIGHUP\n", "/c.conf").remap_usr1 == "SIGHUP"
    with pytest.raises(ConfigError, match=r"c\.conf:7: 'remap-usr1' expects SIGHUP or SIGTERM"):
        parse_config(BASE + "remap-usr1 SIGINT\n", "/c.conf")
