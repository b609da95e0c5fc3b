"""``server-bridge GW MASK POOL_START POOL_END`` on the ``trivpn run`` server with real openvpn
2.6 tap clients: the server's tap device is put into a bridge that holds GW (what an operator's
up script does), clients get pool addresses and ``route-gateway GW`` as from an openvpn server,
and reach GW through the bridge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, ping, tap_name
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

GW = "198.18.40.1"
BRIDGE = ["server-bridge", GW, "255.255.255.0", "198.18.40.100", "198.18.40.150"]


def _server_lines() -> list[str]:
    return ["dev tap", "proto udp", "local 0.0.0.0", "port 1194", "ca ca.crt",
            "cert server.crt", "key server.key", "dh none", " ".join(BRIDGE),
            "keepalive 2 20", "remote-cert-tls client", "verb 4"]


def _pushed(client: OpenVpnProcess) -> list[str]:
    match = re.search(r"PUSH: Received control message: 'PUSH_REPLY,([^']*)'", client.text())
    assert match is not None, client.text()[-3000:]
    return [o for o in match.group(1).split(",")
            if o.split()[0] in ("ifconfig", "route-gateway", "route", "topology")]


def _client(lab: NetnsLab, srv: Netns, net: int, tmp_path: Path, name: str
            ) -> tuple[Netns, OpenVpnProcess]:
    cli = lab.add("cli")
    lab.veth(srv, cli, f"198.18.{net}.1/24", f"198.18.{net}.2/24")
    return cli, start_openvpn(cli, tmp_path, name, client_lines(
        server_ip=f"198.18.{net}.1", dev="tap", extra=["verb 4"]))


@pytest.mark.directive("server-bridge")
def test_server_bridge_gives_pool_addresses_and_the_bridge_gateway_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    ours_ns, theirs_ns = lab.add("srv"), lab.add("srv")
    ours = start_trivpn(ours_ns, tmp_path, "trivpn-server", _server_lines())
    theirs = start_openvpn(theirs_ns, tmp_path, "openvpn-server", _server_lines())
    assert ours.wait_event("link_open", timeout=10), ours.text()
    assert theirs.wait_for("Initialization Sequence Completed", 15), theirs.text()[-3000:]
    # the operator's bridge: GW on br0, the server's tap in it, no address on the tap itself
    tap = tap_name(ours_ns)
    assert "inet " not in ours_ns.run(["ip", "-o", "addr", "show", "dev", tap]).stdout
    ours_ns.ip("link", "add", "br0", "type", "bridge")
    ours_ns.add_address("br0", f"{GW}/24")
    ours_ns.ip("link", "set", tap, "master", "br0")
    ours_ns.ip("link", "set", "br0", "up")

    cli, to_ours = _client(lab, ours_ns, 41, tmp_path, "to-trivpn")
    _, to_theirs = _client(lab, theirs_ns, 42, tmp_path, "to-openvpn")
    for client in (to_ours, to_theirs):
        assert client.wait_for("Initialization Sequence Completed", 20), \
            client.text()[-3000:] + ours.text()[-2000:]
    assert _pushed(to_theirs) == ["route-gateway 198.18.40.1",
                                  "ifconfig 198.18.40.100 255.255.255.0"]
    assert _pushed(to_ours) == _pushed(to_theirs)
    assert ping(cli, GW), to_ours.text()[-2000:] + ours.text()[-2000:]
