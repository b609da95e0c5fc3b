"""The ``trivpn run`` TCP server under a flood of idle and garbage connections.

From the client namespace a helper process (:mod:`tests.interop.tcp_opener`) opens 2,000 idle
TCP connections and then 20,000 garbage openings over 40 source addresses. A real openvpn 2.6
client from yet another address must still connect within 5 s, and the server's memory (RSS)
must stay bounded: idle connections live in the pre-authentication quota (evicted for newer
ones, closed after the first-packet timeout), garbage is closed at its first packet, and none
of it takes a max-clients slot. The same lab then checks what a real openvpn 2.6 TCP server
does with a silent and a garbage connection, which docs/server-admission.md describes.

A UDP variant floods hard resets from many source ports (stateless cookies keep them out of the
quota) and opens more idle sessions from one address than max-clients allows (the per-address
limit holds them to 8): a real client still connects at once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, parse_config
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control, encode_control

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
OTHER_SERVER_IP = "198.18.1.1"
ATTACKERS = [f"198.18.0.{n}" for n in range(10, 50)]
IDLE, GARBAGE = 2_000, 20_000
CONNECT_WITHIN = 5.0
OPENER = Path(__file__).with_name("tcp_opener.py")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _drops(server: TrivpnProcess) -> dict[str, int]:
    totals: dict[str, int] = {}
    for event in server.events():
        if event.get("event") == "packet_dropped":
            totals[event["reason"]] = event["total"]
    return totals


def _lab(lab: NetnsLab, tmp_path: Path) -> tuple[Netns, Netns]:
    srv, cli = lab.add("srv"), lab.add("cli")
    veth = lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    for address in ATTACKERS:
        cli.add_address(veth.b_ifname, f"{address}/24")
    write_pki(tmp_path)
    return srv, cli


def _flood(cli: Netns, *, idle: int, garbage: int, hold: float) -> dict[str, float]:
    opener = cli.spawn([sys.executable, str(OPENER), SERVER_IP, "1194",
                        "--sources", ",".join(ATTACKERS), "--idle", str(idle),
                        "--garbage", str(garbage), "--batch", "64", "--deadline", "40",
                        "--hold", str(hold)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert opener.stdout is not None
    line = opener.stdout.readline()  # the helper's own deadline bounds this wait
    assert line, opener.stderr.read().decode() if opener.stderr else "no output"
    summary: dict[str, float] = json.loads(line)
    return summary


@pytest.mark.directive("proto", "max-clients")
def test_idle_and_garbage_tcp_connections_do_not_lock_out_a_real_openvpn_client(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _lab(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server",
                          server_lines(link_ip=SERVER_IP, proto="tcp-server"))
    assert server.wait_event("link_open", timeout=10), server.text()
    rss_before = _rss_kib(server.pid)

    summary = _flood(cli, idle=IDLE, garbage=GARBAGE, hold=20)
    assert summary["idle"] == IDLE and summary["garbage"] == GARBAGE, summary
    # the quota (256 for the default max-clients 1024) holds few of the idle connections
    assert summary["idle_still_open"] <= 256, summary

    started = time.monotonic()
    client = start_openvpn(cli, tmp_path, "client",
                           client_lines(server_ip=SERVER_IP, proto="tcp"))
    assert client.wait_for("Initialization Sequence Completed", timeout=CONNECT_WITHIN), \
        (client.text()[-2000:], server.text()[-3000:])
    connect_seconds = time.monotonic() - started
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]
    rss_after = _rss_kib(server.pid)
    print(f"\nserver RSS before {rss_before} KiB, after {rss_after} KiB "
          f"(+{rss_after - rss_before} KiB); flood {summary}; "
          f"openvpn client connected in {connect_seconds:.2f} s")
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)

    deadline = time.monotonic() + 10
    wanted = {"tcp_bad_first_packet", "preauth_evicted"}
    while not wanted <= _drops(server).keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    drops = _drops(server)
    assert wanted <= drops.keys(), drops
    assert server.count("peer_connected") == 1
    assert server.count("tls_handshake_started") == 1  # no flood connection got that far


def _silent_and_garbage_connections(ns: Netns, server_ip: str) -> tuple[float, bool]:
    """(seconds until the server closes a silent connection, whether it closed a connection
    whose first packet is garbage within 1 s)."""
    with ns.enter():
        silent = socket.create_connection((server_ip, 1194), timeout=30)
        garbage = socket.create_connection((server_ip, 1194), timeout=1)
    start = time.monotonic()
    garbage.sendall(b"\x00\x20" + bytes(range(32)))
    try:
        closed_at_once = garbage.recv(100) == b""
    except (TimeoutError, ConnectionResetError):
        closed_at_once = False
    garbage.close()
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        silent.recv(100)
    seconds = time.monotonic() - start
    silent.close()
    return seconds, closed_at_once


@pytest.mark.directive("proto", "hand-window")
def test_openvpn_holds_a_silent_tcp_connection_for_hand_window_and_trivpn_does_not(
        lab: NetnsLab, tmp_path: Path):
    # openvpn in one namespace, trivpn in another, both measured at the same time
    srv, other, cli = lab.add("srv"), lab.add("srvb"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    lab.veth(other, cli, f"{OTHER_SERVER_IP}/24", "198.18.1.2/24")
    write_pki(tmp_path)
    openvpn = start_openvpn(srv, tmp_path, "ovpn-server", server_lines(
        link_ip=SERVER_IP, proto="tcp-server", extra=["hand-window 8"]))
    trivpn = start_trivpn(other, tmp_path, "server", server_lines(
        link_ip=OTHER_SERVER_IP, proto="tcp-server", extra=["hand-window 8"]))
    assert openvpn.wait_for("Initialization Sequence Completed", timeout=10), openvpn.text()
    assert trivpn.wait_event("link_open", timeout=10), trivpn.text()
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(_silent_and_garbage_connections, cli, SERVER_IP)
        ours = pool.submit(_silent_and_garbage_connections, cli, OTHER_SERVER_IP)
        (ovpn_silent, ovpn_garbage_closed), (ours_silent, ours_garbage_closed) = \
            theirs.result(timeout=40), ours.result(timeout=40)
    print(f"\nsilent TCP connection closed after: openvpn {ovpn_silent:.1f} s, "
          f"trivpn {ours_silent:.1f} s; garbage closed at once: openvpn {ovpn_garbage_closed}, "
          f"trivpn {ours_garbage_closed}")
    assert ovpn_silent >= 6.5  # hand-window 8 (counted from the connect, a little earlier)
    assert 4.0 <= ours_silent < 6.5  # the 5 s first-packet timeout
    assert ours_garbage_closed


def _idle_udp_sessions(ns: Netns, source: str, count: int) -> int:
    """Complete the cookie exchange from ``count`` ports of ``source`` and then say nothing:
    each makes the server create a session. Returns how many got the server's reset."""
    answered = 0
    with ns.enter():
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    for n, sock in enumerate(socks):
        sock.bind((source, 0))
        sock.settimeout(2)
        sid = b"\xab" + n.to_bytes(7, "big")
        sock.sendto(encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, sid,
                                                 message_id=0)), (SERVER_IP, 1194))
        try:
            reply = decode_control(sock.recv(2048))
        except TimeoutError:
            continue
        answered += 1
        sock.sendto(encode_control(ControlPacket(Opcode.ACK_V1, 0, sid, acks=(0,),
                                                 remote_session_id=reply.session_id)),
                    (SERVER_IP, 1194))
    for sock in socks:
        sock.close()
    return answered


