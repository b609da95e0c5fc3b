"""``compat-mode`` and ``link-mtu``/``udp-mtu`` in the config (trivpn/config/compat.py,
trivpn/config/linkmtu.py); the values are compared with openvpn 2.6.14's in
tests/interop/test_compat_mode.py and tests/interop/test_link_mtu.py."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.config.compat import parse_compat_version

CLIENT = "client\ndev tun\nremote 198.18.0.9 1194\nca ca.crt\ncert c.crt\nkey c.key\n"
STATIC = "dev tun\nsecret s.key 0\ncipher AES-256-CBC\n"


@pytest.mark.directive("compat-mode")
@pytest.mark.parametrize(("text", "value"), [("2.4.0", 20400), ("2.3.6", 20306),
                                             ("2.5.11", 20511), ("2.4.0-beta", 20400),
                                             ("2.4", None), ("v2.4.0", None)])
def test_compat_mode_version_is_read_as_openvpn_reads_it(text: str, value: int | None) -> None:
    assert parse_compat_version(text) == value


@pytest.mark.directive("compat-mode", "tls-version-min")
def test_compat_mode_before_2_3_7_lowers_the_tls_minimum_unless_configured() -> None:
    o = parse_config(CLIENT + "compat-mode 2.3.6\ncipher AES-256-CBC\n", "c.conf")
    assert o.tls_version_min.version == "1.0"
    o = parse_config(CLIENT + "compat-mode 2.3.6\ncipher AES-256-CBC\ntls-version-min 1.2\n",
                     "c.conf")
    assert o.tls_version_min.version == "1.2"
    assert parse_config(CLIENT + "compat-mode 2.3.7\ncipher AES-256-CBC\n",
                        "c.conf").tls_version_min.version == "1.2"


@pytest.mark.directive("compat-mode", "data-ciphers-fallback")
def test_compat_mode_before_2_4_makes_cipher_the_fallback() -> None:
    o = parse_config(CLIENT + "compat-mode 2.3.9\ncipher AES-128-CBC\n", "c.conf")
    assert o.data_ciphers_fallback == "AES-128-CBC"
    assert parse_config(CLIENT + "compat-mode 2.4.0\ncipher AES-128-CBC\n",
                        "c.conf").data_ciphers_fallback is None


@pytest.mark.directive("compat-mode", "data-ciphers")
def test_compat_mode_before_2_5_appends_cipher_to_data_ciphers() -> None:
    o = parse_config(CLIENT + "compat-mode 2.4.9\ncipher AES-128-CBC\n", "c.conf")
    assert o.data_ciphers[-1] == "AES-128-CBC"
    o = parse_config(CLIENT + "compat-mode 2.5.0\ncipher AES-128-CBC\n", "c.conf")
    assert "AES-128-CBC" not in o.data_ciphers


@pytest.mark.directive("compat-mode", "allow-compression")
def test_compat_mode_before_2_6_keeps_compression_allowed_asymmetrically() -> None:
    assert parse_config(CLIENT + "compat-mode 2.5.9\n", "c.conf").allow_compression == "asym"
    assert parse_config(CLIENT + "compat-mode 2.6.0\n", "c.conf").allow_compression == "no"
    assert parse_config(CLIENT + "compat-mode 2.5.9\nallow-compression no\n",
                        "c.conf").allow_compression == "no"


@pytest.mark.directive("compat-mode")
def test_compat_mode_before_2_4_without_cipher_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unsupported cipher in --data-ciphers: BF-CBC"):
        parse_config(CLIENT + "compat-mode 2.3.0\n", "c.conf")


@pytest.mark.directive("link-mtu")
@pytest.mark.parametrize(("text", "tun_mtu"), [
    (STATIC + "link-mtu 1400\n", 1348),
    (STATIC + "link-mtu 1400\nproto tcp-server\n", 1346),
    (STATIC + "auth SHA512\nlink-mtu 1500\n", 1404),
    (CLIENT + "link-mtu 1400\n", 1375),
    (CLIENT + "cipher AES-256-GCM\nlink-mtu 1400\n", 1351),
    (CLIENT + "cipher CHACHA20-POLY1305\nlink-mtu 1400\n", 1366),
])
def test_link_mtu_derives_the_tun_mtu(text: str, tun_mtu: int) -> None:
    o = parse_config(text, "c.conf")
    assert o.tun_mtu == tun_mtu
    assert o.mssfix.max == 0


@pytest.mark.directive("udp-mtu")
def test_udp_mtu_is_link_mtu() -> None:
    assert parse_config(STATIC + "udp-mtu 1400\n", "c.conf").tun_mtu == 1348


@pytest.mark.directive("link-mtu", "mssfix")
def test_link_mtu_keeps_an_explicit_mssfix() -> None:
    o = parse_config(STATIC + "link-mtu 1400\nmssfix 1300\n", "c.conf")
    assert (o.mssfix.max, o.tun_mtu) == (1300, 1348)


@pytest.mark.directive("link-mtu", "tun-mtu")
def test_link_mtu_with_tun_mtu_is_refused_at_the_later_line() -> None:
    with pytest.raises(ConfigError, match=r"c\.conf:5: only one of --tun-mtu or --link-mtu"):
        parse_config(STATIC + "link-mtu 1400\ntun-mtu 1300\n", "c.conf")


@pytest.mark.directive("link-mtu", "connection")
def test_link_mtu_in_connection_blocks_applies_to_the_client() -> None:
    block = "<connection>\nremote 198.18.0.9 1194\nlink-mtu 1400\n</connection>\n"
    o = parse_config(CLIENT.replace("remote 198.18.0.9 1194\n", "") + block, "c.conf")
    assert o.tun_mtu == 1375
    with pytest.raises(ConfigError, match="only one of --tun-mtu or --link-mtu"):
        parse_config(CLIENT.replace("remote 198.18.0.9 1194\n", "")
                     + block.replace("link-mtu 1400\n", "link-mtu 1400\ntun-mtu 1300\n"),
                     "c.conf")
