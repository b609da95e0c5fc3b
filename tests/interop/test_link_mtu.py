"""``link-mtu N`` / ``udp-mtu N``: trivpn derives the tun MTU (and leaves mssfix off) exactly
as openvpn 2.6.14 does (init.c, get_frame_mtu()); the binary's "Data Channel MTU parms" line
is the reference for each config shape (trivpn/config/linkmtu.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output, write_pki
from tests.netns import NetnsLab
from trivpn.config import ConfigError, parse_config

pytestmark = pytest.mark.integration

MTU_PARMS = re.compile(r"Data Channel MTU parms \[ .*? tun_mtu:(\d+) ")
MSSFIX = re.compile(r"  mssfix = (\d+)\n")  # the option as openvpn settled it
STATIC = ["secret static.key 0", "cipher AES-256-CBC"]
CLIENT = ["client", "remote 198.18.0.9 1194", "ca ca.crt", "cert client.crt", "key client.key"]
SHAPES = {
    "static-aes256-sha1-udp": STATIC,
    "static-aes128-sha256": ["secret static.key", "cipher AES-128-CBC", "auth SHA256"],
    "static-tcp": [*STATIC, "proto tcp-client", "remote 198.18.0.9 1194"],
    "static-no-replay": [*STATIC, "no-replay"],
    "tls-client-default": CLIENT,
    "tls-client-cbc": [*CLIENT, "cipher AES-256-CBC"],
    "tls-client-gcm": [*CLIENT, "cipher AES-256-GCM"],
    "tls-client-chacha-sha512": [*CLIENT, "cipher CHACHA20-POLY1305", "auth SHA512"],
    "tls-client-tcp": [*CLIENT, "proto tcp-client"],
    "udp-mtu-alias": [*STATIC, "udp-mtu 1300"],
}


def _openvpn_mtu(lab: NetnsLab, workdir: Path, lines: list[str]) -> tuple[int, int]:
    args: list[str] = []
    for line in ["dev null", "verb 4", "lport 0", "connect-retry-max 1", *lines]:
        word, *rest = line.split()
        args += [f"--{word}", *rest]
    out = openvpn_output(lab, workdir, args)
    found, mssfix = MTU_PARMS.search(out), MSSFIX.search(out)
    assert found is not None and mssfix is not None, out[-2000:]
    return int(mssfix[1]), int(found[1])


@pytest.mark.directive("link-mtu", "udp-mtu")
@pytest.mark.parametrize("shape", SHAPES)
def test_link_mtu_gives_the_tun_mtu_openvpn_derives(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, shape: str) -> None:
    write_pki(tmp_path)
    lines = SHAPES[shape]
    if not any(line.startswith("udp-mtu") for line in lines):
        lines = [*lines, "link-mtu 1400"]
    mssfix, tun_mtu = _openvpn_mtu(lab, tmp_path, lines)
    o = parse_config("\n".join(["dev tun", *lines]) + "\n", tmp_path / "c.conf")
    assert o.tun_mtu == tun_mtu
    assert o.mssfix.max == mssfix == 0


@pytest.mark.directive("link-mtu", "mssfix")
def test_an_explicit_mssfix_stays_with_link_mtu(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    write_pki(tmp_path)
    lines = [*STATIC, "link-mtu 1400", "mssfix 1300"]
    mssfix, tun_mtu = _openvpn_mtu(lab, tmp_path, lines)
    o = parse_config("\n".join(["dev tun", *lines]) + "\n", tmp_path / "c.conf")
    assert (o.mssfix.max, o.tun_mtu) == (mssfix, tun_mtu) == (1300, 1348)


@pytest.mark.directive("link-mtu")
def test_link_mtu_and_tun_mtu_together_are_refused_as_openvpn_refuses_them(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, ["--dev", "null", "--secret", "static.key", "--cipher",
                                         "AES-256-CBC", "--link-mtu", "1400", "--tun-mtu",
                                         "1300"])
    assert "only one of --tun-mtu or --link-mtu may be defined" in out
    with pytest.raises(ConfigError, match="only one of --tun-mtu or --link-mtu"):
        parse_config("dev tun\nsecret s.key\ncipher AES-256-CBC\nlink-mtu 1400\n"
                     "tun-mtu 1300\n", "c.conf")


@pytest.mark.directive("link-mtu")
def test_a_link_mtu_that_leaves_too_small_a_tun_mtu_is_refused(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, ["--dev", "null", "--secret", "static.key", "--cipher",
                                         "AES-256-CBC", "--link-mtu", "140"])
    assert "TUN MTU value (88) must be at least 100" in out
    with pytest.raises(ConfigError, match=re.escape("TUN MTU value (88) must be at least 100")):
        parse_config("dev tun\nsecret s.key\ncipher AES-256-CBC\nlink-mtu 140\n", "c.conf")