@pytest.mark.directive("proto", "max-clients", "connect-freq-initial")
def test_udp_reset_flood_and_idle_sessions_do_not_lock_out_a_real_openvpn_client(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _lab(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, extra=["connect-freq-initial 5000 10", "max-clients 10"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    rss_before = _rss_kib(server.pid)
    with cli.enter():
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(500)]
    sent = 0
    for n, sock in enumerate(socks):
        sock.bind((ATTACKERS[n % len(ATTACKERS)], 0))
        for _ in range(4):  # 2,000 resets from 500 ports, each answered statelessly
            reset = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0,
                                  b"\xee" + sent.to_bytes(7, "big"), message_id=0)
            sock.sendto(encode_control(reset), (SERVER_IP, 1194))
            sent += 1
    for sock in socks:
        sock.close()
    # 30 sessions that never start TLS, all from one address: more than max-clients 10
    assert _idle_udp_sessions(cli, ATTACKERS[0], 30) == 30

    started = time.monotonic()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=CONNECT_WITHIN), \
        server.text()[-3000:]
    connect_seconds = time.monotonic() - started
    rss_after = _rss_kib(server.pid)
    print(f"\nUDP: {sent} resets, 30 idle sessions; server RSS before {rss_before} KiB, after "
          f"{rss_after} KiB; openvpn client connected in {connect_seconds:.2f} s")
    refused = server.wait_event("preauth_limit_reached", timeout=10)
    assert refused is not None and refused["reason"] == "preauth_source_limit"
    assert refused["per_source"] == 8
    assert server.count("tls_handshake_started") == 1  # only the real client got that far


