"""What the credentials code says OpenVPN 2.6 does, checked against the real binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = pytest.mark.integration

CLIENT = ["client", "dev tun", "remote 198.18.0.9 1194", "nobind", "ca ca.crt",
          "cert client.crt", "key client.key", "verb 4"]


def _both(lab: NetnsLab, workdir: Path, lines: list[str]) -> tuple[str, ConfigError | None]:
    """openvpn's output (at most 2 s, stdin not a terminal) and trivpn's parse error."""
    conf = workdir / "c.conf"
    conf.write_text("\n".join([*CLIENT, *lines]) + "\n")
    theirs = openvpn_output(lab, workdir, ["--config", conf.name])
    try:
        load_config(conf)
    except ConfigError as exc:
        return theirs, exc
    return theirs, None


@pytest.mark.directive("management-hold", "management-query-passwords")
@pytest.mark.parametrize("directive", ["management-hold", "management-query-passwords"])
def test_management_options_without_management_are_refused_like_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, directive: str) -> None:
    text = ("--management is not specified, however one or more options which modify the "
            "behavior of --management were specified")
    out, error = _both(lab, workdir, [directive])
    assert text in out, out[-2000:]
    assert error is not None and text in str(error)


@pytest.mark.directive("static-challenge")
def test_openvpn_2_6_takes_no_format_argument_for_static_challenge(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out, error = _both(lab, workdir, ['static-challenge "OTP" 1 concat'])
    assert "Unrecognized option or missing or extra parameter(s)" in out, out[-2000:]
    assert error is not None and "static-challenge" in str(error)


@pytest.mark.directive("auth-user-pass")
def test_openvpn_cannot_prompt_without_a_terminal_either(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    # trivpn: a clear error naming the missing terminal (runtime/credentials.py, NoConsole)
    out, error = _both(lab, workdir, ["auth-user-pass"])
    assert error is None
    assert "neither stdin nor stderr are a tty device" in out, out[-2000:]
