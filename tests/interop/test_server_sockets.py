"""Server sockets with real openvpn 2.6 clients: ``multihome`` (UDP replies from the address
the client sent to), one ``local`` (the last one counts, as in OpenVPN 2.6) and
``port-share`` (one TCP port for OpenVPN clients and a web server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.30.1"
OTHER_IP = "198.18.30.9"  # the server's second address, the routing table's source


def _two_address_server(lab: NetnsLab) -> tuple[Netns, Netns]:
    """A server with two addresses on one link whose route prefers OTHER_IP as the source,
    as in the doctor's multi-homed scenario (tests/diagnostics/test_scenarios.py)."""
    srv, cli = lab.add("srv"), lab.add("cli")
    ifname = lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.30.2/24").a_ifname
    srv.add_address(ifname, f"{OTHER_IP}/24")
    srv.ip("route", "replace", "198.18.30.0/24", "dev", ifname, "src", OTHER_IP)
    return srv, cli


@pytest.mark.directive("multihome")
def test_multihome_server_answers_a_client_from_the_address_it_connected_to(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = _two_address_server(lab)
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server",
                          server_lines(link_ip="0.0.0.0", extra=["multihome"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        client.text()[-2000:] + server.text()[-2000:]
    assert ping(cli, SERVER_VPN_IP)


def test_without_multihome_the_reply_leaves_from_the_other_address_and_openvpn_drops_it(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = _two_address_server(lab)
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0"))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for(f"Incoming packet rejected from [AF_INET]{OTHER_IP}:1194",
                           timeout=10), client.text()[-2000:]
    assert "Initialization Sequence Completed" not in client.text()
