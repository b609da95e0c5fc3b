"""Connection profiles in memory: <connection> blocks tried in order, connect-timeout per
profile, connect-retry-max, remote-random-hostname, persist-remote-ip, route-delay,
route-metric and HTTP/SOCKS proxies (a proxy double that hands the stream to the peer)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import SERVER, Lab
from trivpn.runtime.link import FramedLink

DEAD = "198.18.0.66"

# CLIENT_BASE's own `remote` is ignored once blocks exist (OpenVPN builds the list from them)
TWO_BLOCKS = f"""<connection>
remote {DEAD} 1194 udp
connect-timeout 5
</connection>
<connection>
remote {SERVER[0]} {SERVER[1]} udp
</connection>
"""


def _events(lab: Lab, name: str) -> list[dict[str, object]]:
    return [e for e in lab.log.events() if e["event"] == name]


@pytest.mark.directive("connection", "connect-timeout", "server-poll-timeout")
async def test_client_leaves_a_dead_block_after_its_connect_timeout_and_uses_the_next(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, TWO_BLOCKS)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        started = trio.current_time()
        await lab.wait_for(lab.tunnel_up, 60)
        assert 5 <= trio.current_time() - started < 7  # connect-timeout 5, no retry pause
        await lab.roundtrip(1)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    polls = _events(lab, "server_poll_timeout")
    assert [p["remote"] for p in polls] == [f"{DEAD}:1194"]
    assert str(_events(lab, "link_open")[-1]["peer"]).startswith(SERVER[0])


@pytest.mark.directive("connect-retry-max")
async def test_connect_retry_max_exits_1_after_every_remote_failed_that_often(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    # connect-timeout and connect-retry before the blocks are their defaults
    extra = ("connect-timeout 2\nconnect-retry 1\nconnect-retry-max 2\n"
             f"<connection>\nremote {DEAD} 1194\n</connection>\n"
             f"<connection>\nremote {DEAD} 1195\n</connection>\n")
    lab = Lab.create(tmp_path, extra)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 60)
        nursery.cancel_scope.cancel()
    assert lab.exit_code == 1
    assert len(_events(lab, "link_open")) == 4  # 2 profiles x connect-retry-max 2
    final = _events(lab, "connect_retry_max")
    assert final and final[0]["detail"] == ("All connections have been connect-retry-max (2) "
                                            "times unsuccessful, exiting")


@pytest.mark.directive("connect-retry-max")
async def test_without_connect_retry_max_the_client_keeps_trying(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, f"connect-timeout 2\nconnect-retry 1\n"
                               f"<connection>\nremote {DEAD} 1194\n</connection>\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: len(_events(lab, "link_open")) >= 8, 120)
        assert lab.exit_code is None
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.directive("remote-random-hostname")
async def test_remote_random_hostname_prefixes_a_fresh_random_label_per_lookup(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "remote-random-hostname\nconnect-timeout 2\nconnect-retry 1\n"
                               "connect-retry-max 3\n<connection>\nremote vpn.example.test "
                               "1194\n</connection>\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 60)
        nursery.cancel_scope.cancel()
    assert len(lab.host.lookups) == 3
    assert all(re.fullmatch(r"[0-9a-f]{12}\.vpn\.example\.test", n) for n in lab.host.lookups)
    assert len(set(lab.host.lookups)) == 3


async def test_remote_random_hostname_leaves_numeric_addresses_alone(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "remote-random-hostname\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert lab.host.lookups == [SERVER[0]]


@pytest.mark.directive("persist-remote-ip")
@pytest.mark.parametrize("persist", [True, False])
async def test_persist_remote_ip_resolves_once_across_restarts(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, persist: bool):
    lab = Lab.create(tmp_path, ("persist-remote-ip\n" if persist else "")
                     + "connect-timeout 2\nconnect-retry 1\nconnect-retry-max 3\n"
                     "<connection>\nremote dead.example.test 1194\n</connection>\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 60)
        nursery.cancel_scope.cancel()
    assert len(_events(lab, "link_open")) == 3
    assert len(lab.host.lookups) == (1 if persist else 3)


@pytest.mark.directive("route-metric")
async def test_route_metric_is_the_metric_of_routes_without_one(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "route-metric 42\nroute 198.18.9.0 255.255.255.0\n"
                               "route 198.18.10.0 255.255.255.0 vpn_gateway 7\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    routes = lab.host.tunnels[0].plan.routes
    metrics = {route.destination: route.metric for route in routes}
    assert metrics["198.18.9.0/24"] == 42
    assert metrics["198.18.10.0/24"] == 7


@pytest.mark.directive("route-delay")
async def test_route_delay_adds_the_routes_that_many_seconds_after_the_push(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "route-delay 5\nroute 198.18.9.0 255.255.255.0\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        up = trio.current_time()
        tunnel = lab.host.tunnels[0]
        assert not tunnel.plan.routes
        assert tunnel.plan.addresses  # the device itself is configured at once
        await lab.roundtrip(1)  # traffic flows before the routes exist
        await lab.wait_for(lambda: bool(tunnel.plan.routes), 10)
        assert 4.9 <= trio.current_time() - up <= 5.2
        assert "198.18.9.0/24" in {route.destination for route in tunnel.plan.routes}
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()


# --- proxies ------------------------------------------------------------------------------

PROXY = ("198.18.0.80", 3128)


async def _http_proxy(lab: Lab, channel: trio.MemoryReceiveChannel[trio.abc.Stream],
                      seen: list[bytes], status: bytes,
                      peer: trio.MemorySendChannel[FramedLink]) -> None:
    """An HTTP proxy double: reads the CONNECT header, answers ``status``; on 200 the
    stream becomes the peer's TCP connection."""
    async for stream in channel:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += await stream.receive_some(1)
        seen.append(head)
        await stream.send_all(b"HTTP/1.0 " + status + b"\r\nProxy-agent: double\r\n\r\n")
        if status.startswith(b"200"):
            await peer.send(FramedLink(stream, peer=("198.18.0.2", 40000)))
        else:
            await stream.aclose()


