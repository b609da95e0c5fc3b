"""Parsing of the credentials directives (trivpn/config/directives.py, credentials area)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from trivpn.config import ConfigError, Options, load_config
from trivpn.config.options import FileSource, StaticChallenge


def _load(tmp_path: Path, extra: str) -> Options:
    write_pki(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text("client\ndev tun\nremote 198.18.0.1\nca ca.crt\ncert client.crt\n"
                    "key client.key\n" + extra)
    return load_config(conf)


@pytest.mark.directive("static-challenge")
@pytest.mark.parametrize(("arg", "echo"), [("1", True), ("0", False), ("2", True),
                                           ("yes", False), ("01", True)])
def test_static_challenge_echo_is_openvpns_atoi_not_zero(tmp_path: Path, arg: str, echo: bool):
    o = _load(tmp_path, f'static-challenge "Enter OTP" {arg}\n')
    assert o.static_challenge == StaticChallenge("Enter OTP", echo)


@pytest.mark.directive("askpass")
def test_askpass_with_a_file_or_bare(tmp_path: Path):
    assert _load(tmp_path, "askpass\n").askpass == "prompt"
    source = _load(tmp_path, "askpass pw.txt\n").askpass
    assert isinstance(source, FileSource) and source.path == tmp_path / "pw.txt"


@pytest.mark.directive("auth-token", "auth-token-user")
def test_configured_auth_token_is_kept_out_of_repr(tmp_path: Path):
    o = _load(tmp_path, "auth-token SECRET-T\nauth-token-user YWxpY2U=\n")
    assert (o.auth_token, o.auth_token_user) == ("SECRET-T", "YWxpY2U=")
    assert "SECRET-T" not in repr(o)


@pytest.mark.directive("management-hold")
def test_management_hold_needs_management(tmp_path: Path):
    with pytest.raises(ConfigError, match="need 'management'"):
        _load(tmp_path, "management-hold\n")
    o = _load(tmp_path, f"management {tmp_path}/m.sock unix\nmanagement-hold\n"
                        "management-query-passwords\n")
    assert o.management_hold and o.management_query_passwords
