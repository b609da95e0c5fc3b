"""What trivpn says OpenVPN 2.6 does with its server socket directives, checked against the
real binary: ``port-share`` refusals, one ``local`` (the last counts), ``multihome`` without
arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import as_config, openvpn_output
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

CLIENT = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.9", "1194",
          "--nobind", "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key",
          "--verb", "4"]
SERVER = ["--server", "198.18.8.0", "255.255.255.0", "--topology", "subnet", "--dev", "tun",
          "--proto", "udp", "--ca", "ca.crt", "--cert", "server.crt", "--key", "server.key",
          "--dh", "none", "--verb", "4"]


def _veth_ns(lab: NetnsLab, addresses: tuple[str, ...]) -> Netns:
    """A namespace with ``addresses`` on a veth to another one."""
    ns = lab.add("ovpn")
    veth = lab.veth(ns, lab.add("peer"), addresses[0], "198.18.31.254/24")
    for cidr in addresses[1:]:
        ns.add_address(veth.a_ifname, cidr)
    return ns


@pytest.mark.directive("port-share")
@pytest.mark.parametrize(("base", "theirs"), [
    (SERVER, "--port-share only works in TCP server mode (--proto values of tcp-server, "
             "tcp4-server, or tcp6-server)"),
    (CLIENT, "--port-share requires TCP server mode (--mode server --proto tcp-server)"),
], ids=["udp-server", "client"])
def test_port_share_outside_a_tcp_server_is_refused_as_openvpn_refuses_it(
        lab: NetnsLab, workdir: Path, base: list[str], theirs: str) -> None:
    out = openvpn_output(lab, workdir, [*base, "--port-share", "198.18.0.1", "8443"])
    assert f"Options error: {theirs}" in out, out[-3000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config(base) + "port-share 198.18.0.1 8443\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    assert theirs in str(info.value)


@pytest.mark.directive("local")
def test_several_local_lines_bind_the_last_one_as_openvpn_2_6_does(
        lab: NetnsLab, workdir: Path) -> None:
    # OpenVPN 2.6 has one listening socket: a later 'local' replaces the earlier one (2.7
    # opens one socket per 'local'); trivpn 2.6-compatible behaviour is the same.
    args = [*SERVER, "--local", "198.18.31.1", "--local", "198.18.31.2"]
    out = openvpn_output(lab, workdir, args,
                         ns=_veth_ns(lab, ("198.18.31.1/24", "198.18.31.2/24")))
    assert "UDPv4 link local (bound): [AF_INET]198.18.31.2:1194" in out, out[-3000:]
    assert "198.18.31.1:1194" not in out
    conf = workdir / "t.conf"
    conf.write_text(as_config(args))
    assert load_config(conf).local == "198.18.31.2"


@pytest.mark.directive("multihome")
def test_multihome_takes_no_argument_in_openvpn_and_trivpn(
        lab: NetnsLab, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*SERVER, "--multihome", "same-interface"])
    assert "Options error: Unrecognized option or missing or extra parameter(s) in " \
           "[CMD-LINE]:1: multihome" in out, out[-3000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config(SERVER) + "multihome same-interface\n")
    with pytest.raises(ConfigError):
        load_config(conf)
    conf.write_text(as_config(SERVER) + "multihome\n")
    assert load_config(conf).multihome


BRIDGE_SERVER = ["--mode", "server", "--tls-server", "--dev", "tap", "--proto", "udp",
                 "--ca", "ca.crt", "--cert", "server.crt", "--key", "server.key", "--dh", "none",
                 "--verb", "4"]
BRIDGE = ["--server-bridge", "198.18.40.1", "255.255.255.0", "198.18.40.100", "198.18.40.150"]


def _both_refuse_the_bridge_server(lab: NetnsLab, workdir: Path, args: list[str],
                                   theirs: str) -> None:
    """openvpn refuses ``args`` with ``theirs``, and trivpn refuses the same options (less
    'mode server' and 'tls-server') in the same words."""
    out = openvpn_output(lab, workdir, args)
    assert f"Options error: {theirs}" in out, out[-3000:]
    conf = workdir / "t.conf"
    conf.write_text(as_config([a for a in args if a not in ("--mode", "server",
                                                             "--tls-server")]))
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    assert theirs in str(info.value)


@pytest.mark.directive("server-bridge")
@pytest.mark.parametrize(("change", "theirs"), [
    (["--dev", "tun"], "--server-bridge directive only makes sense with --dev tap"),
    (["--server", "198.18.8.0", "255.255.255.0"],
     "--server and --server-bridge cannot be used together"),
], ids=["tun", "with-server"])
def test_server_bridge_refusals_match_openvpn(lab: NetnsLab, workdir: Path,
                                              change: list[str], theirs: str) -> None:
    args = [*BRIDGE_SERVER, *BRIDGE, *change]
    _both_refuse_the_bridge_server(lab, workdir, args, theirs)


@pytest.mark.directive("server-bridge", "ifconfig-pool")
@pytest.mark.parametrize("bridge", [["--server-bridge"], ["--server-bridge", "nogw"]],
                         ids=["dhcp", "nogw"])
def test_server_bridge_dhcp_form_refuses_ifconfig_pool_as_openvpn(
        lab: NetnsLab, workdir: Path, bridge: list[str]) -> None:
    theirs = ("--server-bridge already defines an ifconfig-pool, so you can't also specify "
              "--ifconfig-pool explicitly")
    args = [*BRIDGE_SERVER, *bridge, "--ifconfig-pool", "198.18.40.100", "198.18.40.150",
            "255.255.255.0"]
    _both_refuse_the_bridge_server(lab, workdir, args, theirs)
