"""``resolv-retry``: how often a client looks an unresolvable ``remote`` name up, how far apart,
and what it does when every lookup failed (OpenVPN 2.6, ``socket.c`` ``openvpn_getaddrinfo``).

The client runs for real on trio's MockClock; a fake resolver (trio's custom hostname resolver
hook) answers the lookups and records when they came. No DNS query leaves the process.
tests/interop/test_resolv_retry_vs_openvpn.py compares the same behaviour with the real
openvpn binary.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.interop.openvpn import write_pki
from trivpn.config import load_config
from trivpn.logging import configure_logging, get_logger
from trivpn.runtime.client import Client
from trivpn.runtime.setup import session_config

pytestmark = pytest.mark.directive("resolv-retry")


class FakeResolver(trio.abc.HostnameResolver):
    """Fails every lookup (EAI_AGAIN, as with an unreachable name server) except for names in
    ``answers`` once they were asked ``fail_first`` times."""

    def __init__(self, answers: dict[str, str] | None = None, fail_first: int = 0) -> None:
        self.answers = answers or {}
        self.fail_first = fail_first
        self.lookups: list[tuple[float, str]] = []

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None,
                          family: int = 0, type: int = 0, proto: int = 0,
                          flags: int = 0) -> list[Any]:
        # The real resolver runs in a thread: the lookup takes a few scheduling rounds, in
        # which the client's other tasks (its signal watcher) start. Two rounds guarantee it.
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append((trio.current_time(), name))
        asked = sum(1 for _, n in self.lookups if n == name)
        if name in self.answers and asked > self.fail_first:
            port_no = int(port.decode() if isinstance(port, bytes) else port or 0)
            return [(socket.AF_INET, type or socket.SOCK_DGRAM, 0, "",
                     (self.answers[name], port_no))]
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        raise NotImplementedError


def _events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    return [e for e in events if e["event"] == name]


async def _run_client(tmp_path: Path, extra: str, resolver: FakeResolver,
                      stop_at: float = 60.0,
                      remotes: tuple[str, ...] = ("nohost-a.invalid",),
                      ) -> tuple[int, float, io.StringIO]:
    """Run a client until it exits or a stop at ``stop_at`` (mock) seconds; (exit code, the
    time it ended, its JSON log)."""
    write_pki(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text("client\ndev tun\nca ca.crt\ncert client.crt\nkey client.key\n"
                    + "".join(f"remote {host} 1194\n" for host in remotes) + extra)
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    options = load_config(conf)
    client = Client(options, get_logger(), session_config(options, unix_time_offset=0.0), None)
    trio.socket.set_custom_hostname_resolver(resolver)
    start = trio.current_time()
    code = -1
    async with trio.open_nursery() as nursery:
        async def stopper() -> None:
            await trio.sleep(stop_at)
            client.stop.set()
        nursery.start_soon(stopper)
        code = await client.run()
        nursery.cancel_scope.cancel()
    return code, trio.current_time() - start, stream


def _times(resolver: FakeResolver, start: float = 0.0) -> list[float]:
    return [round(t - start, 3) for t, _ in resolver.lookups]


async def test_resolv_retry_0_exits_1_after_a_single_failed_lookup(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # openvpn: "RESOLVE: Cannot resolve host address: ... (I would have retried this name
    # query if you had specified the --resolv-retry option.)", "Exiting due to fatal error", 1
    resolver = FakeResolver()
    code, ended, log = await _run_client(tmp_path, "resolv-retry 0\n", resolver)
    assert code == 1
    assert ended == 0
    assert len(resolver.lookups) == 1
    [failed] = _events(log, "resolve_failed")
    assert (failed["host"], failed["attempts_left"], failed["action"]) == (
        "nohost-a.invalid", 0, "exit")
    assert _events(log, "exiting")[-1]["reason"] == "resolve_failed"


async def test_resolv_retry_12_retries_the_lookup_every_5s_then_restarts(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # 1 + (12 + 4) // 5 = 4 lookups per attempt: two at once, then 5 s apart; then the
    # connect-retry pause (1 s) and the same again; never an exit
    resolver = FakeResolver()
    t0 = trio.current_time()
    code, _, log = await _run_client(tmp_path, "resolv-retry 12\n", resolver, stop_at=21.5)
    assert code == 0
    assert _times(resolver, t0) == [0, 0, 5, 10, 11, 11, 16, 21]
    failed = _events(log, "resolve_failed")
    assert [(e["attempt"], e["attempts_left"], e["action"]) for e in failed[:4]] == [
        (1, 3, "retry"), (2, 2, "retry"), (3, 1, "retry"), (4, 0, "reconnect")]
    assert [e["reason"] for e in _events(log, "reconnecting")] == ["resolve_failed"] * 2


async def test_resolv_retry_infinite_is_two_lookups_per_attempt_and_restarts_forever(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # "infinite" (also the default) retries by restarting: per attempt two lookups, then the
    # connect-retry pause with its back-off (1 s four times, then 2, 4, 8 from a fresh start)
    for extra in ("resolv-retry infinite\n", ""):
        resolver = FakeResolver()
        t0 = trio.current_time()
        code, _, log = await _run_client(tmp_path, extra, resolver, stop_at=20)
        assert code == 0
        assert _times(resolver, t0) == [t for t in (0, 1, 2, 3, 4, 6, 10, 18) for _ in "12"]
        failed = _events(log, "resolve_failed")
        assert [e["action"] for e in failed[:2]] == ["retry", "reconnect"]
        assert [e["attempts_left"] for e in failed[:2]] == [1, 0]


async def test_resolv_retry_with_two_remotes_moves_on_to_the_next_remote(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    resolver = FakeResolver()
    t0 = trio.current_time()
    code, _, _ = await _run_client(tmp_path, "resolv-retry 5\n", resolver, stop_at=3.5,
                                   remotes=("nohost-a.invalid", "nohost-b.invalid"))
    assert code == 0
    assert resolver.lookups == [(t0 + t, host) for t, host in [
        (0, "nohost-a.invalid"), (0, "nohost-a.invalid"),
        (1, "nohost-b.invalid"), (1, "nohost-b.invalid"),
        (2, "nohost-a.invalid"), (2, "nohost-a.invalid"),
        (3, "nohost-b.invalid"), (3, "nohost-b.invalid")]]


async def test_resolv_retry_0_exits_even_when_another_remote_would_resolve(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # openvpn: the failed lookup with resolv-retry 0 is fatal (M_FATAL), the second remote is
    # never tried
    resolver = FakeResolver({"nohost-b.invalid": "127.0.0.1"})
    code, _, _ = await _run_client(tmp_path, "resolv-retry 0\n", resolver,
                                   remotes=("nohost-a.invalid", "nohost-b.invalid"))
    assert code == 1
    assert [host for _, host in resolver.lookups] == ["nohost-a.invalid"]


async def test_a_name_that_resolves_on_a_retry_is_used_for_the_link(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    resolver = FakeResolver({"nohost-a.invalid": "127.0.0.1"}, fail_first=2)
    t0 = trio.current_time()
    code, _, log = await _run_client(tmp_path, "resolv-retry 12\n", resolver, stop_at=6)
    assert code == 0
    assert _times(resolver, t0) == [0, 0, 5]
    assert [e["action"] for e in _events(log, "resolve_failed")] == ["retry", "retry"]
    assert _events(log, "link_open")[0]["peer"] == "127.0.0.1:1194"
    assert not _events(log, "reconnecting")


async def test_a_stop_signal_ends_the_wait_between_lookups(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    resolver = FakeResolver()
    code, ended, log = await _run_client(tmp_path, "resolv-retry 60\n", resolver, stop_at=7)
    assert code == 0
    assert ended == 7
    assert len(resolver.lookups) == 3  # at 0, 0 and 5; the stop at 7 ends the wait for 10
    assert _events(log, "exiting")[-1]["reason"] == "signal"
