"""Helpers for the ``trivpn run`` client tests against a real openvpn server.

Topology used by every test: two namespaces joined by a veth, server 198.18.0.1, client
198.18.0.2; the VPN uses 198.18.8.0/24. Every load is bounded in size and time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.interop.openvpn import OpenVpnProcess, start_openvpn, wrap_lines, write_pki
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
VPN_NET, VPN_SERVER = "198.18.8.0", "198.18.8.1"
TRANSFER_PORT = 5201

# Receiver: listen on argv[1]:argv[2], accept one connection, hash everything until EOF.
_RECEIVER = """
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1); srv.settimeout(float(sys.argv[3]))
print("ready", flush=True)
conn, _ = srv.accept(); conn.settimeout(float(sys.argv[3]))
h = hashlib.sha256(); n = 0
while True:
    b = conn.recv(1 << 16)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

# Sender: connect to argv[1]:argv[2], send argv[3] deterministic pseudo-random bytes, spread
# evenly over argv[5] seconds (0: as fast as possible).
_SENDER = """
import hashlib, random, socket, sys, time
size = int(sys.argv[3]); rnd = random.Random(7); pace = float(sys.argv[5])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
h = hashlib.sha256(); left = size; start = time.monotonic()
while left:
    chunk = rnd.randbytes(min(left, 1 << 16)); s.sendall(chunk); h.update(chunk)
    left -= len(chunk)
    if pace:
        ahead = start + pace * (size - left) / size - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(size, h.hexdigest(), flush=True)
"""


def server_lines(*, proto: str = "udp", topology: str = "subnet", cipher: str = "AES-256-GCM",
                 wrap: str = "none", keepalive: str = "1 10", extra: tuple[str, ...] = ()
                 ) -> list[str]:
    return ["mode server", "tls-server", "dev tun", f"proto {proto}-server"
            if proto == "tcp" else "proto udp", f"local {SERVER_IP}", "port 1194",
            "ca ca.crt", "cert server.crt", "key server.key", "dh none",
            f"topology {topology}", f"server {VPN_NET} 255.255.255.0",
            f"keepalive {keepalive}", f"data-ciphers {cipher}", "remote-cert-tls client",
            "verb 4", *wrap_lines(wrap, "server"), *extra]


def client_lines(*, proto: str = "udp", wrap: str = "none", extra: tuple[str, ...] = ()
                 ) -> list[str]:
    return ["client", "dev tun", f"proto {proto}", f"remote {SERVER_IP} 1194", "nobind",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            "connect-retry 1", "verb 3", *wrap_lines(wrap, "client"), *extra]


@dataclass
class Setup:
    lab: NetnsLab
    workdir: Path
    server_ns: Netns
    client_ns: Netns


def make_setup(lab: NetnsLab, workdir: Path) -> Setup:
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(workdir)
    return Setup(lab, workdir, server_ns, client_ns)


def start_server(s: Setup, lines: list[str], name: str = "server") -> OpenVpnProcess:
    ovpn = start_openvpn(s.server_ns, s.workdir, name, lines)
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()
    return ovpn


def start_client(s: Setup, lines: list[str], name: str = "client") -> TrivpnProcess:
    # configs reference ca.crt etc. relative to the config file, which lives in workdir
    return start_trivpn(s.client_ns, s.workdir, name, lines)


def popen_of(lab: NetnsLab, pid: int) -> subprocess.Popen[bytes]:
    for proc in lab.processes:
        if proc.pid == pid:
            return proc
    raise AssertionError(f"no process {pid} in the lab")


def stop_process(lab: NetnsLab, pid: int, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int:
    proc = popen_of(lab, pid)
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def wait_up(client: TrivpnProcess, timeout: float = 20.0) -> dict[str, Any]:
    event = client.wait_event("tun_configured", timeout)
    assert event is not None, client.text()[-4000:]
    return event


def client_tun_ip(event: dict[str, Any]) -> str:
    first = event["addresses"][0]
    return str(first.split("/")[0].split(" ")[0])


def ping(ns: Netns, dst: str, *, count: int = 3, interval: float = 0.2,
         timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return ns.run(["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "2", dst],
                  check=False, timeout=timeout)


def ping_ok(ns: Netns, dst: str, count: int = 3) -> None:
    done = ping(ns, dst, count=count)
    assert done.returncode == 0, (done.stdout, done.stderr)


def received(ping_output: str) -> int:
    """How many replies ``ping -q`` reported."""
    for line in ping_output.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def transfer(sender: Netns, receiver: Netns, receiver_ip: str, *,
             size: int = 10 * 1024 * 1024, timeout: float = 30.0, pace: float = 0.0) -> None:
    """Send ``size`` bytes over TCP from ``sender`` to ``receiver_ip`` (in ``receiver``) and
    assert the receiver got exactly them (length and SHA-256)."""
    rx = receiver.spawn([sys.executable, "-c", _RECEIVER, receiver_ip, str(TRANSFER_PORT),
                         str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert rx.stdout is not None
    assert rx.stdout.readline().strip() == b"ready"
    tx = sender.run([sys.executable, "-c", _SENDER, receiver_ip, str(TRANSFER_PORT), str(size),
                     str(timeout), str(pace)], timeout=timeout + 5)
    out, err = rx.communicate(timeout=timeout)
    assert rx.returncode == 0, err
    assert out.decode().split() == tx.stdout.split(), (out, tx.stdout)
    assert tx.stdout.split()[0] == str(size)


def addresses(ns: Netns) -> list[dict[str, Any]]:
    done = ns.run(["ip", "-j", "addr", "show"])
    return list(json.loads(done.stdout))


def link_index(ns: Netns, ifname: str) -> int | None:
    for link in addresses(ns):
        if link.get("ifname") == ifname:
            return int(link["ifindex"])
    return None


def routes(ns: Netns) -> list[str]:
    return ns.run(["ip", "route", "show"]).stdout.splitlines()


def wait_until(predicate: Any, timeout: float = 15.0, step: float = 0.1) -> bool:
    """Poll ``predicate`` every ``step`` s until it is true (True) or ``timeout`` s have
    passed (its last answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
