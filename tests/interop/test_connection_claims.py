"""What trivpn's connection-profile and proxy messages say OpenVPN 2.6 does, checked against
the real binary (messages in trivpn/config/parser.py and trivpn/config/connection.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = pytest.mark.integration

CLIENT = ["client", "dev tun", "nobind", "ca ca.crt", "cert client.crt", "key client.key",
          "verb 4"]


def _both(lab: NetnsLab, workdir: Path, lines: list[str]) -> tuple[str, str | None,
                                                                   list[str]]:
    """openvpn's output on the config (at most 2 s, in a namespace of its own), trivpn's
    error (None when it accepts it) and trivpn's warnings."""
    conf = workdir / "t.conf"
    conf.write_text("\n".join(lines) + "\n")
    theirs = openvpn_output(lab, workdir, ["--config", conf.name])
    try:
        opts = load_config(conf)
    except ConfigError as exc:
        return theirs, str(exc), []
    return theirs, None, [str(w) for w in opts.warnings]


@pytest.mark.parametrize(("lines", "message"), [
    (["proto udp", "remote 198.18.0.9 1194", "http-proxy 198.18.0.5 8080"],
     "--http-proxy MUST be used in TCP Client mode (i.e. --proto tcp-client)"),
    (["proto tcp-client", "remote 198.18.0.9 1194", "http-proxy-option AGENT x"],
     "--http-proxy not specified but other http proxy options present"),
    (["proto tcp-client", "remote 198.18.0.9 1194", "http-proxy 198.18.0.5 8080",
      "socks-proxy 198.18.0.5"],
     "--http-proxy can not be used together with --socks-proxy"),
    (["proto tcp-client", "remote 198.18.0.9 1194", "http-proxy 198.18.0.5"],
     "http-proxy port number not defined"),
    (["proto tcp-client", "remote 198.18.0.9 1194", "http-proxy 198.18.0.5 80",
      "http-proxy-option FOO 1"],
     "Bad http-proxy-option or missing or extra parameter: 'FOO'"),
])
def test_proxy_refusals_use_openvpns_words(lab: NetnsLab, openvpn_binary: None,
                                           workdir: Path, lines: list[str],
                                           message: str) -> None:
    out, error, _ = _both(lab, workdir, [*CLIENT, *lines])
    assert message in out, out[-3000:]
    assert error is not None and error.endswith(message)


@pytest.mark.directive("connection")
def test_connection_option_after_a_block_is_ignored_with_openvpns_warning(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out, error, warnings = _both(lab, workdir, [
        *CLIENT, "<connection>", "remote 198.18.0.9 1194 udp", "</connection>", "port 4000"])
    assert "Option 'port' in t.conf:11 is ignored by previous <connection> blocks" in out, out
    assert error is None
    assert any(w.endswith("t.conf:11: Option 'port' is ignored by previous <connection> "
                          "blocks") for w in warnings), warnings


@pytest.mark.directive("connection")
def test_remote_outside_blocks_is_not_a_profile_in_openvpn_either(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out, error, _ = _both(lab, workdir, [
        *CLIENT, "remote 198.18.0.7 1111", "<connection>", "remote 198.18.0.9 2222 udp",
        "</connection>"])
    assert "Connection profiles [0]:" in out and "Connection profiles [1]:" not in out, out
    assert "remote = '198.18.0.9'" in out and "remote = '198.18.0.7'" not in out
    assert error is None


@pytest.mark.directive("http-proxy-retry", "socks-proxy-retry", "http-proxy-timeout")
@pytest.mark.parametrize("line", ["http-proxy-retry", "socks-proxy-retry",
                                  "http-proxy-timeout 5"])
def test_proxy_retry_options_are_deprecated_no_ops_in_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, line: str) -> None:
    out, error, warnings = _both(lab, workdir, [*CLIENT, "remote 198.18.0.9 1194", line])
    assert "DEPRECATED OPTION: " in out, out[-3000:]
    assert error is None and any("deprecated" in w for w in warnings)


@pytest.mark.directive("connect-retry-max", "connection")
def test_connect_retry_max_inside_a_block_is_lost_in_openvpn_and_kept_by_trivpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    # docs/connections.md, "Differences from OpenVPN"
    out, error, _ = _both(lab, workdir, [
        *CLIENT, "<connection>", "remote 198.18.0.9 1194 udp", "connect-retry-max 3",
        "</connection>"])
    assert "connect_retry_max = 0" in out, out[-3000:]
    assert error is None
    assert load_config(workdir / "t.conf").connect_retry_max == 3
