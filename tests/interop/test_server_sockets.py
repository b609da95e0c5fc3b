"""Server sockets with real openvpn 2.6 clients: ``multihome`` (UDP replies from the address
the client sent to), one ``local`` (the last one counts, as in OpenVPN 2.6) and
``port-share`` (one TCP port for OpenVPN clients and a web server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
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


# A TCP service standing in for a server that reads the port-share journal: it answers each
# connection with the journal file named after its peer (the relay's local ip:port).
JOURNAL_READER = r"""
import socket, sys, pathlib
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(8)
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    conn.recv(100)
    path = pathlib.Path(sys.argv[3]) / f"{peer[0]}:{peer[1]}"
    conn.sendall(path.read_bytes() if path.exists() else b"no journal")
    conn.close()
"""


def _wait_port(ns: Netns, host: str, port: int) -> None:
    probe = (f"import socket,time\nfor _ in range(50):\n    try:\n"
             f"        socket.create_connection(('{host}', {port}), 1).close(); break\n"
             f"    except OSError: time.sleep(0.1)\n")
    ns.run(["python3", "-c", probe], timeout=10)


def _port_share_server(lab: NetnsLab, tmp_path: Path, backend_port: int,
                       share: str) -> tuple[Netns, Netns, TrivpnProcess]:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.30.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, proto="tcp-server",
        extra=[f"port-share {SERVER_IP} {backend_port}{share}"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    return srv, cli, server


@pytest.mark.directive("port-share")
def test_port_share_serves_a_web_server_and_openvpn_clients_on_one_tcp_port(
        lab: NetnsLab, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>shared port</h1>\n")
    srv, cli, server = _port_share_server(lab, tmp_path, 8080, "")
    srv.spawn(["python3", "-m", "http.server", "8080", "--bind", SERVER_IP,
               "--directory", str(site)])
    _wait_port(srv, SERVER_IP, 8080)

    page = cli.run(["curl", "-sS", "--max-time", "5", "-A",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "-H",
                    "Accept: text/html,application/xhtml+xml", f"http://{SERVER_IP}:1194/"],
                   timeout=10)
    assert page.stdout == "<h1>shared port</h1>\n"

    client = start_openvpn(cli, tmp_path, "client",
                           client_lines(server_ip=SERVER_IP, proto="tcp-server"))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        client.text()[-2000:] + server.text()[-2000:]
    assert ping(cli, SERVER_VPN_IP)
    assert server.count("port_share_proxied") == 1  # the browser, not the openvpn client


@pytest.mark.directive("port-share")
def test_port_share_journal_tells_the_shared_server_the_real_client_address(
        lab: NetnsLab, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    srv, cli, _ = _port_share_server(lab, tmp_path, 8081, f" {journal}")
    srv.spawn(["python3", "-c", JOURNAL_READER, SERVER_IP, "8081", str(journal)])
    _wait_port(srv, SERVER_IP, 8081)

    probe = (f"import socket\ns = socket.create_connection(('{SERVER_IP}', 1194), 5)\n"
             "s.sendall(b'HEAD / HTTP/1.0\\r\\n\\r\\n')\n"
             "print(s.getsockname()[0], s.getsockname()[1], s.recv(100).decode())\n")
    host, port, origin = cli.run(["python3", "-c", probe], timeout=10).stdout.split()
    assert origin == f"{host}:{port}"
    deadline = time.monotonic() + 5
    while list(journal.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(journal.iterdir()) == []  # removed once the connection closed
