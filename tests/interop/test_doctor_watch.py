"""``trivpn doctor --watch`` attached to real running tunnels: a real ``openvpn`` 2.6 client (and
a trivpn client) connected to a real openvpn 2.6 server in namespaces; the fault then happens
for real and the watcher must explain it as it happens.

The watcher runs in the host namespace and reaches the client's management interface through
a unix socket (a path is the same in every network namespace); one test reaches a TCP
management port by running the watcher inside the client's namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.interop.trivpnproc import start_trivpn
from tests.interop.tunnelkit import CLIENT_IP, SERVER_IP, Tunnel, client_config, make_tunnel
from tests.netns import Netns, NetnsLab
from trivpn.diagnostics.watch import UNAUTH_BYTES_THRESHOLD
from trivpn.pki.crl import build_crl, crl_pem
from trivpn.protocol.statickey import StaticKey, format_static_key

pytestmark = pytest.mark.integration

@dataclass
class Watcher:
    """A running ``trivpn doctor --watch --json`` and the events it printed so far."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float
             ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        return None

    def wait_id(self, event_id: str, timeout: float) -> dict[str, Any]:
        found = self.wait(lambda e: e.get("id") == event_id, timeout)
        assert found is not None, (event_id, [e.get("id") for e in self.events],
                                   self.stderr_text())
        return found

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def start(self) -> Watcher:
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(5)
        self._reader.join(5)
        return code


