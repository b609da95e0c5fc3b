"""<connection> blocks and connect-retry-max: trivpn and the real openvpn 2.6 client on the
same config against a real openvpn server (tests.interop.clientkit topology: client
198.18.0.2 ── 198.18.0.1 server)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    VPN_SERVER,
    Setup,
    make_setup,
    ping_ok,
    popen_of,
    server_lines,
    start_server,
)
from tests.interop.openvpn import start_openvpn
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

BASE = ["client", "dev tun", "nobind", "ca ca.crt", "cert client.crt", "key client.key",
        "remote-cert-tls server", "connect-retry 1", "verb 3"]


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _block(port: int, proto: str, *extra: str) -> list[str]:
    return ["<connection>", f"remote {SERVER_IP} {port} {proto}", *extra, "</connection>"]


@pytest.mark.directive("connection", "connect-timeout")
def test_a_dead_first_block_is_left_after_its_connect_timeout_like_openvpn(
        setup: Setup) -> None:
    start_server(setup, server_lines(proto="udp"))
    lines = [*BASE, *_block(1195, "udp", "connect-timeout 2"), *_block(1194, "udp")]
    started = time.monotonic()
    trivpn = start_trivpn(setup.client_ns, setup.workdir, "trivpn", lines)
    up = trivpn.wait_event("tun_configured", 20)
    trivpn_s = time.monotonic() - started
    assert up is not None, trivpn.text()[-4000:]
    assert up["remote"] == f"{SERVER_IP}:1194"
    assert trivpn.wait_event("server_poll_timeout", 1, remote=f"{SERVER_IP}:1195") is not None
    assert 2.0 <= trivpn_s < 8.0
    ping_ok(setup.client_ns, VPN_SERVER)
    popen_of(setup.lab, trivpn.pid).terminate()
    popen_of(setup.lab, trivpn.pid).wait(10)
    # the real client on the same blocks: the same way through
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn", lines)
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-3000:]
    text = ovpn.text()
    assert "Server poll timeout, restarting" in text
    assert f"link remote: [AF_INET]{SERVER_IP}:1194" in text
    print(f"dead first <connection>: trivpn up after {trivpn_s:.2f} s")


@pytest.mark.directive("connect-retry-max")
def test_connect_retry_max_gives_up_after_the_same_attempts_as_openvpn(setup: Setup) -> None:
    # nothing listens on 1195/1196 over TCP: every attempt is refused at once
    lines = [*BASE, "connect-retry-max 2", *_block(1195, "tcp-client"),
             *_block(1196, "tcp-client")]
    trivpn = start_trivpn(setup.client_ns, setup.workdir, "trivpn", lines)
    assert popen_of(setup.lab, trivpn.pid).wait(30) == 1, trivpn.text()[-4000:]
    final = trivpn.wait_event("connect_retry_max", 1)
    assert final is not None
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn", lines)
    code = popen_of(setup.lab, ovpn.pid).wait(30)
    text = ovpn.text()
    assert str(final["detail"]) in text, text[-3000:]  # OpenVPN's own words
    assert code == 1
    attempts = len(re.findall(rf"Attempting to establish TCP connection with "
                              rf"\[AF_INET\]{SERVER_IP}:119[56]", text))
    tried = [e for e in trivpn.events() if e.get("event") == "link_failed"]
    assert len(tried) == attempts == 4, (len(tried), attempts)


def _marked_packets(setup: Setup) -> int:
    out = setup.client_ns.run(["nft", "-j", "list", "counter", "inet", "marks", "m"]).stdout
    found = re.search(r'"packets":\s*(\d+)', out)
    assert found, out
    return int(found.group(1))


@pytest.mark.directive("mark")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_mark_sets_the_firewall_mark_of_every_link_packet(setup: Setup, proto: str) -> None:
    start_server(setup, server_lines(proto=proto))
    setup.client_ns.nft("""table inet marks {
        counter m { }
        chain out { type filter hook output priority 0; meta mark 7 counter name m; }
    }""")
    lines = [*BASE, f"proto {'tcp-client' if proto == 'tcp' else 'udp'}",
             f"remote {SERVER_IP} 1194", "mark 7"]
    trivpn = start_trivpn(setup.client_ns, setup.workdir, "trivpn", lines)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    before = _marked_packets(setup)
    assert before > 0
    ping_ok(setup.client_ns, VPN_SERVER)
    assert _marked_packets(setup) >= before + 3  # the pings' datagrams carry the mark too
