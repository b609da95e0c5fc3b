"""Operator tools on a real ``trivpn run`` server with real ``openvpn`` 2.6 clients.

Namespaces: ``srv`` (198.18.0.1) runs the trivpn server with a status file, the management
interface on 127.0.0.1 and the metrics endpoint on 127.0.0.1 (loopback of ``srv`` only);
``cli`` (198.18.0.2) runs two openvpn clients. The status file is read with a reader of
OpenVPN's format, management commands are answered as documented, ``kill`` makes the client
restart, and the metrics counters move when a ping crosses the tunnel. A second test compares
the status file layout with one written by a real openvpn server.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from tests.runtime.test_metrics import parse
from tests.runtime.test_status import read_v23
from trivpn.runtime.status import ClientRow, ServerStatus, server_status_lines

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
MGMT_PORT, METRICS_PORT = 7505, 9176




def connect_in(ns: Netns, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` inside ``ns`` (retried until it listens)."""
    deadline = time.monotonic() + timeout
    while True:
        with ns.enter():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Management:
    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rwb")

    def line(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def command(self, text: str) -> None:
        self.file.write(text.encode() + b"\n")
        self.file.flush()

    def until_end(self) -> list[str]:
        lines = []
        while (line := self.line()) != "END":
            lines.append(line)
        return lines


def start_server_with_metrics(ns: Netns, workdir: Path, lines: list[str]) -> TrivpnProcess:
    """Like :func:`start_trivpn`, with ``--metrics-listen 127.0.0.1:METRICS_PORT``."""
    conf = workdir / "server.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "server.log"
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     "--log-file", str(log), "--metrics-listen", f"127.0.0.1:{METRICS_PORT}"])
    return TrivpnProcess(log, proc.pid)


def scrape(ns: Netns) -> dict[str, float]:
    sock = connect_in(ns, METRICS_PORT)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"version=0.0.4" in head
    return parse(body.decode())[2]


