"""Peer lifecycle on the ``trivpn run`` server with real openvpn clients: float, client restart,
duplicate common names, max-clients, and explicit-exit-notify at shutdown."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.interop.clientkit import wait_until
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.0.1"




def _disconnects(server: TrivpnProcess) -> list[dict[str, object]]:
    return [e for e in server.events() if e.get("event") == "peer_disconnected"]


def test_client_floats_to_a_new_address_then_restarts_in_place(lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    veth = lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.0.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip=SERVER_IP))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP,
                                                                 lport=40001))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()
    assert ping(cli, SERVER_VPN_IP)

    # The client's packets now leave from a second address: P_DATA_V2 with its peer-id.
    cli.add_address(veth.b_ifname, "198.18.0.3/24")
    cli.ip("route", "replace", f"{SERVER_IP}/32", "dev", veth.b_ifname, "src", "198.18.0.3")
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]
    floated = server.wait_event("peer_floated", timeout=10)
    assert floated is not None and floated["peer"] == "198.18.0.3:40001", server.text()

    # SIGUSR1: same address and port, new session id -> the old peer is replaced.
    os.kill(client.pid, signal.SIGUSR1)
    assert wait_until(lambda: server.count("peer_connected") == 2), server.text()[-3000:]
    assert [e["reason"] for e in _disconnects(server)] == ["client_restarted"]
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]


@pytest.mark.directive("explicit-exit-notify")
def test_duplicate_cn_max_clients_restart_notice_and_pool_persist_at_exit(
        lab: NetnsLab, tmp_path: Path):
    lan = lab.add("lan")
    srv = lab.add("srv")
    pki = write_pki(tmp_path)
    clients = [lab.add("c") for _ in range(4)]
    lab.veth(lan, srv, "198.18.0.254/24", f"{SERVER_IP}/24")
    for i, ns in enumerate(clients):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", extra=["max-clients 2", "explicit-exit-notify 1",
                                  "ifconfig-pool-persist ipp.txt 60"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    certs = ["client", "client", issue_client(pki, "third"), issue_client(pki, "fourth")]
    procs = []
    for i, (ns, cert) in enumerate(zip(clients, certs, strict=True)):
        procs.append(start_openvpn(ns, tmp_path, f"client{i}", client_lines(
            server_ip=f"198.18.{10 + i}.1", cert=cert)))
        if i < 3:
            assert procs[-1].wait_for("Initialization Sequence Completed", timeout=20), \
                server.text()[-3000:]
    # The second "client1" replaced the first (no duplicate-cn); the fourth exceeds max-clients.
    assert [e["reason"] for e in _disconnects(server)] == ["duplicate_cn"]
    assert wait_until(lambda: any(
        e.get("event") == "packet_dropped" and e["reason"] == "max_clients"
        for e in server.events())), server.text()[-3000:]
    assert not procs[3].wait_for("Initialization Sequence Completed", timeout=1)
    assert ping(clients[1], SERVER_VPN_IP) and ping(clients[2], SERVER_VPN_IP)

    os.kill(server.pid, signal.SIGTERM)
    assert server.wait_event("exiting", timeout=10), server.text()[-3000:]
    notice = server.wait_event("exit_notify_sent")
    assert notice is not None and notice["clients"] == 2
    process = next(p for p in lab.processes if p.pid == server.pid)
    assert process.wait(timeout=10) == 0
    for proc in procs[1:3]:
        assert proc.wait_for("server-pushed-connection-reset", timeout=5), proc.text()[-2000:]
    # subnet pool: client1 had .2 (kept for its second connection), third got .3
    assert (tmp_path / "ipp.txt").read_text() == "client1,198.18.8.2,\nthird,198.18.8.3,\n"


def test_server_renegotiates_and_drops_a_silent_client_after_ping_restart(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.0.2/24")
    write_pki(tmp_path)
    lines = [line for line in server_lines(link_ip=SERVER_IP) if not line.startswith("keepalive")]
    server = start_trivpn(srv, tmp_path, "server", [*lines, "keepalive 1 2", "reneg-sec 2"])
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()
    assert server.wait_event("renegotiated", timeout=10), server.text()[-3000:]
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]

    os.kill(client.pid, signal.SIGKILL)  # silent from now on: server ping-restart is 2 * 2 s
    gone = server.wait_event("peer_disconnected", timeout=10)
    assert gone is not None and gone["reason"] == "ping_restart", server.text()[-3000:]
    assert server.wait_event("ping_restart") is not None
