"""``dev tap`` on the ``trivpn run`` server with the ``server`` helper: an openvpn tap client
and a trivpn tap client resolve each other and the server with ARP and ping.

Layout: ``srv`` (198.18.0.1) with a veth each to ``ova`` (198.18.0.2, openvpn) and ``tva``
(198.18.2.2 on a second link, trivpn). ``client-to-client`` lets the two clients reach each
other through the server's MAC learning.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]




def _neighbour_mac(ns: Netns, ip: str) -> str | None:
    """The MAC the kernel in ``ns`` resolved ``ip`` to (``ip neigh``), or None."""
    for line in ns.run(["ip", "neigh", "show", ip]).stdout.splitlines():
        fields = line.split()
        if "lladdr" in fields:
            return fields[fields.index("lladdr") + 1]
    return None


def _link_mac(ns: Netns, ifname_prefix: str) -> str:
    for line in ns.run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith(ifname_prefix):
            return line.split("link/ether")[1].split()[0]
    raise AssertionError(f"no {ifname_prefix}* device in {ns.name}")


@pytest.mark.directive("dev", "client-to-client")
def test_tap_clients_arp_and_ping_the_server_and_each_other(lab: NetnsLab, tmp_path: Path):
    srv, ova, tva = lab.add("srv"), lab.add("ova"), lab.add("tva")
    lab.veth(srv, ova, "198.18.0.1/24", "198.18.0.2/24")
    lab.veth(srv, tva, "198.18.2.1/24", "198.18.2.2/24")
    pki = write_pki(tmp_path)
    issue_client(pki, "tapclient2")
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", dev="tap", extra=["client-to-client"]))
    assert server.wait_event("link_open", timeout=10), server.text()

    openvpn = start_openvpn(ova, tmp_path, "ovpn", client_lines(server_ip="198.18.0.1",
                                                                dev="tap"))
    start_trivpn(tva, tmp_path, "tclient", client_lines(server_ip="198.18.2.1", dev="tap",
                                                        cert="tapclient2"))
    first = server.wait_event("peer_connected", timeout=20, cn="client1")
    second = server.wait_event("peer_connected", timeout=20, cn="tapclient2")
    assert first is not None and second is not None, (server.text()[-3000:],
                                                      openvpn.text()[-2000:])
    assert openvpn.wait_for("Initialization Sequence Completed", timeout=10)

    for ns in (ova, tva):
        assert ping(ns, SERVER_VPN_IP), server.text()[-3000:]
    assert ping(srv, first["vpn_ip"]) and ping(srv, second["vpn_ip"])
    # ARP crossed the tunnel: the server's kernel knows each client's tap MAC.
    assert _neighbour_mac(srv, first["vpn_ip"]) == _link_mac(ova, "tap")
    assert _neighbour_mac(srv, second["vpn_ip"]) == _link_mac(tva, "tap")
    # client-to-client at layer 2: ARP broadcast flooded, unicast by learned MAC.
    assert ping(ova, second["vpn_ip"]), server.text()[-3000:]
    assert ping(tva, first["vpn_ip"]), server.text()[-3000:]
    assert _neighbour_mac(ova, second["vpn_ip"]) == _link_mac(tva, "tap")
