"""``trivpn run`` as a client against a real ``openvpn`` 2.6 server, in namespaces.

Server namespace 198.18.0.1 runs openvpn (VPN 198.18.8.0/24); client namespace 198.18.0.2 runs
``python -m trivpn run``. The matrix covers UDP and TCP, AES-256-GCM and CHACHA20-POLY1305,
tls-auth and tls-crypt, topology subnet and net30, each at least once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.clientkit import (
    CLIENT_IP,
    SERVER_IP,
    VPN_SERVER,
    Setup,
    client_lines,
    client_tun_ip,
    link_index,
    make_setup,
    ping_ok,
    popen_of,
    received,
    routes,
    server_lines,
    start_client,
    start_server,
    stop_process,
    transfer,
    wait_until,
)
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path: Path):
    require_netns()
    require_openvpn()
    with NetnsLab() as lab:
        yield make_setup(lab, tmp_path)


@pytest.mark.directive("client", "dev", "proto", "nobind", "tls-auth", "tls-crypt")
@pytest.mark.parametrize(("proto", "cipher", "wrap", "topology"), [
    ("udp", "AES-256-GCM", "tls-auth", "subnet"),
    ("tcp", "CHACHA20-POLY1305", "tls-crypt", "net30"),
])
def test_tunnel_to_openvpn_carries_ping_both_ways_and_10mb_intact(
        setup: Setup, proto: str, cipher: str, wrap: str, topology: str):
    ovpn = start_server(setup, server_lines(proto=proto, cipher=cipher, wrap=wrap,
                                            topology=topology))
    client = start_client(setup, client_lines(proto=proto, wrap=wrap))
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    my_ip = client_tun_ip(up)
    if topology == "net30":
        assert " peer " in up["addresses"][0]
    else:
        assert up["addresses"][0] == f"{my_ip}/24"

    ping_ok(setup.client_ns, VPN_SERVER)
    ping_ok(setup.server_ns, my_ip)
    transfer(setup.client_ns, setup.server_ns, VPN_SERVER)
    transfer(setup.server_ns, setup.client_ns, my_ip)

    names = [e.get("event") for e in client.events()]
    for expected in ("link_open", "tls_handshake_started", "tls_handshake_complete",
                     "push_reply_received", "key_method_complete"):
        assert expected in names, names
    assert f"Outgoing Data Channel: Cipher '{cipher}' initialized" in ovpn.text()
    assert client.wait_event("key_method_complete", 1, cipher=cipher) is not None


def test_seed_style_client_conf_runs_unchanged_and_drops_privileges(setup: Setup):
    start_server(setup, server_lines(topology="net30"))
    client = start_client(setup, [
        "client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "resolv-retry infinite",
        "ca ca.crt", "cert client.crt", "key client.key", "user nobody", "group nogroup",
        "persist-key", "persist-tun", "verb 3"])
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    dropped = client.wait_event("privileges_dropped", 5)
    assert dropped is not None and dropped["uid"] == 65534, client.text()[-3000:]
    status = Path(f"/proc/{client.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65534"] * 4
    link = client.wait_event("link_open", 1)
    assert link is not None and link["local"].endswith(":1194")  # no nobind: binds lport
    ping_ok(setup.client_ns, VPN_SERVER)
    ping_ok(setup.server_ns, client_tun_ip(up))


def test_renegotiation_every_few_seconds_never_drops_the_tunnel(setup: Setup):
    start_server(setup, server_lines())
    client = start_client(setup, client_lines(extra=("reneg-sec 3",)))
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    pinger = setup.client_ns.spawn(["ping", "-n", "-q", "-c", "100", "-i", "0.1", "-W", "2",
                                    VPN_SERVER], stdout=-1, stderr=-1)
    # a transfer paced over ~8 s, so that it spans several key changes
    transfer(setup.client_ns, setup.server_ns, VPN_SERVER, size=8 * 1024 * 1024,
             timeout=30, pace=8.0)
    out, _ = pinger.communicate(timeout=20)
    got = received(out.decode())
    assert got >= 98, out
    assert client.count("renegotiated") >= 2, client.text()[-4000:]
    assert client.count("ping_restart") == 0 and client.count("reconnecting") == 0


_GARBAGE = r"""
import os, socket, struct, sys, time
src_if, client_ip, client_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
tun_peer = sys.argv[4]
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL: sees output
cap.bind((src_if, 0)); cap.settimeout(5)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
def send(payload):
    raw.sendto(struct.pack("!HHHH", 1194, client_port, 8 + len(payload), 0) + payload,
               (client_ip, 0))
