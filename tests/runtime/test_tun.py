"""TUN/TAP devices opened inside a test namespace, exercised by the kernel's own stack."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import trio

from tests.netns import Netns, NetnsLab
from tests.runtime.packets import (
    ECHO_REPLY,
    ECHO_REQUEST,
    ICMP,
    build_icmp_echo,
    build_ipv4,
    parse_icmp_echo,
    parse_ipv4,
)
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.netconf import NetConfig
from trivpn.runtime.tun import TunDevice, open_tun

LOCAL = "198.18.10.1"
PEER = "198.18.10.2"


@pytest.fixture
def tun_ns(netns_lab: NetnsLab) -> Iterator[tuple[Netns, TunDevice]]:
    """A namespace holding tun0 with 198.18.10.1/24, up."""
    ns = netns_lab.add("tun")
    with ns.enter():
        tun = open_tun("tun0")
    with tun, NetConfig(netns=ns.name) as net:
        net.add_address(tun.name, LOCAL, 24)
        net.set_up(tun.name)
        yield ns, tun


def _icmp_socket(ns: Netns) -> trio.socket.SocketType:
    with ns.enter():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return trio.socket.from_stdlib_socket(raw)


async def _next_echo_request(tun: TunDevice) -> tuple[bytes, int, int, bytes]:
    """Read until the kernel's echo request shows up (skipping e.g. IPv6 chatter)."""
    while True:
        for packet in await tun.read_batch():
            ip = parse_ipv4(packet)
            if ip is None or ip.proto != ICMP:
                continue
            echo = parse_icmp_echo(ip.payload)
            if echo is not None and echo.kind == ECHO_REQUEST:
                assert (ip.src, ip.dst) == (LOCAL, PEER)
                return packet, echo.ident, echo.seq, echo.data


