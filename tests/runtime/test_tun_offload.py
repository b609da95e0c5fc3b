"""TUN offloads against the kernel: two namespaces whose TUN devices are joined by a plain
relay (read_batch on one, write_many on the other), a TCP transfer across it."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator

import pytest
import trio

from tests.netns import Netns, NetnsLab
from trivpn.runtime.netconf import NetConfig
from trivpn.runtime.tun import TunDevice, open_tun

A_IP, B_IP = "198.18.20.1", "198.18.20.2"
PORT = 5201
SIZE = 4 * 1024 * 1024


def _open(ns: Netns, address: str, mode: str) -> tuple[TunDevice, NetConfig]:
    with ns.enter():
        tun = open_tun("tun0", offload=mode != "plain", tso=mode == "tso")
    net = NetConfig(netns=ns.name)
    net.add_address(tun.name, address, 24)
    net.set_up(tun.name)
    return tun, net


# (sender, receiver): "plain" (no vnet header), "vnet" (the default: coalesced writes, the
# kernel segments before handing packets over), "tso" (TSO super-packets cut by us).
@pytest.fixture(params=[("vnet", "vnet"), ("tso", "tso"), ("tso", "plain"), ("plain", "vnet")],
                ids="-to-".join)
def tun_pair(request: pytest.FixtureRequest,
             netns_lab: NetnsLab) -> Iterator[tuple[Netns, TunDevice, Netns, TunDevice]]:
    a, b = netns_lab.add("offa"), netns_lab.add("offb")
    tun_a, net_a = _open(a, A_IP, request.param[0])
    tun_b, net_b = _open(b, B_IP, request.param[1])
    with tun_a, tun_b, net_a, net_b:
        yield a, tun_a, b, tun_b


async def _relay(src: TunDevice, dst: TunDevice) -> None:
    while True:
        dst.write_many(await src.read_batch())


def _socket(ns: Netns, kind: int = socket.SOCK_STREAM) -> trio.socket.SocketType:
    with ns.enter():
        return trio.socket.socket(socket.AF_INET, kind)


async def _transfer(a: Netns, b: Netns, data: bytes) -> bytes:
    """Send ``data`` from a to b over TCP; return what b received."""
    received = bytearray()
    listener = _socket(b)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((B_IP, PORT))
    listener.listen(1)

    async def serve() -> None:
        conn, _ = await listener.accept()
        with conn:
            while chunk := await conn.recv(1 << 16):
                received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        sender = _socket(a)
        with sender:
            await sender.connect((B_IP, PORT))
            view = memoryview(data)
            while view:
                sent = await sender.send(view[:1 << 16])
                view = view[sent:]
    listener.close()
    return bytes(received)


async def test_tcp_transfer_across_offloaded_tuns_arrives_intact(
        tun_pair: tuple[Netns, TunDevice, Netns, TunDevice]) -> None:
    a, tun_a, b, tun_b = tun_pair
    data = random.Random(7).randbytes(SIZE)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_relay, tun_a, tun_b)
            nursery.start_soon(_relay, tun_b, tun_a)
            got = await _transfer(a, b, data)
            nursery.cancel_scope.cancel()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert tun_a.bad_frames == tun_b.bad_frames == 0
    if tun_a.offload and tun_a.tso:
        assert tun_a.super_reads > 0, "the sender's kernel handed over no TSO super-packets"
    if tun_b.offload:
        assert tun_b.super_writes > 0, "no TCP run was written as one super-packet"


async def test_udp_from_an_offloaded_tun_arrives_with_a_valid_checksum(
        tun_pair: tuple[Netns, TunDevice, Netns, TunDevice]) -> None:
    # The sender's kernel leaves the UDP checksum to the device (NEEDS_CSUM); the receiver's
    # kernel drops a datagram whose checksum is wrong, so arrival proves it was completed.
    a, tun_a, b, tun_b = tun_pair
    receiver = _socket(b, socket.SOCK_DGRAM)
    await receiver.bind((B_IP, PORT))
    sender = _socket(a, socket.SOCK_DGRAM)
    with receiver, sender, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_relay, tun_a, tun_b)
            await sender.sendto(b"checksum me" * 11, (B_IP, PORT))
            assert await receiver.recv(2048) == b"checksum me" * 11
            nursery.cancel_scope.cancel()