# provoke a data packet from the server to the client, then capture it
poke = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = None
deadline = time.monotonic() + 5
while data is None and time.monotonic() < deadline:
    poke.sendto(b"replay-me", (tun_peer, 9))
    frame = cap.recv(65535)
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if frame[12:14] != b"\x08\x00" or ip[9] != 17 or socket.inet_ntoa(ip[16:20]) != client_ip:
        continue
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    payload = ip[ihl + 8:]
    if sport == 1194 and dport == client_port and payload and payload[0] >> 3 == 9:
        data = payload
assert data is not None, "no data packet captured"
for _ in range(50):
    send(os.urandom(100))                      # garbage, random opcodes
    send(bytes([9 << 3]) + os.urandom(120))    # garbage that claims to be DATA_V2
    send(bytes([9 << 3, 0]))                   # truncated data packet
    send(bytes([4 << 3]) + os.urandom(3))      # truncated control packet
for _ in range(20):
    send(data)                                 # replays of a real packet
print("sent", flush=True)
"""


def test_garbage_truncated_and_replayed_datagrams_are_counted_and_tunnel_survives(
        setup: Setup):
    start_server(setup, server_lines(wrap="tls-auth"))
    client = start_client(setup, client_lines(wrap="tls-auth"))
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    link = client.wait_event("link_open", 1)
    assert link is not None
    port = link["local"].rsplit(":", 1)[1]
    my_ip = client_tun_ip(up)
    done = setup.server_ns.run([sys.executable, "-c", _GARBAGE, "veth0", CLIENT_IP, port,
                                my_ip], check=False, timeout=20)
    assert done.returncode == 0, done.stderr
    ping_ok(setup.client_ns, VPN_SERVER)

    def logged() -> list[dict[str, Any]]:
        return [e for e in client.events() if e.get("event") == "packet_dropped"]

    # 200 garbage/truncated + 20 replays; the aggregator logs at most every 10 s per reason
    assert wait_until(lambda: sum(e["count"] for e in logged()) >= 200, 12), logged()
    drops = logged()
    reasons = {e["reason"] for e in drops}
    assert "replay" in reasons, drops
    assert len(drops) <= 3 * len(reasons)  # aggregated, not one line per packet
    ping_ok(setup.server_ns, my_ip)
    assert client.count("reconnecting") == 0


@pytest.mark.directive("auth-user-pass", "auth-retry")
def test_auth_failed_makes_trivpn_exit_1(setup: Setup):
    start_server(setup, server_lines(extra=(
        "script-security 2", "auth-user-pass-verify /bin/false via-env")))
    (setup.workdir / "creds.txt").write_text("alice\nwrong\n")
    client = start_client(setup, client_lines(extra=("auth-user-pass creds.txt",)))
    proc = popen_of(setup.lab, client.pid)
    assert proc.wait(timeout=20) == 1, client.text()[-4000:]
    event = client.wait_event("auth_failed", 1)
    assert event is not None
    assert client.count("reconnecting") == 0
    assert "wrong" not in client.text()  # the password is never logged


@pytest.mark.directive("explicit-exit-notify")
def test_sigterm_with_explicit_exit_notify_tells_server_and_removes_routes(setup: Setup):
    ovpn = start_server(setup, server_lines(topology="subnet", extra=(
        'push "redirect-gateway def1"', 'push "route 198.18.9.0 255.255.255.0"')))
    client = start_client(setup, client_lines(extra=("explicit-exit-notify 1",)))
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    table = routes(setup.client_ns)
    for prefix in ("0.0.0.0/1 via 198.18.8.1", "128.0.0.0/1 via 198.18.8.1",
                   "198.18.9.0/24 via 198.18.8.1", f"{SERVER_IP} dev veth0"):
        assert any(r.startswith(prefix) for r in table), table
    ping_ok(setup.client_ns, VPN_SERVER)  # the exception route keeps the link outside

    started = time.monotonic()
    assert stop_process(setup.lab, client.pid, signal.SIGTERM) == 0, client.text()[-3000:]
    assert time.monotonic() - started < 4
    # cc-exit was negotiated, so the EXIT control message was used (not OCC_EXIT)
    assert ovpn.wait_for("CC-EEN exit message received by peer", 2), ovpn.text()[-3000:]
    assert client.wait_event("exit_notify_sent", 1) is not None
    assert client.wait_event("exiting", 1, code=0) is not None
    assert routes(setup.client_ns) == [f"198.18.0.0/24 dev veth0 proto kernel scope link "
                                       f"src {CLIENT_IP} "]
    assert link_index(setup.client_ns, up["device"]) is None
    assert not os.path.exists(f"/proc/{client.pid}/status")