def start_watch(args: list[str], ns: Netns | None = None, cwd: Path | None = None) -> Watcher:
    cmd = [sys.executable, "-m", "trivpn", "doctor", "--watch", "--json", "--interval", "1",
           "--watch-time", "30", *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
    return Watcher(proc).start()


def attach(tunnel: Tunnel, sock: str = "mgmt.sock", timeout: float = 10.0) -> Watcher:
    path = tunnel.workdir / sock
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher = start_watch(["--management", str(path)])
    watcher.wait_id("watch.attached", 10)
    return watcher


@pytest.fixture
def tunnel(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Tunnel:
    return make_tunnel(lab, tmp_path)


def connected_openvpn_client(t: Tunnel, *extra: str) -> OpenVpnProcess:
    client = start_openvpn(t.client_ns, t.workdir, "client", client_config(*extra))
    assert client.wait_for("Initialization Sequence Completed", 10), client.text()
    return client


def test_watch_explains_a_ping_restart_when_the_server_dies(tunnel: Tunnel) -> None:
    tunnel.start_server()
    connected_openvpn_client(tunnel)
    watcher = attach(tunnel)
    try:
        tunnel.kill_server()
        event = watcher.wait_id("watch.reconnect.ping-restart", 10)
        assert event["level"] == "warn"
        assert event["evidence"]["reason"] == "ping-restart"
        assert "ping-restart" in event["explanation"]
        assert "keepalive" in event["fix"]
        log = watcher.wait_id("watch.log.ping_restart", 2)
        assert "Inactivity timeout (--ping-restart)" in log["evidence"]["line"]
        # and why nothing came: the server's port now answers ICMP port unreachable
        refused = watcher.wait_id("watch.log.connection_refused", 2)
        assert "nothing listens on the port" in refused["explanation"]
    finally:
        code = watcher.stop()
    assert code == 1  # SIGTERM ends it; a failure was seen


def test_watch_explains_the_tls_error_after_the_server_changed_its_tls_crypt_key(
        tunnel: Tunnel) -> None:
    tunnel.start_server("tls-crypt static.key")
    connected_openvpn_client(tunnel, "tls-crypt static.key", "hand-window 4")
    watcher = attach(tunnel)
    try:
        tunnel.kill_server()
        other = tunnel.workdir / "other.key"
        other.write_text(format_static_key(StaticKey(bytes(range(256)))))
        new_server = tunnel.start_server("tls-crypt other.key", name="server2")
        watcher.wait_id("watch.reconnect.ping-restart", 8)
        timeout = watcher.wait_id("watch.log.tls_timeout", 10)
        assert timeout["level"] == "fail"
        assert "tls-crypt key" in timeout["explanation"]
        event = watcher.wait_id("watch.reconnect.tls-error", 3)
        assert event["level"] == "fail"
        assert "tls-crypt" in event["fix"]
        # the fault is the one the watcher names: the new server drops the old key's packets
        assert new_server.wait_for("tls-crypt unwrapping failed", 3), new_server.text()
    finally:
        code = watcher.stop()
    assert code == 1  # a failure was seen


def test_watch_explains_auth_failed_from_the_config_target(tunnel: Tunnel) -> None:
    tunnel.start_server("script-security 2", "auth-user-pass-verify /bin/false via-file")
    creds = tunnel.workdir / "creds.txt"
    creds.write_text("alice\nwrong-password\n")
    (tunnel.workdir / "mgmt.pw").write_text("s3cret\n")
    lines = client_config("auth-user-pass creds.txt", "auth-retry nointeract")
    lines = [line if line != "management mgmt.sock unix" else "management mgmt.sock unix mgmt.pw"
             for line in lines]
    conf = tunnel.workdir / "client.conf"
    client = start_openvpn(tunnel.client_ns, tunnel.workdir, "client", lines)
    deadline = time.monotonic() + 10
    while not (tunnel.workdir / "mgmt.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher = start_watch([str(conf)])  # the address and password file come from the config
    try:
        watcher.wait_id("watch.attached", 10)
        event = watcher.wait_id("watch.auth_failed", 12)
        assert event["level"] == "fail"
        assert event["evidence"]["auth_failed"] == "AUTH_FAILED"
        assert "auth-user-pass" in event["fix"] and "client.conf" in event["fix"]
        watcher.wait_id("watch.reconnect.auth-failure", 3)
    finally:
        watcher.stop()
    assert "AUTH_FAILED" in client.text()


def test_watch_reaches_a_tcp_management_port_and_ends_when_the_tunnel_exits(
        tunnel: Tunnel) -> None:
    tunnel.start_server()
    lines = [line for line in client_config() if not line.startswith("management ")]
    client = start_openvpn(tunnel.client_ns, tunnel.workdir, "client",
                           [*lines, "management 127.0.0.1 7505"])
    assert client.wait_for("Initialization Sequence Completed", 10), client.text()
    watcher = start_watch(["--management", "127.0.0.1:7505"], ns=tunnel.client_ns)
    watcher.wait_id("watch.attached", 10)
    proc = next(p for p in tunnel.lab.processes if p.pid == client.pid)
    proc.send_signal(signal.SIGTERM)
    exiting = watcher.wait_id("watch.exit.SIGTERM", 5)
    assert exiting["level"] == "info"
    watcher.wait_id("watch.detached", 5)
    assert watcher.proc.wait(5) == 0  # it ended on its own when the connection closed


def test_watch_explains_a_trivpn_clients_ping_restart(tunnel: Tunnel) -> None:
    tunnel.start_server()
    assert tunnel.server is not None and tunnel.server.wait_for(
        "Initialization Sequence Completed", 10)
    # trivpn, like openvpn, resolves a relative socket path against its working directory
    lines = [line for line in client_config() if not line.startswith("management ")]
    client = start_trivpn(tunnel.client_ns, tunnel.workdir, "tclient",
                          [*lines, f"management {tunnel.workdir / 'mgmt.sock'} unix"])
    assert client.wait_event("key_method_complete", 15) is not None, client.text()
    watcher = attach(tunnel)
    try:
        tunnel.kill_server()
        event = watcher.wait_id("watch.reconnect.ping-restart", 10)
        assert event["evidence"]["reason"] == "ping_restart"  # trivpn's own word, explained
        assert "ping-restart" in event["explanation"]
    finally:
        assert watcher.stop() == 0


INJECTOR = """
import socket, struct, sys
src, dst = sys.argv[1], sys.argv[3]
sport, dport, count = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
# P_DATA_V2 (opcode 9, key id 0), peer id 0, packet id, a 16-byte tag and a body that cannot
# authenticate: what a peer with another key (or an attacker) would send
payload = bytes([9 << 3, 0, 0, 0]) + struct.pack('!I', 1) + bytes(16) + bytes(96)
udp = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(count):
    s.sendto(ip + udp, (dst, 0))
"""
CLIENT_PORT = 41194


def inject_garbage(ns: Netns, count: int) -> None:
    """``count`` data packets from the server's address and port that fail authentication
    (a raw socket: the real server keeps its port)."""
    ns.run([sys.executable, "-c", INJECTOR, SERVER_IP, "1194", CLIENT_IP, str(CLIENT_PORT),
            str(count)])


def test_watch_reports_packets_that_fail_authentication_in_openvpns_counters(
        tunnel: Tunnel) -> None:
    tunnel.start_server()
    lines = [line if line != "nobind" else f"lport {CLIENT_PORT}" for line in client_config()]
    client = start_openvpn(tunnel.client_ns, tunnel.workdir, "client", lines)
    assert client.wait_for("Initialization Sequence Completed", 10), client.text()
    watcher = attach(tunnel)
    try:
        time.sleep(1.5)  # a first status to compare with
        inject_garbage(tunnel.server_ns, 300)
        drops = watcher.wait_id("watch.drops.unauthenticated", 5)
        unauthenticated = drops["evidence"]["unauthenticated_bytes"]
        assert UNAUTH_BYTES_THRESHOLD < unauthenticated <= 300 * 120 + 4096
        assert "Auth read bytes" in drops["explanation"]
        decrypt = watcher.wait_id("watch.log.decrypt_error", 2)
        assert "AEAD Decrypt error" in decrypt["evidence"]["line"]
        assert client.wait_for("AEAD Decrypt error", 2)
    finally:
        watcher.stop()


def test_watch_reports_a_trivpn_clients_growing_drop_counter(tunnel: Tunnel) -> None:
    tunnel.start_server()
    assert tunnel.server is not None and tunnel.server.wait_for(
        "Initialization Sequence Completed", 10)
    lines = [line for line in client_config() if not line.startswith("management ")]
    lines = [line if line != "nobind" else f"lport {CLIENT_PORT}" for line in lines]
    client = start_trivpn(tunnel.client_ns, tunnel.workdir, "tclient",
                          [*lines, f"management {tunnel.workdir / 'mgmt.sock'} unix"])
    assert client.wait_event("key_method_complete", 15) is not None, client.text()
    watcher = attach(tunnel)
    try:
        inject_garbage(tunnel.server_ns, 50)
        drops = watcher.wait(lambda e: str(e.get("id", "")).startswith("watch.drops."), 8)
        assert drops is not None, [e["id"] for e in watcher.events]
        assert drops["evidence"]["total"] >= 1
        assert drops["level"] == "warn"
    finally:
        watcher.stop()


def test_watch_explains_a_renegotiation_that_fails_because_the_client_was_revoked(
        tunnel: Tunnel) -> None:
    crl = tunnel.workdir / "crl.pem"
    crl.write_bytes(crl_pem(build_crl(tunnel.pki.ca, [])))
    tunnel.start_server("crl-verify crl.pem")
    connected_openvpn_client(tunnel, "reneg-sec 4", "hand-window 4")
    watcher = attach(tunnel)
    try:
        # revoke the client while its tunnel runs: the server checks the CRL again at the
        # next renegotiation (it re-reads a changed crl-verify file for each new TLS session)
        crl.write_bytes(crl_pem(build_crl(tunnel.pki.ca, [tunnel.pki.client.cert.serial_number])))
        later = time.time() + 2
        os.utime(crl, (later, later))
        watcher.wait_id("watch.renegotiating", 8)  # reneg-sec 4
        event = watcher.wait_id("watch.renegotiation_failed", 8)  # hand-window 4
        assert event["level"] == "fail"
        assert "revoked" in event["explanation"] and "old key" in event["explanation"]
        assert "TLS key negotiation failed" in event["evidence"]["line"]
        assert [e["id"] for e in watcher.events].count("watch.renegotiation_failed") == 1
    finally:
        watcher.stop()
    # the cause the watcher names is the real one: the server refused the revoked client
    assert tunnel.server is not None
    assert "error=certificate revoked" in tunnel.server.text(), tunnel.server.text()
