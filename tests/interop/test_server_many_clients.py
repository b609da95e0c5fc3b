"""Many clients on one ``trivpn run`` server: real openvpn clients and trivpn clients mixed.

Layout: a ``lan`` namespace holds a bridge; the server namespace (198.18.0.1/16) and every
client namespace (198.18.1.N/16) hang off it by a veth. The server runs ``topology subnet``
with ``client-to-client``; each client gets its own certificate (common name ``cN``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import (
    SERVER_VPN_IP,
    client_lines,
    issue_client,
    server_lines,
)
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.0.1"
OPENVPN_CLIENTS = 14
TRIVPN_CLIENTS = 8




def _attach(lan: Netns, ns: Netns, index: int, cidr: str) -> None:
    """Plug ``ns`` into the lan bridge as ``eth0`` with ``cidr``."""
    port = f"p{index}"
    lan.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
    lan.ip("link", "set", port, "master", "br0", "up")
    ns.add_address("eth0", cidr)
    ns.ip("link", "set", "eth0", "up")


def _ping_all(pairs: list[tuple[Netns, str]], timeout: float = 20.0) -> list[str]:
    """Ping every (namespace, destination) in parallel, retrying; returns the failures."""
    pending = list(pairs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        procs = [(ns, dst, subprocess.Popen(
            ["ip", "netns", "exec", ns.name, "ping", "-c", "1", "-W", "2", dst],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) for ns, dst in pending]
        pending = [(ns, dst) for ns, dst, proc in procs if proc.wait(timeout=10) != 0]
    return [f"{ns.name} -> {dst}" for ns, dst in pending]


def _connected(server: TrivpnProcess, count: int, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = {e["cn"]: e["vpn_ip"] for e in server.events()
                 if e.get("event") == "peer_connected"}
        if len(found) >= count:
            break
        time.sleep(0.2)
    return found


@pytest.mark.directive("client-to-client", "topology")
def test_twenty_two_mixed_clients_reach_the_server_and_each_other(lab: NetnsLab,
                                                                  tmp_path: Path):
    lan = lab.add("lan")
    lan.ip("link", "add", "br0", "type", "bridge")
    lan.ip("link", "set", "br0", "up")
    srv = lab.add("srv")
    _attach(lan, srv, 0, f"{SERVER_IP}/16")
    pki = write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, topology="subnet", extra=["client-to-client"]))
    assert server.wait_event("link_open", timeout=10), server.text()

    clients: dict[str, Netns] = {}
    total = OPENVPN_CLIENTS + TRIVPN_CLIENTS
    for i in range(1, total + 1):
        name = issue_client(pki, f"c{i}")
        ns = lab.add("c")
        _attach(lan, ns, i, f"198.18.1.{i}/16")
        lines = client_lines(server_ip=SERVER_IP, cert=name)
        if i <= OPENVPN_CLIENTS:
            start_openvpn(ns, tmp_path, name, lines)
        else:
            start_trivpn(ns, tmp_path, name, lines)
        clients[name] = ns

    vpn_ips = _connected(server, total, timeout=60)
    assert len(vpn_ips) == total, (sorted(vpn_ips), server.text()[-3000:])
    assert len(set(vpn_ips.values())) == total  # every client got its own address

    failures = _ping_all([(ns, SERVER_VPN_IP) for ns in clients.values()])
    assert not failures, failures
    names = sorted(clients, key=lambda n: int(n[1:]))
    # client-to-client samples: openvpn<->openvpn, openvpn<->trivpn, trivpn<->trivpn
    pairs = [(names[0], names[1]), (names[2], names[-1]), (names[-2], names[3]),
             (names[-3], names[-4]), (names[5], names[11])]
    failures = _ping_all([(clients[a], vpn_ips[b]) for a, b in pairs])
    assert not failures, (failures, server.text()[-3000:])
    assert server.count("peer_disconnected") == 0, server.text()[-3000:]
