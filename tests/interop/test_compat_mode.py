"""``compat-mode X.Y.Z``: trivpn changes the defaults openvpn 2.6.14 changes for that version
(TLS minimum, data-ciphers, fallback cipher, compression), compared with the binary's own
settled options, and a trivpn client with it reaches a server that only speaks the cipher an
old peer would use (trivpn/config/compat.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    Setup,
    client_lines,
    make_setup,
    server_lines,
    start_client,
    start_server,
    wait_up,
)
from tests.interop.openvpn import openvpn_output, write_pki
from tests.netns import NetnsLab
from trivpn.config import ConfigError, parse_config
from trivpn.config.directives import COMP_F_ADVERTISE_STUBS_ONLY, COMP_F_ALLOW_STUB_ONLY

pytestmark = pytest.mark.integration

CLIENT = ["client", "dev tun", "remote 198.18.0.9 1194", "ca ca.crt", "cert client.crt",
          "key client.key"]
SSL_FLAGS = re.compile(r"  ssl_flags = (\d+)\n")
NCP = re.compile(r"  ncp_ciphers = '([^']*)'\n")
COMP_FLAGS = re.compile(r"  comp\.flags = (\d+)\n")
TLS_MIN = {1: "1.0", 2: "1.1", 3: "1.2", 4: "1.3"}  # ssl.h TLS_VER_*, shifted by 6 in ssl_flags


def _openvpn_settled(lab: NetnsLab, workdir: Path, lines: list[str]) -> str:
    args: list[str] = []
    for line in ["dev null", "verb 4", "connect-retry-max 1", *lines]:
        word, *rest = line.split()
        args += [f"--{word}", *rest]
    return openvpn_output(lab, workdir, args)


@pytest.mark.directive("compat-mode", "cipher", "data-ciphers", "tls-version-min",
                       "allow-compression")
@pytest.mark.parametrize("extra", [
    ["compat-mode 2.3.6", "cipher AES-256-CBC"],
    ["compat-mode 2.3.7", "cipher AES-128-CBC"],
    ["compat-mode 2.4.9", "cipher AES-256-CBC"],
    ["compat-mode 2.4.0"],
    ["compat-mode 2.5.0", "cipher AES-256-CBC"],
    ["compat-mode 2.5.11"],
    ["compat-mode 2.6.0"],
    ["compat-mode 2.3.0", "cipher AES-256-CBC", "tls-version-min 1.2"],
    ["compat-mode 2.4.0", "comp-lzo no"],
], ids=lambda e: "-".join(x.replace(" ", "") for x in e))
def test_compat_mode_settles_the_options_openvpn_settles(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, extra: list[str]) -> None:
    write_pki(tmp_path)
    out = _openvpn_settled(lab, tmp_path, [*CLIENT, *extra])
    ssl_flags, ncp, comp = SSL_FLAGS.search(out), NCP.search(out), COMP_FLAGS.search(out)
    assert ssl_flags and ncp and comp, out[-2000:]
    o = parse_config("\n".join([*CLIENT, *extra]) + "\n", tmp_path / "c.conf")
    assert o.tls_version_min.version == TLS_MIN[(int(ssl_flags[1]) >> 6) & 0xF]
    assert ":".join(o.data_ciphers) == ncp[1]
    stub_only = COMP_F_ALLOW_STUB_ONLY | COMP_F_ADVERTISE_STUBS_ONLY
    assert (o.comp_flags & stub_only) == (int(comp[1]) & stub_only)


@pytest.mark.directive("compat-mode")
@pytest.mark.parametrize("version", ["2.3.0", "2.3.6"])
def test_compat_mode_before_2_4_without_cipher_is_refused_as_openvpn_refuses_it(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, version: str) -> None:
    write_pki(tmp_path)
    out = _openvpn_settled(lab, tmp_path, [*CLIENT, f"compat-mode {version}"])
    assert "Unsupported cipher in --data-ciphers: BF-CBC" in out, out[-2000:]
    with pytest.raises(ConfigError, match="Unsupported cipher in --data-ciphers: BF-CBC"):
        parse_config("\n".join([*CLIENT, f"compat-mode {version}"]) + "\n", "c.conf")


@pytest.mark.directive("compat-mode")
@pytest.mark.parametrize("text", ["2.4", "abc"])
def test_a_compat_mode_that_is_not_a_version_is_refused_in_openvpn_s_words(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, text: str) -> None:
    write_pki(tmp_path)
    out = _openvpn_settled(lab, tmp_path, [*CLIENT, f"compat-mode {text}"])
    message = f"cannot parse version number for --compat-mode: {text}"
    assert message in out, out[-2000:]
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config("\n".join([*CLIENT, f"compat-mode {text}"]) + "\n", "c.conf")


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


@pytest.mark.directive("compat-mode", "cipher")
def test_compat_mode_before_2_5_lets_the_client_reach_a_cbc_only_server(setup: Setup) -> None:
    """The server offers only AES-128-CBC. compat-mode 2.4.0 adds the client's 'cipher' to
    its data-ciphers (2.5 would not), so the push of that cipher is accepted."""
    start_server(setup, server_lines(cipher="AES-128-CBC"))
    client = start_client(setup, client_lines(extra=("compat-mode 2.4.0",
                                                     "cipher AES-128-CBC")))
    wait_up(client)
    keys = client.wait_event("key_method_complete", 5)
    assert keys is not None and keys["cipher"] == "AES-128-CBC", client.text()[-3000:]


@pytest.mark.directive("compat-mode", "cipher")
def test_without_compat_mode_the_same_client_refuses_the_cbc_push(setup: Setup) -> None:
    start_server(setup, server_lines(cipher="AES-128-CBC"))
    client = start_client(setup, client_lines(extra=("cipher AES-128-CBC",)))
    assert client.wait_event("tun_configured", 6) is None, client.text()[-3000:]
