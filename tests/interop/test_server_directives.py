"""Server directives on a running ``trivpn run`` server with real openvpn 2.6 clients:
duplicate-cn, and the timers that drop a client (session-timeout, inactive)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.clientkit import wait_until
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def _server_and_clients(lab: NetnsLab, tmp_path: Path, extra: list[str], clients: int
                        ) -> tuple[TrivpnProcess, list[Netns]]:
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(clients)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0",
                                                                extra=extra))
    assert server.wait_event("link_open", timeout=10), server.text()
    return server, spokes


def _connected(server: TrivpnProcess) -> list[dict[str, object]]:
    return [e for e in server.events() if e.get("event") == "peer_connected"]


def _disconnects(server: TrivpnProcess) -> list[dict[str, object]]:
    return [e for e in server.events() if e.get("event") == "peer_disconnected"]


@pytest.mark.directive("duplicate-cn")
def test_duplicate_cn_lets_two_clients_with_one_certificate_stay_connected(
        lab: NetnsLab, tmp_path: Path) -> None:
    server, spokes = _server_and_clients(lab, tmp_path, ["duplicate-cn"], 2)
    procs = [start_openvpn(ns, tmp_path, f"client{i}", client_lines(
        server_ip=f"198.18.{10 + i}.1")) for i, ns in enumerate(spokes)]
    for proc in procs:
        assert proc.wait_for("Initialization Sequence Completed", timeout=20), \
            server.text()[-3000:]
    assert wait_until(lambda: len(_connected(server)) == 2), server.text()[-3000:]
    connected = _connected(server)
    assert {e["cn"] for e in connected} == {"client1"}
    assert len({e["vpn_ip"] for e in connected}) == 2  # each its own address
    assert all(ping(ns, SERVER_VPN_IP) for ns in spokes)
    assert _disconnects(server) == []  # without duplicate-cn the first one is replaced


@pytest.mark.directive("session-timeout", "inactive")
@pytest.mark.parametrize(("directive", "reason"), [("session-timeout 3", "session_timeout"),
                                                   ("inactive 3", "inactive")])
def test_server_drops_a_client_when_its_session_timer_runs_out(
        lab: NetnsLab, tmp_path: Path, directive: str, reason: str) -> None:
    server, (ns,) = _server_and_clients(lab, tmp_path, [directive], 1)
    client = start_openvpn(ns, tmp_path, "client0", client_lines(server_ip="198.18.10.1"))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    connected_at = time.monotonic()
    assert wait_until(lambda: bool(_disconnects(server)), timeout=10), server.text()[-3000:]
    gone = _disconnects(server)[0]
    assert gone["reason"] == reason and gone["cn"] == "client1", gone
    assert server.wait_event(reason, 1) is not None
    assert time.monotonic() - connected_at <= 6
