"""``server-bridge`` without arguments (and ``server-bridge nogw``): the DHCP-proxy form of
OpenVPN 2.6's helper (helper.c helper_client_server(): mode server, tls-server, no pool and
``push "route-gateway dhcp"`` unless nogw), side by side: a real openvpn 2.6 server ("theirs")
and a ``trivpn run`` server ("ours"), each with its tap in a bridge that holds 198.18.40.1 and
a DHCP server (busybox udhcpd) on it, and a real openvpn 2.6 tap client that takes its address
by DHCP (busybox udhcpc) through the tunnel.

Lab (198.18.0.0/15 only), per side i (0 theirs, 1 ours)::

    srv (198.18.4i.1 on br0 with the server's tap; udhcpd: 198.18.4i.100-150)
     |-- cli (198.18.5i.2, link 198.18.5i.1): openvpn --dev tap, udhcpc on its tap
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, ping, start_side_server, tap_name
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

SIDES = ("theirs", "ours")
UDHCPD = """start {net}.100
end {net}.150
interface br0
lease_file {dir}/udhcpd-{who}.leases
pidfile {dir}/udhcpd-{who}.pid
opt subnet 255.255.255.0
opt router {net}.1
"""
# udhcpc's event script: what it was given, for the test to read
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "$ip $subnet $router" > "{dir}/lease-{who}"
exit 0
"""


@dataclass
class Side:
    srv: Netns
    cli: Netns
    server: TrivpnProcess | OpenVpnProcess
    client: OpenVpnProcess
    net: str


def _require_busybox() -> None:
    if shutil.which("busybox") is None:
        pytest.fail("busybox (udhcpd, udhcpc) is needed: scripts/test installs it")


def _server_lines(bridge: str) -> list[str]:
    return ["dev tap", "proto udp", "local 0.0.0.0", "port 1194", "ca ca.crt",
            "cert server.crt", "key server.key", "dh none", bridge, "keepalive 2 20",
            "remote-cert-tls client", "verb 4"]


def _pushed(client: OpenVpnProcess) -> str:
    found = re.search(r"PUSH: Received control message: '(PUSH_REPLY,[^']*)'", client.text())
    assert found is not None, client.text()[-3000:]
    return found.group(1)


def _start(netns_lab: NetnsLab, workdir: Path, who: str, i: int, bridge: str) -> Side:
    net = f"198.18.4{i}"
    srv, cli = netns_lab.add(f"srv{who[0]}"), netns_lab.add(f"cli{who[0]}")
    netns_lab.veth(srv, cli, f"198.18.5{i}.1/24", f"198.18.5{i}.2/24")
    lines = _server_lines(bridge)
    server = start_side_server(srv, workdir, who, lines)
    tap = tap_name(srv)
    assert "inet " not in srv.run(["ip", "-o", "addr", "show", "dev", tap]).stdout
    # the operator's bridge: its address on br0, the server's tap in it, a DHCP server on it
    srv.ip("link", "add", "br0", "type", "bridge")
    srv.add_address("br0", f"{net}.1/24")
    srv.ip("link", "set", tap, "master", "br0")
    srv.ip("link", "set", tap, "up")
    srv.ip("link", "set", "br0", "up")
    conf = workdir / f"udhcpd-{who}.conf"
    conf.write_text(UDHCPD.format(net=net, dir=workdir, who=who))
    (workdir / f"udhcpd-{who}.leases").touch()
    srv.spawn(["busybox", "udhcpd", "-f", str(conf)])
    client = start_openvpn(cli, workdir, f"client-{who}", client_lines(
        server_ip=f"198.18.5{i}.1", dev="tap", extra=["verb 4"]))
    assert client.wait_for("Initialization Sequence Completed", 20), \
        (who, client.text()[-3000:], server.text()[-3000:])
    return Side(srv, cli, server, client, net)


@pytest.fixture(scope="module")
def dhcp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Side]]]:
    require_netns()
    require_openvpn()
    _require_busybox()
    workdir = tmp_path_factory.mktemp("bridge-dhcp")
    write_pki(workdir)
    with NetnsLab() as netns_lab:
        sides = {who: _start(netns_lab, workdir, who, i, "server-bridge")
                 for i, who in enumerate(SIDES)}
        yield workdir, sides


def _dhcp(side: Side, workdir: Path, who: str) -> list[str]:
    """Run udhcpc on the client's tap (at most 10 s); [address, netmask, router if any]."""
    script = workdir / f"udhcpc-{who}.sh"
    script.write_text(UDHCPC_SCRIPT.format(dir=workdir, who=who))
    script.chmod(0o755)
    tap = tap_name(side.cli)
    flags = side.cli.run(["ip", "-o", "link", "show", "dev", tap]).stdout.split("<")[1]
    assert "UP" not in flags.split(">")[0].split(","), flags  # openvpn left it down
    side.cli.ip("link", "set", tap, "up")
    side.cli.run(["busybox", "udhcpc", "-i", tap, "-f", "-q", "-n", "-t", "5", "-T", "1",
                  "-s", str(script)], check=False, timeout=15)
    lease = workdir / f"lease-{who}"
    assert lease.exists(), (who, side.client.text()[-2000:], side.server.text()[-2000:])
    return lease.read_text().split()


@pytest.mark.directive("server-bridge")
def test_server_bridge_alone_pushes_route_gateway_dhcp_and_no_address_like_openvpn(
        dhcp_lab: tuple[Path, dict[str, Side]]) -> None:
    _, sides = dhcp_lab
    theirs, ours = (_pushed(sides[who].client) for who in SIDES)
    assert theirs.startswith("PUSH_REPLY,route-gateway dhcp,ping 2,ping-restart 20,"), theirs
    assert "ifconfig" not in theirs and "topology" not in theirs
    # trivpn's own protocol flags and tun-mtu push differ for every server (not this test's)
    assert ours.partition(",protocol-flags")[0] == theirs.partition(",protocol-flags")[0]


@pytest.mark.directive("server-bridge")
@pytest.mark.parametrize("who", SIDES)
def test_server_bridge_client_takes_its_address_by_dhcp_through_the_tunnel(
        dhcp_lab: tuple[Path, dict[str, Side]], who: str) -> None:
    workdir, sides = dhcp_lab
    side = sides[who]
    router = f"{side.net}.1"
    # 'route-gateway dhcp': the openvpn client takes the router option out of the DHCP answer
    # that came through the tunnel, and logs it (dhcp.c, dhcp_extract_router_msg())
    address, netmask = _dhcp(side, workdir, who)
    assert address.startswith(f"{side.net}.1") and netmask == "255.255.255.0", address
    deadline = time.monotonic() + 5
    while "Extracted DHCP router address" not in side.client.text() \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"Extracted DHCP router address: {router}" in side.client.text()
    side.cli.add_address(tap_name(side.cli), f"{address}/24")
    assert ping(side.cli, router), side.server.text()[-3000:]


@pytest.mark.directive("server-bridge")
def test_server_bridge_nogw_pushes_no_route_gateway_like_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    require_openvpn()
    write_pki(tmp_path)
    replies = [_pushed(_start(lab, tmp_path, who, i, "server-bridge nogw").client)
               for i, who in enumerate(SIDES)]
    assert replies[0].startswith("PUSH_REPLY,ping 2,ping-restart 20,"), replies[0]
    assert replies[1].partition(",protocol-flags")[0] == replies[0].partition(",protocol-flags")[0]
