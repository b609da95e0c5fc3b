"""ping-exit and inactive: a trivpn client beside a real openvpn 2.6 client, same config, same
server, in namespaces. Both must exit (status 0, no reconnect) at about the same moment.

The openvpn client runs with ``ifconfig-noexec``/``route-noexec`` so the two clients can share
the client namespace without fighting over addresses and routes; both use the same
certificate, so the server has ``duplicate-cn``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    ping_ok,
    popen_of,
    server_lines,
    start_client,
    start_server,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _openvpn_client(setup: Setup, extra: tuple[str, ...]) -> OpenVpnProcess:
    lines = ["client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
             "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
             "ifconfig-noexec", "route-noexec", "verb 3", *extra]
    return start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", lines)


def _server_without_pushed_timers(setup: Setup) -> OpenVpnProcess:
    # 'ping 1' instead of keepalive: the server pings but pushes no ping-restart, which would
    # replace the clients' own ping-exit
    lines = [line for line in server_lines() if not line.startswith("keepalive")]
    return start_server(setup, [*lines, "ping 1", "duplicate-cn"])


def _exit_time(setup: Setup, pid: int, timeout: float) -> tuple[int, float]:
    proc = popen_of(setup.lab, pid)
    code = proc.wait(timeout=timeout)
    return code, time.monotonic()


@pytest.mark.directive("ping-exit")
def test_ping_exit_makes_trivpn_exit_like_openvpn_when_the_server_dies(setup: Setup) -> None:
    server_proc = popen_of(setup.lab, _server_without_pushed_timers(setup).pid)
    ours = start_client(setup, client_lines(extra=("ping-exit 3",)))
    theirs = _openvpn_client(setup, ("ping-exit 3",))
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-4000:]
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-4000:]
    time.sleep(4)  # longer than ping-exit: the server's pings keep both up
    ping_ok(setup.client_ns, VPN_SERVER)
    assert popen_of(setup.lab, ours.pid).poll() is None, ours.text()[-3000:]
    assert popen_of(setup.lab, theirs.pid).poll() is None, theirs.text()[-3000:]

    server_proc.kill()
    server_proc.wait(5)
    killed = time.monotonic()
    our_code, our_end = _exit_time(setup, ours.pid, 15)
    their_code, their_end = _exit_time(setup, theirs.pid, 15)
    assert "Inactivity timeout (--ping-exit), exiting" in theirs.text()
    assert (our_code, their_code) == (0, 0), ours.text()[-3000:]
    assert ours.wait_event("ping_exit", 1) is not None
    assert ours.wait_event("exiting", 1, code=0, reason="ping_exit") is not None
    assert ours.count("reconnecting") == 0
    assert 2.0 <= our_end - killed <= 5.5 and 2.0 <= their_end - killed <= 5.5
    assert abs((our_end - killed) - (their_end - killed)) <= 1.5


@pytest.mark.directive("inactive")
def test_inactive_makes_trivpn_exit_like_openvpn_once_traffic_stops(setup: Setup) -> None:
    start_server(setup, server_lines(keepalive="1 10", extra=("duplicate-cn",)))
    ours = start_client(setup, client_lines(extra=("inactive 3",)))
    theirs = _openvpn_client(setup, ("inactive 3",))
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-4000:]
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-4000:]
    theirs_up = time.monotonic()

    # traffic through our tunnel for longer than 'inactive' keeps it up; pings (keepalive 1)
    # never count, so the idle openvpn client exits meanwhile
    pinger = setup.client_ns.spawn(["ping", "-n", "-q", "-c", "12", "-i", "0.5", "-W", "2",
                                    VPN_SERVER])
    their_code, their_end = _exit_time(setup, theirs.pid, 10)
    assert "Inactivity timeout (--inactive), exiting" in theirs.text(), theirs.text()[-3000:]
    assert their_code == 0
    # openvpn's timer started with its session, before we saw the tunnel up: no lower bound
    assert their_end - theirs_up <= 5.0
    pinger.wait(15)
    traffic_end = time.monotonic()
    assert popen_of(setup.lab, ours.pid).poll() is None, ours.text()[-3000:]

    our_code, our_end = _exit_time(setup, ours.pid, 10)
    assert our_code == 0, ours.text()[-3000:]
    assert ours.wait_event("inactive", 1) is not None
    assert ours.wait_event("exiting", 1, code=0, reason="inactive") is not None
    assert ours.count("reconnecting") == 0
    # 'inactive 3' is checked once a second; the upper bound leaves room for the exit itself
    # on a loaded 2-core machine (5.99 s seen once in a full parallel run)
    assert 2.0 <= our_end - traffic_end <= 6.5