@pytest.mark.directive("status", "status-version", "management")
def test_status_management_and_metrics_on_a_running_server(lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    issue_client(pki, "client2")
    status = tmp_path / "status.log"
    server = start_server_with_metrics(srv, tmp_path, server_lines(
        link_ip=SERVER_IP, extra=[f"status {status} 1", "status-version 2",
                                  f"management 127.0.0.1 {MGMT_PORT}"]))
    assert server.wait_event("metrics_listening", timeout=10), server.text()
    clients = {}
    for name, cert in (("c1", "client"), ("c2", "client2")):
        clients[name] = start_openvpn(cli, tmp_path, name, client_lines(
            server_ip=SERVER_IP, cert=cert))
    for c in clients.values():
        assert c.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert server.wait_event("peer_connected", cn="client2", timeout=5), server.text()
    assert ping(cli, SERVER_VPN_IP)

    # status file, read as OpenVPN's version 2 format
    time.sleep(1.5)
    records = read_v23(status.read_text(), ",")
    rows = {r["Common Name"]: r for r in records["CLIENT_LIST"]}
    assert set(rows) == {"client1", "client2"}
    for r in rows.values():
        assert r["Real Address"].startswith(f"{CLIENT_IP}:")
        assert r["Virtual Address"].startswith("198.18.8.")
        assert int(r["Bytes Received"]) > 0 and int(r["Bytes Sent"]) > 0
        assert r["Data Channel Cipher"] == "AES-256-GCM"
    assert {r["Common Name"] for r in records["ROUTING_TABLE"]} == {"client1", "client2"}

    # metrics: present, and moving with traffic
    before = scrape(srv)
    assert before["trivpn_connected_clients"] == 2
    assert before["trivpn_handshakes_total"] >= 2
    assert ping(cli, SERVER_VPN_IP, count=3)
    after = scrape(srv)
    for key in ('trivpn_link_bytes_total{direction="in"}',
                'trivpn_link_packets_total{direction="out"}'):
        assert after[key] > before[key], key
    assert any(k.startswith('trivpn_peer_link_bytes_total{cn="client1"') for k in after)

    # management
    m = Management(connect_in(srv, MGMT_PORT))
    assert m.line().startswith(">INFO:OpenVPN Management Interface Version 5")
    m.command("status 3")
    lines = m.until_end()
    assert sum(1 for line in lines if line.startswith("CLIENT_LIST\t")) == 2
    m.command("state")
    state = m.until_end()
    assert state[0].split(",")[1:4] == ["CONNECTED", "SUCCESS", SERVER_VPN_IP]
    m.command("kill nobody")
    assert m.line() == "ERROR: common name 'nobody' not found"
    m.command("kill client2")
    assert m.line() == "SUCCESS: common name 'client2' found, 1 client(s) killed"
    assert server.wait_event("peer_disconnected", cn="client2", reason="killed", timeout=5), \
        server.text()[-2000:]
    assert clients["c2"].wait_for("SIGUSR1", timeout=10), clients["c2"].text()[-2000:]
    m.command("quit")


def test_status_layout_matches_a_real_openvpn_server(lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    status = tmp_path / "ovpn-status.log"
    server = start_openvpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, extra=[f"status {status} 1", "status-version 2"]))
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        theirs = status.read_text() if status.exists() else ""
        if "CLIENT_LIST,client1" in theirs and "ROUTING_TABLE,198.18.8" in theirs:
            break
        time.sleep(0.2)
    row = ClientRow("client1", f"{CLIENT_IP}:40000", "198.18.8.2", 1, 2, 0, 0, 0,
                    "AES-256-GCM", 0)
    ours = "\n".join(server_status_lines(ServerStatus((row,), (("198.18.8.2", row),)), 2,
                                         time.time()))

    def layout(text: str) -> list[tuple[str, ...]]:
        """Record kinds with column counts; HEADER and GLOBAL_STATS records in full."""
        out = []
        for line in text.splitlines():
            fields = line.split(",")
            if fields[0] in ("HEADER", "GLOBAL_STATS", "END"):
                out.append(tuple(fields))
            else:
                out.append((fields[0], str(len(fields))))
        return out

    assert layout(ours) == layout(theirs), (ours, theirs)
    mine, real = read_v23(ours, ","), read_v23(theirs, ",")
    assert mine["CLIENT_LIST"][0].keys() == real["CLIENT_LIST"][0].keys()
    assert real["CLIENT_LIST"][0]["Data Channel Cipher"] == "AES-256-GCM"


def test_client_management_state_bytecount_and_statistics(lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip=SERVER_IP))
    sock_path = tmp_path / "client.sock"
    status = tmp_path / "client-status.log"
    client = start_trivpn(cli, tmp_path, "client", client_lines(
        server_ip=SERVER_IP, extra=[f"management {sock_path} unix", f"status {status} 1"]))
    assert client.wait_event("tun_configured", timeout=20), (client.text(), server.text())
    assert ping(cli, SERVER_VPN_IP)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(sock_path))
    m = Management(sock)
    assert m.line().startswith(">INFO:OpenVPN Management Interface Version 5")
    m.command("state")
    fields = m.until_end()[0].split(",")
    assert fields[1:6] == ["CONNECTED", "SUCCESS", fields[3], SERVER_IP, "1194"]
    assert fields[3].startswith("198.18.8.")
    m.command("bytecount 1")
    assert m.line() == "SUCCESS: bytecount interval changed"
    counts = m.line()
    assert counts.startswith(">BYTECOUNT:")
    received, sent = (int(n) for n in counts[len(">BYTECOUNT:"):].split(","))
    assert received > 0 and sent > 0
    m.command("kill client1")
    line = m.line()
    while line.startswith(">BYTECOUNT:"):
        line = m.line()
    assert line == "ERROR: The 'kill' command is not supported by the current daemon mode"
    m.command("status")
    lines = m.until_end()
    while lines[0].startswith(">BYTECOUNT:"):
        lines.pop(0)
    assert lines[0] == "OpenVPN STATISTICS"
    m.command("quit")
    time.sleep(1.2)
    values = dict(line.split(",", 1) for line in status.read_text().splitlines()[1:-1])
    assert int(values["TUN/TAP read bytes"]) > 0
    assert int(values["TCP/UDP write bytes"]) > int(values["TUN/TAP read bytes"])