async def test_ping_to_tun_peer_is_readable_as_echo_request(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        await sock.sendto(build_icmp_echo(ECHO_REQUEST, 0x7A7A, 1, b"trivpn-ping"), (PEER, 0))
        packet, ident, seq, data = await _next_echo_request(tun)
    assert (ident, seq, data) == (0x7A7A, 1, b"trivpn-ping")
    assert packet[0] >> 4 == 4


async def test_echo_reply_written_to_tun_answers_the_ping(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        await sock.sendto(build_icmp_echo(ECHO_REQUEST, 0x5151, 7, b"payload"), (PEER, 0))
        _, ident, seq, data = await _next_echo_request(tun)
        reply = build_ipv4(PEER, LOCAL, ICMP, build_icmp_echo(ECHO_REPLY, ident, seq, data))
        assert tun.write(reply)
        while True:
            got = parse_ipv4(await sock.recv(2048))
            assert got is not None
            echo = parse_icmp_echo(got.payload)
            if echo is not None and echo.kind == ECHO_REPLY:
                break
    assert (got.src, echo.ident, echo.seq, echo.data) == (PEER, 0x5151, 7, b"payload")


async def test_read_batch_drains_several_packets_in_one_call(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        for seq in range(5):
            await sock.sendto(build_icmp_echo(ECHO_REQUEST, 1, seq, b"x"), (PEER, 0))
        batch = await tun.read_batch()
    requests = [p for p in batch if (ip := parse_ipv4(p)) is not None and ip.proto == ICMP]
    assert len(requests) == 5


async def test_read_batch_respects_max_packets(tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        for seq in range(4):
            await sock.sendto(build_icmp_echo(ECHO_REQUEST, 1, seq, b"x"), (PEER, 0))
        assert len(await tun.read_batch(max_packets=2)) == 2


def _echo_requests(packets: list[bytes]) -> int:
    return sum(1 for p in packets if (ip := parse_ipv4(p)) is not None and ip.proto == ICMP)


async def test_read_ready_returns_what_is_queued_without_waiting(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    tun.read_ready()  # whatever the kernel sent by itself (IPv6 chatter)
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        for seq in range(3):
            await sock.sendto(build_icmp_echo(ECHO_REQUEST, 1, seq, b"x"), (PEER, 0))
        await trio.lowlevel.wait_readable(tun.fileno())
        await trio.sleep(0.05)
    first = tun.read_ready(max_packets=1)
    assert len(first) == 1
    assert _echo_requests(first + tun.read_ready()) == 3
    assert _echo_requests(tun.read_ready()) == 0


def test_write_of_malformed_packet_is_counted_as_drop(tun_ns: tuple[Netns, TunDevice]) -> None:
    _, tun = tun_ns
    assert tun.write(b"") is False
    assert tun.write_drops == 1


def test_write_many_of_one_malformed_packet_is_counted_as_drop(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    _, tun = tun_ns
    assert tun.write_many([b""]) == 0
    assert tun.write_drops == 1


async def test_lone_packet_written_with_write_many_answers_the_ping(
        tun_ns: tuple[Netns, TunDevice]) -> None:
    ns, tun = tun_ns
    with _icmp_socket(ns) as sock, trio.fail_after(5):
        await sock.sendto(build_icmp_echo(ECHO_REQUEST, 0x6262, 3, b"lone"), (PEER, 0))
        _, ident, seq, data = await _next_echo_request(tun)
        reply = build_ipv4(PEER, LOCAL, ICMP, build_icmp_echo(ECHO_REPLY, ident, seq, data))
        assert tun.write_many([reply]) == 1
        while True:
            got = parse_ipv4(await sock.recv(2048))
            assert got is not None
            echo = parse_icmp_echo(got.payload)
            if echo is not None and echo.kind == ECHO_REPLY:
                break
    assert (echo.ident, echo.seq, echo.data) == (0x6262, 3, b"lone")


def test_open_tap_gives_a_layer2_device(netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("tap")
    with ns.enter():
        tap = open_tun("tap7", "tap")
    with tap:
        assert (tap.name, tap.kind) == ("tap7", "tap")
        shown = ns.run(["ip", "-d", "link", "show", "tap7"]).stdout
        assert "link/ether" in shown
        assert "tap" in shown


def test_kernel_chooses_name_from_pattern(netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("pat")
    with ns.enter(), open_tun("tvpn%d") as tun:
        assert tun.name == "tvpn0"


def test_persistent_device_can_be_reopened_by_name(netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("persist")
    with ns.enter():
        first = open_tun("ptun0")
        first.set_persist(True)
        first.close()
        again = open_tun("ptun0")
    with again:
        assert again.name == "ptun0"
        again.set_persist(False)
    assert "ptun0" not in ns.run(["ip", "link", "show"]).stdout


def test_device_vanishes_on_close_unless_persistent(netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("gone")
    with ns.enter():
        tun = open_tun("gtun0")
    assert "gtun0" in ns.run(["ip", "link", "show"]).stdout
    tun.close()
    tun.close()  # idempotent
    assert tun.closed
    assert "gtun0" not in ns.run(["ip", "link", "show"]).stdout


def test_opening_a_device_held_by_another_fd_fails_with_reason(
        netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("busy")
    with ns.enter(), open_tun("btun0"), pytest.raises(RuntimeSetupError) as info:
        open_tun("btun0")
    assert info.value.where == "open tun btun0"
    assert info.value.errno is not None


def test_opening_a_tap_under_a_tun_name_fails(netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("kind")
    with ns.enter(), open_tun("ktun0") as tun:
        tun.set_persist(True)
        try:
            with pytest.raises(RuntimeSetupError):
                open_tun("ktun0", "tap")
        finally:
            tun.set_persist(False)


@pytest.mark.parametrize("name", ["a" * 16, "bad/name", "has space"])
def test_invalid_names_are_rejected_before_the_kernel(name: str) -> None:
    with pytest.raises(RuntimeSetupError, match="invalid interface name"):
        open_tun(name)


async def test_read_after_close_raises_closed() -> None:
    tun = TunDevice(os.open("/dev/null", os.O_RDONLY), "fake", "tun")
    tun.close()
    with pytest.raises(trio.ClosedResourceError):
        await tun.read_batch()


def test_read_ready_of_one_after_close_raises_closed() -> None:
    tun = TunDevice(os.open("/dev/null", os.O_RDONLY), "fake", "tun")
    tun.close()
    with pytest.raises(trio.ClosedResourceError):
        tun.read_ready(1)


async def test_close_wakes_a_waiting_reader(tun_ns: tuple[Netns, TunDevice]) -> None:
    _, tun = tun_ns
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def closer() -> None:
                await trio.sleep(0.05)
                tun.close()

            nursery.start_soon(closer)
            with pytest.raises(trio.ClosedResourceError):
                while True:  # skip any IPv6 chatter the kernel sends on link-up
                    await tun.read_batch()
