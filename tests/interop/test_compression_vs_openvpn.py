"""Compression against a real openvpn 2.6 server (OpenVPN src/openvpn/lzo.c, comp-lz4.c):
the server really compresses (``allow-compression yes``), trivpn decompresses; trivpn sends
uncompressed unless it has ``allow-compression yes`` itself; pushed compression as 2.6."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop import serverkit
from tests.interop.clientkit import (
    SERVER_IP,
    TRANSFER_PORT,
    VPN_SERVER,
    Setup,
    client_lines,
    client_tun_ip,
    make_setup,
    ping,
    received,
    server_lines,
    start_client,
    start_server,
    stop_process,
    wait_up,
)
from tests.interop.openvpn import start_openvpn
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

# Receiver and sender of compressible bytes (text), checked by length and SHA-256.
_RECEIVER = """
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(20)
print("ready", flush=True)
conn, _ = srv.accept(); conn.settimeout(20); h = hashlib.sha256(); n = 0
while True:
    b = conn.recv(1 << 16)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""
_SENDER = """
import hashlib, socket, sys
data = b"".join(b"line %06d of a compressible transfer\\n" % i for i in range(int(sys.argv[3])))
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""
LINES = 20000  # 760 kB


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _transfer(sender: Netns, receiver: Netns, receiver_ip: str) -> None:
    rx = receiver.spawn([sys.executable, "-c", _RECEIVER, receiver_ip, str(TRANSFER_PORT)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert rx.stdout is not None and rx.stdout.readline().strip() == b"ready"
    tx = sender.run([sys.executable, "-c", _SENDER, receiver_ip, str(TRANSFER_PORT),
                     str(LINES)], timeout=30)
    out, err = rx.communicate(timeout=30)
    assert rx.returncode == 0, err
    assert out.decode().split() == tx.stdout.split(), (out, tx.stdout)


def _compressible_pings(ns: Netns, dst: str) -> None:
    done = ns.run(["ping", "-n", "-q", "-c", "4", "-i", "0.2", "-W", "2", "-s", "1200",
                   "-p", "41", dst], check=False, timeout=15)
    assert received(done.stdout) == 4, (done.stdout, done.stderr)


def _traffic_both_ways(setup: Setup, client: TrivpnProcess) -> None:
    tun_ip = client_tun_ip(wait_up(client))
    _compressible_pings(setup.client_ns, VPN_SERVER)
    _compressible_pings(setup.server_ns, tun_ip)
    _transfer(setup.server_ns, setup.client_ns, tun_ip)  # server → trivpn
    _transfer(setup.client_ns, setup.server_ns, VPN_SERVER)  # trivpn → server


def _stats(setup: Setup, client: TrivpnProcess) -> dict[str, Any]:
    stop_process(setup.lab, client.pid, signal.SIGTERM)
    event = client.wait_event("compression_stats", 5)
    assert event is not None, client.text()[-3000:]
    return event


COMPRESSING_SERVERS = {
    "comp-lzo": ("comp-lzo yes", "comp-lzo yes", "comp-lzo yes"),
    "lz4-v2": ("compress lz4-v2", "compress lz4-v2", "compress lz4-v2"),
    "lz4": ("compress lz4", "compress lz4", "compress lz4"),
}


@pytest.mark.directive("comp-lzo", "compress")
@pytest.mark.parametrize("name", list(COMPRESSING_SERVERS))
def test_trivpn_decompresses_what_a_compressing_openvpn_server_sends(setup: Setup,
                                                                    name: str) -> None:
    server_directive, client_directive, algorithm = COMPRESSING_SERVERS[name]
    start_server(setup, server_lines(extra=(server_directive, "allow-compression yes")))
    client = start_client(setup, client_lines(extra=(client_directive,)))
    _traffic_both_ways(setup, client)
    stats = _stats(setup, client)
    assert stats["algorithm"] == algorithm
    # the server compressed the replies and the transfer: trivpn decompressed them
    assert stats["decompressed_packets"] > 50, stats
    assert stats["post_decompress"] > 3 * stats["pre_decompress"], stats
    # asym (2.6's default with a compression directive): trivpn compressed nothing
    assert stats["compressed_packets"] == 0 and stats["pre_compress"] == 0, stats


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize("directive", ["comp-lzo yes", "compress lz4-v2"])
def test_trivpn_with_allow_compression_yes_compresses_for_openvpn(setup: Setup,
                                                                   directive: str) -> None:
    start_server(setup, server_lines(extra=(directive, "allow-compression yes")))
    client = start_client(setup, client_lines(extra=(directive, "allow-compression yes")))
    _traffic_both_ways(setup, client)  # openvpn decompressed it, or nothing would come back
    stats = _stats(setup, client)
    assert stats["compressed_packets"] > 50, stats
    assert stats["pre_compress"] > 3 * stats["post_compress"], stats
    assert stats["decompressed_packets"] > 50, stats


@pytest.mark.directive("allow-compression")
def test_pushed_lz4_v2_is_decompressed_with_allow_compression_asym(setup: Setup) -> None:
    start_server(setup, server_lines(extra=("compress lz4-v2", "allow-compression yes",
                                            'push "compress lz4-v2"')))
    client = start_client(setup, client_lines(extra=("allow-compression asym",)))
    tun_ip = client_tun_ip(wait_up(client))
    _compressible_pings(setup.server_ns, tun_ip)
    _transfer(setup.server_ns, setup.client_ns, tun_ip)
    stats = _stats(setup, client)
    assert stats["algorithm"] == "compress lz4-v2"
    assert stats["decompressed_packets"] > 50 and stats["compressed_packets"] == 0, stats


@pytest.mark.directive("allow-compression")
def test_pushed_compression_is_refused_by_default_like_openvpn(setup: Setup) -> None:
    start_server(setup, server_lines(extra=("compress lz4-v2", "allow-compression yes",
                                            'push "compress lz4-v2"')))
    client = start_client(setup, client_lines())
    failed = client.wait_event("handshake_failed", 20, cause="bad_push")
    assert failed is not None, client.text()[-3000:]
    assert "compression" in failed["detail"]
    assert client.count("tun_configured") == 0
    stop_process(setup.lab, client.pid, signal.SIGTERM)
    # a real openvpn client with the same config refuses the push as well
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", client_lines())
    assert ovpn.wait_for("server pushed compression settings that are not allowed", 20), \
        ovpn.text()[-3000:]


def test_pings_still_pass_with_plain_openvpn_sizes(setup: Setup) -> None:
    """Sanity: small pings (below the compression threshold) with comp-lzo both sides."""
    start_server(setup, server_lines(extra=("comp-lzo yes", "allow-compression yes")))
    client = start_client(setup, client_lines(extra=("comp-lzo yes",)))
    wait_up(client)
    done = ping(setup.client_ns, VPN_SERVER, count=3)
    assert received(done.stdout) == 3, done.stdout


@pytest.mark.directive("compress", "comp-lzo")
@pytest.mark.parametrize("directive", ["comp-lzo yes", "compress lz4-v2"])
def test_trivpn_server_decompresses_what_a_compressing_openvpn_client_sends(
        setup: Setup, directive: str) -> None:
    """Compressible pings and transfers only cross if trivpn decompressed them."""
    server = start_trivpn(setup.server_ns, setup.workdir, "tserver", serverkit.server_lines(
        link_ip=SERVER_IP, extra=[directive]))
    assert server.wait_event("link_open", timeout=10), server.text()
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "oclient", serverkit.client_lines(
        server_ip=SERVER_IP, extra=[directive, "allow-compression yes"]))
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-3000:]
    connected = server.wait_event("peer_connected", timeout=5)
    assert connected is not None, server.text()[-3000:]
    _compressible_pings(setup.client_ns, serverkit.SERVER_VPN_IP)
    _compressible_pings(setup.server_ns, connected["vpn_ip"])
    _transfer(setup.client_ns, setup.server_ns, serverkit.SERVER_VPN_IP)
    _transfer(setup.server_ns, setup.client_ns, connected["vpn_ip"])
