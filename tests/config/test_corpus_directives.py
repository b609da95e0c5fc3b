"""Directives the client corpus showed trivpn refusing while OpenVPN 2.6 accepts them."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, Options, parse_config

BASE = "client\ndev tun\nremote vpn.example.com 1194\nca ca.crt\ncert c.crt\nkey c.key\n"


def client(extra: str) -> Options:
    return parse_config(BASE + extra, "/etc/openvpn/client.conf")


@pytest.mark.directive("lport")
def test_lport_zero_binds_a_port_the_kernel_chooses() -> None:
    """Router exports (pfSense) write ``lport 0``: the client binds, to port 0, i.e. any
    port (client.py binds ``(local, lport)`` when ``bind_local``)."""
    o = client("lport 0")
    assert (o.lport, o.bind_local) == (0, True)


def test_lport_above_65535_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="lport"):
        client("lport 65536")


def test_tun_mtu_extra_needs_a_number() -> None:
    client("tun-mtu-extra 32")
    with pytest.raises(ConfigError, match="tun-mtu-extra"):
        client("tun-mtu-extra lots")


def test_route_method_is_accepted_with_its_windows_argument() -> None:
    client("route-method exe")


@pytest.mark.parametrize("line", ["block-outside-dns", "keysize 256", "ip-win32 netsh",
                                  "cryptoapicert SUBJ:trivpn", "inetd"])
def test_options_openvpn_on_linux_does_not_know_are_refused_saying_why(line: str) -> None:
    with pytest.raises(ConfigError, match=r"OpenVPN 2\.6 on Linux does not recognize it either"):
        client(line)


def test_windows_only_option_under_setenv_opt_only_warns() -> None:
    o = client("setenv opt block-outside-dns")
    assert any("block-outside-dns" in w.message for w in o.warnings)


def test_disable_occ_and_ifconfig_nowarn_are_accepted() -> None:
    client("disable-occ\nifconfig-nowarn")


@pytest.mark.parametrize(("line", "said"), [("prng sha1", "'prng' is ignored"),
                                             ("max-routes 100", "'max-routes' is ignored")])
def test_options_openvpn_ignores_with_a_notice_are_ignored_with_a_warning(
        line: str, said: str) -> None:
    o = client(line)
    assert any(said in w.message for w in o.warnings)


@pytest.mark.parametrize("line", ["pkcs11-pin-cache 60", "mtu-test"])
def test_openvpn_options_trivpn_lacks_are_refused_as_not_supported_not_unknown(
        line: str) -> None:
    with pytest.raises(ConfigError, match="not supported by trivpn yet"):
        client(line)
