"""TAP MAC learning on a server, trivpn beside a real openvpn 2.6 server: how many MACs one
client may own (``max-routes-per-client``) and what happens when a client sends from a MAC that
another connected client owns.

Layout: ``srv`` (198.18.0.1 towards ``cla``, 198.18.2.1 towards ``clb``) runs the server
(``dev tap``, ``max-routes-per-client 2``); ``cla`` and ``clb`` run openvpn tap clients
(``client1``, ``client2``). Client B then writes raw Ethernet frames onto its tap device (an
AF_PACKET socket inside its namespace), with A's MAC and with new MACs as source.

- openvpn moves A's MAC to B (``MULTI: Learn: <mac>@0 -> client2/…``; A's MAC now counts
  against B's quota) and refuses B's MACs beyond two (``route quota (2) exceeded``);
- trivpn refuses both (``mac_refused``, counted as dropped) and A stays reachable.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

NEW_MACS = ("02:00:5e:10:00:01", "02:00:5e:10:00:02")


def tap_device(ns: Netns) -> tuple[str, str]:
    """(name, MAC) of the tap device in ``ns``."""
    for line in ns.run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith("tap"):
            return name, line.split("link/ether")[1].split()[0]
    raise AssertionError(f"no tap device in {ns.name}")


def send_frames_from(ns: Netns, ifname: str, mac: str, count: int = 3) -> None:
    """Broadcast frames (local experimental ethertype) with source ``mac`` out of ``ifname``."""
    frame = b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) + b"\x88\xb5" + b"trivpn" * 8
    with ns.enter():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with sock:
        sock.bind((ifname, 0))
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.05)


@pytest.mark.directive("max-routes-per-client")
@pytest.mark.parametrize("server_kind", ["trivpn", "openvpn"])
def test_mac_takeover_and_mac_quota(lab: NetnsLab, tmp_path: Path, server_kind: str):
    srv, cla, clb = lab.add("srv"), lab.add("cla"), lab.add("clb")
    lab.veth(srv, cla, "198.18.0.1/24", "198.18.0.2/24")
    lab.veth(srv, clb, "198.18.2.1/24", "198.18.2.2/24")
    pki = write_pki(tmp_path)
    issue_client(pki, "client2")
    lines = server_lines(link_ip="0.0.0.0", dev="tap", extra=["max-routes-per-client 2"])
    server: TrivpnProcess | OpenVpnProcess
    if server_kind == "trivpn":
        server = start_trivpn(srv, tmp_path, "server", lines)
        assert server.wait_event("link_open", timeout=10), server.text()
    else:
        server = start_openvpn(srv, tmp_path, "server", lines)
        assert server.wait_for("Initialization Sequence Completed", timeout=15), server.text()
    a = start_openvpn(cla, tmp_path, "a", client_lines(server_ip="198.18.0.1", dev="tap"))
    b = start_openvpn(clb, tmp_path, "b", client_lines(server_ip="198.18.2.1", dev="tap",
                                                       cert="client2"))
    for c in (a, b):
        assert c.wait_for("Initialization Sequence Completed", timeout=20), c.text()[-2000:]
    assert ping(cla, SERVER_VPN_IP) and ping(clb, SERVER_VPN_IP)  # each owns its own MAC
    _, a_mac = tap_device(cla)
    b_tap, _ = tap_device(clb)

    send_frames_from(clb, b_tap, a_mac)  # B claims A's MAC
    for mac in NEW_MACS:  # B's second MAC fits the quota of 2, the third does not
        send_frames_from(clb, b_tap, mac)

    if isinstance(server, OpenVpnProcess):
        assert server.wait_for(f"MULTI: Learn: {a_mac}@0 -> client2/", timeout=5), \
            server.text()[-3000:]
        assert server.wait_for("route quota (2) exceeded for client2/", timeout=5), \
            server.text()[-3000:]
        return
    taken = server.wait_event("mac_refused", timeout=5, reason="mac_owned_by_other_client")
    assert taken is not None and (taken["cn"], taken["owner"], taken["mac"]) == (
        "client2", "client1", a_mac), server.text()[-3000:]
    quota = server.wait_event("mac_refused", timeout=5, reason="max_routes_per_client")
    assert quota is not None and (quota["cn"], quota["mac"], quota["limit"]) == (
        "client2", NEW_MACS[1], 2), server.text()[-3000:]
    assert ping(cla, SERVER_VPN_IP), server.text()[-3000:]  # A's MAC still routes to A
