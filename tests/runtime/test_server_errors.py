"""A bug triggered by one peer costs one traceback per minute, not one per packet; link-local
IPv6 sources (with a scope id) are served like any other address."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from tests.runtime.test_server_admission import _client, _complete_cookie, _server
from trivpn.protocol.gateway import address_bytes
from trivpn.runtime.server import ERROR_LOG_INTERVAL
from trivpn.runtime.serverpeer import format_address


async def test_a_bug_hit_10000_times_logs_one_traceback_and_a_count(
        autojump_clock: trio.testing.MockClock):
    with capture_logs() as logs:
        server, _ = _server("")

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("bug")

        server.udp_transport.other = broken  # type: ignore[method-assign]
        batch = [(b"\x38garbage", ("198.18.0.2", 40000 + n % 50)) for n in range(10_000)]
        server.udp_transport.from_link(batch, trio.current_time())
        tracebacks = [e for e in logs if e["event"] == "packet_error"]
        assert len(tracebacks) == 1 and tracebacks[0]["exc_info"] is True
        assert server.errors.totals["packet_error"] == 10_000

        await trio.sleep(ERROR_LOG_INTERVAL)
        server.errors.flush(trio.current_time())
        (summary,) = [e for e in logs if e["event"] == "error_repeated"]
        assert summary["event_name"] == "packet_error" and summary["count"] == 9_999
        assert summary["error"] == "RuntimeError"

        # a new minute: a new traceback
        server.udp_transport.from_link(batch[:1], trio.current_time())
        assert len([e for e in logs if e["event"] == "packet_error"]) == 2


def test_rate_limited_log_keeps_different_bugs_apart():
    from trivpn.logging import RateLimitedLog

    with capture_logs() as logs:
        errors = RateLimitedLog(structlog.get_logger(), interval=60.0)
        for n in range(100):
            for exc in (ValueError("a"), KeyError("b")):
                try:
                    raise exc
                except Exception:
                    errors.exception("peer_error", n * 0.1)
    assert [e["event"] for e in logs] == ["peer_error", "peer_error"]


LINK_LOCAL = ("fe80::2%eth7", 40000, 0, 7)


def test_a_scoped_ipv6_source_gets_a_cookie_and_a_readable_label():
    assert format_address(LINK_LOCAL) == "[fe80::2%eth7]:40000"
    index, name = socket.if_nameindex()[0]
    # recvfrom gives the zone only as the scope id
    assert format_address(("fe80::2", 40000, 0, index)) == f"[fe80::2%{name}]:40000"
    assert format_address(("2001:2::2", 40000, 0, 0)) == "[2001:2::2]:40000"
    other_scope = ("fe80::2%eth8", 40000, 0, 8)
    assert address_bytes(LINK_LOCAL) != address_bytes(other_scope)
    assert address_bytes(("::ffff:198.18.0.2", 1, 0, 0)) != address_bytes(LINK_LOCAL)


@pytest.mark.parametrize("address", [LINK_LOCAL, ("2001:2::2", 40000, 0, 0),
                                     ("::ffff:198.18.0.2", 40000, 0, 0)])
async def test_a_client_from_a_dual_stack_socket_address_is_admitted(address: Any):
    server, link = _server("")
    client, reset = _client(0.0)
    server.udp_transport.other(None, reset, address, 0.0, [], to_device=[])
    assert len(link.to(address)) == 1
    _complete_cookie(server, link, client, address, 0.0)
    peer = server.table.by_address[address]
    assert peer.label == format_address(address)
