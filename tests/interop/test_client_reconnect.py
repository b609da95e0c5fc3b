"""A trivpn client and a real ``openvpn`` 2.6 client side by side while their real openvpn
server is killed with SIGKILL and restarted.

Topology: the server namespace reaches the trivpn client over one veth (198.18.0.1 ↔
198.18.0.2) and the openvpn client over another (198.18.1.1 ↔ 198.18.1.2); the server listens
on both (no ``local``) and gives each client a fixed VPN address (``client-config-dir``), so a
restart hands out the same addresses again. Both clients use the same config (only the remote
address and the certificate differ) and are pinged through the tunnel to the server's VPN
address.

For each case the test measures, from the moment the new server process starts, how long each
client needs until a ping through the tunnel is answered, and prints the figures (run with
``-rP`` to see them).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    VPN_SERVER,
    client_lines,
    link_index,
    popen_of,
    server_lines,
    wait_until,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem

pytestmark = pytest.mark.integration

TRIVPN_SIDE = ("198.18.0.1", "198.18.0.2")
OPENVPN_SIDE = ("198.18.1.1", "198.18.1.2")
OUTAGE = 3.0
"""Seconds the server stays dead at least (long enough for a TCP client to be refused a few
times and for a UDP client's ping-restart 3 to fire)."""
RECOVERY_LIMIT = 15.0
_STAMP = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from", re.M)


@dataclass
class Lab:
    lab: NetnsLab
    workdir: Path
    server_ns: Netns
    trivpn_ns: Netns
    openvpn_ns: Netns


@pytest.fixture
def side_by_side(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Lab:
    server_ns, trivpn_ns, openvpn_ns = lab.add("srv"), lab.add("triv"), lab.add("ovpn")
    lab.veth(server_ns, trivpn_ns, f"{TRIVPN_SIDE[0]}/24", f"{TRIVPN_SIDE[1]}/24")
    lab.veth(server_ns, openvpn_ns, f"{OPENVPN_SIDE[0]}/24", f"{OPENVPN_SIDE[1]}/24")
    pki = write_pki(tmp_path)
    second = issue_cert(pki.ca, "client", "client2")
    (tmp_path / "client2.crt").write_bytes(certificate_pem(second.cert))
    (tmp_path / "client2.key").write_bytes(private_key_pem(second.key))
    (tmp_path / "client2.key").chmod(0o600)
    (tmp_path / "ccd").mkdir()
    (tmp_path / "ccd" / "client1").write_text("ifconfig-push 198.18.8.10 255.255.255.0\n")
    (tmp_path / "ccd" / "client2").write_text("ifconfig-push 198.18.8.11 255.255.255.0\n")
    return Lab(lab, tmp_path, server_ns, trivpn_ns, openvpn_ns)


def _server_config(proto: str) -> list[str]:
    # The server only sends pings (not pushed: the clients' own keepalive/ping-restart
    # detect the outage); it listens on both veths.
    lines = [line for line in server_lines(proto=proto)
             if not line.startswith(("local ", "keepalive "))]
    return [*lines, "ping 1", "client-config-dir ccd"]


def _start_server(s: Lab, proto: str, name: str) -> OpenVpnProcess:
    server = start_openvpn(s.server_ns, s.workdir, name, _server_config(proto))
    assert server.wait_for("Initialization Sequence Completed", 15), server.text()[-3000:]
    return server


def _client_config(proto: str, server_ip: str, extra: tuple[str, ...]) -> list[str]:
    """The shared client config; towards the openvpn side with the second certificate."""
    lines = [line.replace(TRIVPN_SIDE[0], server_ip)
             for line in client_lines(proto=proto, extra=extra)]
    if server_ip == OPENVPN_SIDE[0]:
        lines = [line.replace("client.", "client2.") for line in lines]
    return lines


def first_reply_after(ns: Netns, dst: str, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` (Unix time) until ``dst`` first answers a ping from ``ns``;
    None if it does not within ``timeout``. Pings every 0.1 s; a ping that cannot even be
    sent (no route yet) is retried."""
    deadline = time.time() + timeout
    while (left := deadline - time.time()) > 0:
        done = ns.run(["ping", "-n", "-D", "-i", "0.1", "-c", "1", "-w", str(max(1, int(left))),
                       dst], check=False, timeout=left + 5)
        found = _STAMP.search(done.stdout)
        if done.returncode == 0 and found:
            return float(found.group(1)) - since
        time.sleep(0.1)
    return None


def _tun_unusable_by_nobody() -> bool:
    """Whether an unprivileged user cannot open /dev/net/tun at all (mode 0600 here; many
    distributions ship 0666, where OpenVPN, which keeps CAP_NET_ADMIN, can reopen it)."""
    return not stat.S_IMODE(os.stat("/dev/net/tun").st_mode) & 0o006


def _kill_server(s: Lab, server: OpenVpnProcess) -> float:
    proc = popen_of(s.lab, server.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    return time.monotonic()


CASES = [
    pytest.param("udp", ("keepalive 1 3", "persist-tun"), id="udp-persist-tun"),
    pytest.param("udp", ("keepalive 1 3",), id="udp"),
    pytest.param("tcp", ("keepalive 1 3", "persist-tun"), id="tcp-persist-tun"),
    pytest.param("tcp", ("keepalive 1 3",), id="tcp"),
    pytest.param("udp", ("ping 1", "ping-restart 3", "user nobody", "group nogroup",
                         "persist-key", "persist-tun"), id="udp-user-nobody-persist-tun"),
]


@pytest.mark.directive("persist-tun", "connect-retry", "keepalive", "ping", "ping-restart",
                       "remote", "user", "group", "persist-key")
@pytest.mark.parametrize(("proto", "extra"), CASES)
def test_server_killed_and_restarted_traffic_resumes_like_openvpn(
        side_by_side: Lab, proto: str, extra: tuple[str, ...]):
    s = side_by_side
    server = _start_server(s, proto, "server")
    trivpn = start_trivpn(s.trivpn_ns, s.workdir, "trivpn",
                          _client_config(proto, TRIVPN_SIDE[0], extra))
    ovpn = start_openvpn(s.openvpn_ns, s.workdir, "ovpnclient",
                         _client_config(proto, OPENVPN_SIDE[0], extra))
    first = trivpn.wait_event("tun_configured", 20)
    assert first is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    index = link_index(s.trivpn_ns, first["device"])

    killed = _kill_server(s, server)
    # both notice (UDP: ping-restart; TCP: the connection is reset) and start reconnecting
    assert trivpn.wait_event("reconnecting", 10) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("process restarting", 10), ovpn.text()[-4000:]
    time.sleep(max(0.0, killed + OUTAGE - time.monotonic()))

    restarted = time.time()
    _start_server(s, proto, "server2")
    with ThreadPoolExecutor(2) as pool:
        ours = pool.submit(first_reply_after, s.trivpn_ns, VPN_SERVER, restarted,
                           RECOVERY_LIMIT)
        theirs = pool.submit(first_reply_after, s.openvpn_ns, VPN_SERVER, restarted,
                             RECOVERY_LIMIT)
        trivpn_s, openvpn_s = ours.result(), theirs.result()
    print(f"reconnect {proto} {' '.join(extra)}: traffic again after the server restart: "
          f"trivpn {trivpn_s if trivpn_s is None else round(trivpn_s, 2)} s, "
          f"openvpn {openvpn_s if openvpn_s is None else round(openvpn_s, 2)} s")
    assert trivpn_s is not None, trivpn.text()[-4000:]
    assert openvpn_s is not None, ovpn.text()[-4000:]
    assert trivpn_s < openvpn_s + 5.0, (trivpn_s, openvpn_s)

    second = [e for e in trivpn.events() if e.get("event") == "tun_configured"][-1]
    if "persist-tun" in extra:  # the same device, untouched: same ifindex, no reconfiguration
        assert second["reused"] is True and second["reconfigured"] is False
        assert link_index(s.trivpn_ns, first["device"]) == index
    else:  # closed at the restart and opened anew, with its address and routes
        assert second["reused"] is False
        assert trivpn.count("tun_closed") >= 1
        assert second["ifindex"] != index
        assert second["addresses"] == first["addresses"] == ["198.18.8.10/24"]
        assert second["routes"] == first["routes"]
    assert popen_of(s.lab, trivpn.pid).poll() is None


@pytest.mark.directive("user", "group", "persist-tun")
def test_restart_after_dropping_privileges_without_persist_tun_exits_with_a_clear_message(
        side_by_side: Lab):
    s = side_by_side
    extra = ("keepalive 1 3", "user nobody", "group nogroup", "persist-key")
    server = _start_server(s, "udp", "server")
    trivpn = start_trivpn(s.trivpn_ns, s.workdir, "trivpn",
                          _client_config("udp", TRIVPN_SIDE[0], extra))
    ovpn = start_openvpn(s.openvpn_ns, s.workdir, "ovpnclient",
                         _client_config("udp", OPENVPN_SIDE[0], extra))
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    # OpenVPN warns at start-up already
    assert "without persist-tun -- this may cause restarts to fail" in ovpn.text()
    dropped = trivpn.wait_event("privileges_dropped", 1)
    assert dropped is not None and "persist-tun" in dropped["note"]

    killed = _kill_server(s, server)
    _start_server(s, "udp", "server2")
    code = popen_of(s.lab, trivpn.pid).wait(20)
    trivpn_exit = time.monotonic() - killed
    assert code == 1, trivpn.text()[-4000:]
    event = trivpn.wait_event("tun_reopen_impossible", 1)
    assert event is not None, trivpn.text()[-4000:]
    assert "persist-tun" in event["detail"] and "nobody" in event["detail"]
    assert trivpn.count("link_open") == 1  # no pointless reconnect to the server
    assert trivpn.wait_event("exiting", 1, code=1) is not None

    if _tun_unusable_by_nobody():
        # OpenVPN reconnects, then cannot open the TUN device and exits
        try:
            popen_of(s.lab, ovpn.pid).wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("openvpn did not exit: " + ovpn.text()[-3000:])
        openvpn_exit = time.monotonic() - killed
        text = ovpn.text()
        assert "Cannot open TUN/TAP dev /dev/net/tun: Permission denied" in text, text[-3000:]
        assert "Exiting due to fatal error" in text
        print(f"restart without persist-tun as nobody: both exit; trivpn after "
              f"{trivpn_exit:.2f} s, openvpn after {openvpn_exit:.2f} s (after reconnecting)")
    else:  # pragma: no cover - depends on the host's /dev/net/tun mode
        assert wait_until(lambda: "Initialization Sequence Completed"
                          in ovpn.text().split("process restarting", 1)[-1], 20)
        print("openvpn kept CAP_NET_ADMIN and could reopen a world-accessible /dev/net/tun")