@pytest.mark.directive("http-proxy", "http-proxy-option")
async def test_http_proxy_connects_with_basic_auth_and_carries_the_tunnel(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "proxy-auth.txt").write_text("alice\nwonder land\n")
    lab = Lab.create(tmp_path, f"http-proxy {PROXY[0]} {PROXY[1]} proxy-auth.txt basic\n"
                               "http-proxy-option AGENT trivpn-test\n", proto="tcp-client")
    seen: list[bytes] = []
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, peer_recv = trio.open_memory_channel[FramedLink](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_http_proxy, lab, accept_recv, seen, b"200 Connection established",
                           peer_send)
        nursery.start_soon(lab.peer.serve_tcp, peer_recv)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    request = seen[0].decode()
    assert request.startswith(f"CONNECT {SERVER[0]}:{SERVER[1]} HTTP/1.0\r\n")
    assert "User-Agent: trivpn-test\r\n" in request
    assert "Proxy-Authorization: Basic YWxpY2U6d29uZGVyIGxhbmQ=\r\n" in request  # alice:...
    # the tunnel's bypass route (redirect-gateway) would point at the proxy
    assert lab.log.events()  # and no password in the log
    assert "wonder land" not in lab.log.stream.getvalue()


@pytest.mark.directive("http-proxy", "http-proxy-user-pass")
async def test_http_proxy_auto_retries_with_credentials_after_407(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, f"http-proxy {PROXY[0]} {PROXY[1]} auto\n"
                               "<http-proxy-user-pass>\nbob\npw\n</http-proxy-user-pass>\n",
                     proto="tcp-client")
    seen: list[bytes] = []
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, peer_recv = trio.open_memory_channel[FramedLink](4)

    async def proxy() -> None:
        async for stream in accept_recv:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += await stream.receive_some(1)
            seen.append(head)
            if b"Proxy-Authorization" not in head:
                await stream.send_all(b"HTTP/1.0 407 Proxy Authentication Required\r\n"
                                      b"Proxy-Authenticate: Basic realm=\"x\"\r\n\r\n")
                await stream.aclose()
                continue
            await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\n")
            await peer_send.send(FramedLink(stream))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        nursery.start_soon(lab.peer.serve_tcp, peer_recv)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert len(seen) == 2
    assert b"Proxy-Authorization: Basic Ym9iOnB3\r\n" in seen[1]


@pytest.mark.directive("http-proxy")
async def test_http_proxy_refusal_is_logged_and_the_next_profile_is_tried(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "connect-retry 1\nconnect-retry-max 1\n"
                               f"http-proxy {PROXY[0]} {PROXY[1]}\n", proto="tcp-client")
    seen: list[bytes] = []
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, _ = trio.open_memory_channel[FramedLink](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_http_proxy, lab, accept_recv, seen, b"403 Forbidden", peer_send)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 30)
        nursery.cancel_scope.cancel()
    assert lab.exit_code == 1
    failed = _events(lab, "proxy_failed")
    assert failed and "403 Forbidden" in str(failed[0]["detail"])


@pytest.mark.directive("socks-proxy")
async def test_socks_proxy_tcp_connect_with_username_password(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "socks.txt").write_text("carol\nsecret\n")
    lab = Lab.create(tmp_path, f"socks-proxy {PROXY[0]} {PROXY[1]} socks.txt\n",
                     proto="tcp-client")
    seen: list[bytes] = []
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, peer_recv = trio.open_memory_channel[FramedLink](4)

    async def proxy() -> None:
        async for stream in accept_recv:
            async def read(n: int, stream: trio.abc.Stream = stream) -> bytes:
                data = b""
                while len(data) < n:
                    data += await stream.receive_some(n - len(data))
                return data
            seen.append(await read(3))
            await stream.send_all(b"\x05\x02")
            head = await read(2)
            user = await read(head[1])
            plen = await read(1)
            seen.append(head + user + plen + await read(plen[0]))
            await stream.send_all(b"\x01\x00")
            head = await read(5)
            seen.append(head + await read(head[4] + 2))
            await stream.send_all(bytes([5, 0, 0, 1, 198, 18, 0, 80, 0x0c, 0x38]))
            await peer_send.send(FramedLink(stream))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        nursery.start_soon(lab.peer.serve_tcp, peer_recv)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert seen[0] == b"\x05\x01\x02"
    assert seen[1] == b"\x01\x05carol\x06secret"
    assert seen[2] == b"\x05\x01\x00\x03\x0a198.18.0.1\x04\xaa"
