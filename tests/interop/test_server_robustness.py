"""Hostile datagrams at the ``trivpn run`` server's UDP socket while a tunnel is up.

An openvpn client in ``cli`` (198.18.0.2) keeps a tunnel to the server in ``srv`` (198.18.0.1).
From the same namespace the test then sends garbage, truncated copies of the client's real data
packets, verbatim replays of them (from the client's own address and port via a raw socket, and
from other ports), a flood of client hard resets from hundreds of ports, and a CONTROL_V1
with a forged cookie. Everything must be dropped and counted in aggregated ``packet_dropped``
lines, no peer may be created or moved, and the tunnel must keep working.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control, encode_control

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003  # outgoing packets reach only ETH_P_ALL taps
RESET_FLOOD = 300




def _capture_data_packets(ns: Netns, ifname: str, want: int,
                          timeout: float = 10.0) -> tuple[int, list[bytes]]:
    """Sniff the client's P_DATA_V2 datagrams to the server: (client port, payloads)."""
    with ns.enter():
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sniffer.bind((ifname, ETH_P_ALL))
    sniffer.settimeout(0.5)
    pinger = ns.spawn(["ping", "-c", "40", "-i", "0.1", SERVER_VPN_IP])
    found: list[bytes] = []
    port = 0
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            try:
                packet, where = sniffer.recvfrom(65535)
            except TimeoutError:
                continue
            if where[1] != ETH_P_IP or len(packet) < 28:
                continue
            ihl = (packet[0] & 0x0F) * 4
            if packet[9] != socket.IPPROTO_UDP or packet[16:20] != socket.inet_aton(SERVER_IP):
                continue
            sport, dport = struct.unpack_from("!HH", packet, ihl)
            payload = packet[ihl + 8:]
            if dport == 1194 and payload and payload[0] >> 3 == Opcode.DATA_V2:
                port = sport
                found.append(payload)
    finally:
        sniffer.close()
        pinger.wait(timeout=10)
    return port, found


def _send_from_client_port(ns: Netns, port: int, payloads: list[bytes]) -> None:
    """Replay datagrams with the real client's source address and port (raw socket)."""
    with ns.enter():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    with raw:
        for payload in payloads:
            header = struct.pack("!HHHH", port, 1194, 8 + len(payload), 0)  # no UDP checksum
            raw.sendto(header + payload, (SERVER_IP, 0))


def _udp_socket(ns: Netns) -> socket.socket:
    with ns.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CLIENT_IP, 0))
    return sock


def _drop_reasons(server: TrivpnProcess) -> dict[str, int]:
    totals: dict[str, int] = {}
    for event in server.events():
        if event.get("event") == "packet_dropped":
            totals[event["reason"]] = event["total"]
    return totals


def test_garbage_truncated_replayed_and_reset_floods_are_dropped_and_counted(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    veth = lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip=SERVER_IP))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()
    assert ping(cli, SERVER_VPN_IP)

    port, captured = _capture_data_packets(cli, veth.b_ifname, want=10)
    assert port and len(captured) >= 5

    rng = random.Random(1194)
    attacker = _udp_socket(cli)
    for _ in range(200):  # garbage of every size, every first byte
        attacker.sendto(os.urandom(rng.randrange(1, 300)), (SERVER_IP, 1194))
    for data in captured:  # truncated copies and verbatim replays from another port
        attacker.sendto(data[:rng.randrange(1, len(data))], (SERVER_IP, 1194))
        attacker.sendto(data, (SERVER_IP, 1194))
    _send_from_client_port(cli, port, captured)  # replays from the client's own address
    _send_from_client_port(cli, port, [d[:rng.randrange(1, len(d))] for d in captured])
    forged = ControlPacket(Opcode.CONTROL_V1, 0, os.urandom(8), acks=(0,),
                           remote_session_id=os.urandom(8), message_id=1, payload=b"\x16\x03")
    attacker.sendto(encode_control(forged), (SERVER_IP, 1194))
    attacker.close()
    for _ in range(RESET_FLOOD):  # every reset from a new port, never completing the cookie
        sock = _udp_socket(cli)
        reset = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, os.urandom(8),
                              message_id=0)
        sock.sendto(encode_control(reset), (SERVER_IP, 1194))
        sock.close()

    wanted = {"replay", "reset_rate_limited", "bad_cookie", "unknown_peer"}
    deadline = time.monotonic() + 15
    while not wanted <= _drop_reasons(server).keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    reasons = _drop_reasons(server)
    assert wanted <= reasons.keys(), (reasons, server.text()[-3000:])
    assert reasons["replay"] >= len(captured)
    assert reasons["reset_rate_limited"] >= RESET_FLOOD // 2  # 100 per 10 s window

    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]
    assert server.count("peer_connected") == 1
    assert server.count("tls_handshake_started") == 1  # the flood created no session
    assert server.count("peer_disconnected") == 0
    assert server.count("peer_floated") == 0  # replays from elsewhere did not move the peer
    # aggregated: a handful of lines, not one per packet
    assert server.count("packet_dropped") < 40


def test_session_that_never_authenticates_is_removed_after_hand_window(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, extra=["hand-window 2"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    sock = _udp_socket(cli)
    sock.settimeout(5)
    client_sid = os.urandom(8)
    sock.sendto(encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, client_sid,
                                             message_id=0)), (SERVER_IP, 1194))
    reply = decode_control(sock.recv(2048))
    assert reply.opcode == Opcode.CONTROL_HARD_RESET_SERVER_V2 and reply.acks == (0,)
    assert server.count("tls_handshake_started") == 0  # the reset alone left no state
    # Ack the server's reset with its cookie session id: now a session exists, then silence.
    sock.sendto(encode_control(ControlPacket(Opcode.ACK_V1, 0, client_sid, acks=(0,),
                                             remote_session_id=reply.session_id)),
                (SERVER_IP, 1194))
    sock.close()
    gone = server.wait_event("peer_disconnected", timeout=10)
    assert gone is not None and gone["reason"] == "handshake_failed", server.text()[-3000:]
    assert gone["was_connected"] is False
    failed = server.wait_event("handshake_failed")
    assert failed is not None and failed["cause"] == "timeout"