@pytest.mark.directive("proto", "max-clients")
def test_openvpn_counts_idle_udp_sessions_against_max_clients(lab: NetnsLab, tmp_path: Path):
    """What docs/server-admission.md says OpenVPN 2.6 does with the same idle sessions: they
    fill max-clients and the real client is refused."""
    srv, cli = _lab(lab, tmp_path)
    openvpn = start_openvpn(srv, tmp_path, "ovpn-server", server_lines(
        link_ip=SERVER_IP, extra=["max-clients 10"]))
    assert openvpn.wait_for("Initialization Sequence Completed", timeout=10), openvpn.text()
    assert _idle_udp_sessions(cli, ATTACKERS[0], 30) == 30
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    # the refusal of the real client itself (the idle sessions' own come from ATTACKERS[0]),
    # rather than CONNECT_WITHIN seconds of it not connecting
    deadline = time.monotonic() + CONNECT_WITHIN
    while not _refused_from(openvpn.text(), CLIENT_IP) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _refused_from(openvpn.text(), CLIENT_IP), openvpn.text()[-3000:]
    assert "Initialization Sequence Completed" not in client.text()


def _refused_from(log: str, address: str) -> bool:
    return any(f" {address}:" in line
               and "new incoming connection would exceed maximum number of clients (10)" in line
               for line in log.splitlines())


def _tcp_resets_answered(ns: Netns, count: int) -> int:
    """Send a client reset on each of ``count`` new TCP connections (and nothing more):
    how many got the server's reset back."""
    answered = 0
    for n in range(count):
        with ns.enter():
            sock = socket.create_connection((SERVER_IP, 1194), timeout=3)
        with sock:
            reset = encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0,
                                                 b"\xcd" + n.to_bytes(7, "big"), message_id=0))
            sock.sendall(len(reset).to_bytes(2, "big") + reset)
            try:
                head = sock.recv(3)
            except (TimeoutError, ConnectionResetError):
                continue
            if len(head) == 3 and head[2] >> 3 == Opcode.CONTROL_HARD_RESET_SERVER_V2:
                answered += 1
    return answered


@pytest.mark.directive("proto", "connect-freq-initial")
def test_connect_freq_initial_counts_tcp_resets_in_trivpn_and_not_in_openvpn(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _lab(lab, tmp_path)
    lines = server_lines(link_ip=SERVER_IP, proto="tcp-server",
                         extra=["connect-freq-initial 1 60"])
    openvpn = start_openvpn(srv, tmp_path, "ovpn-server", lines)
    assert openvpn.wait_for("Initialization Sequence Completed", timeout=10), openvpn.text()
    assert _tcp_resets_answered(cli, 3) == 3  # OpenVPN 2.6: UDP only
    lab.processes[-1].terminate()
    lab.processes[-1].wait(timeout=10)
    trivpn = start_trivpn(srv, tmp_path, "server", lines)
    assert trivpn.wait_event("link_open", timeout=10), trivpn.text()
    assert _tcp_resets_answered(cli, 3) == 1


@pytest.mark.directive("connect-freq", "proto")
def test_connect_freq_with_a_tcp_server_is_refused_by_openvpn_as_by_trivpn(tmp_path: Path):
    """docs/server-admission.md says connect-freq stays UDP-only because OpenVPN 2.6 refuses
    it with a TCP server; the check runs before any file or device is opened."""
    conf = tmp_path / "server.conf"
    conf.write_text("dev tun\nproto tcp-server\nserver 198.18.8.0 255.255.255.0\n"
                    "ca ca.crt\ncert server.crt\nkey server.key\ndh none\n"
                    "connect-freq 10 5\n")
    done = subprocess.run(["openvpn", "--config", str(conf)], check=False, capture_output=True,
                          text=True, timeout=10, cwd=tmp_path)
    assert "--connect-freq only works with --mode server --proto udp" in done.stdout
    with pytest.raises(ConfigError, match="'connect-freq' only works with 'proto udp'"):
        parse_config(conf.read_text(), str(conf))
