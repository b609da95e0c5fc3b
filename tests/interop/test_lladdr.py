"""lladdr: a trivpn tap client's device gets the configured MAC address, which the server
then learns through ARP across the tunnel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.test_server_tap import _link_mac, _neighbour_mac
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

MAC = "02:00:5e:10:00:42"


@pytest.mark.directive("lladdr")
def test_lladdr_sets_the_tap_devices_mac_address(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, "198.18.0.1/24", "198.18.0.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", dev="tap"))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_trivpn(cli, tmp_path, "client", client_lines(
        server_ip="198.18.0.1", dev="tap", extra=["lladdr 2:0:5E:10:0:42"]))
    peer = server.wait_event("peer_connected", timeout=20)
    assert peer is not None, server.text()[-3000:]
    assert client.wait_event("tun_configured", timeout=10), client.text()[-3000:]
    assert _link_mac(cli, "tap") == MAC
    assert ping(cli, SERVER_VPN_IP)
    assert _neighbour_mac(srv, peer["vpn_ip"]) == MAC
