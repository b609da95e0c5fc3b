"""A bug in the runtime never leaves ``trivpn run`` hanging or silent: an unexpected exception
in a setup step or in a task the process cannot do without is one ``internal_error`` event,
the usual teardown (device closed, ``down``) and exit status 1, promptly; a bug while serving
one peer of a server drops that peer only (docs/events.md, docs/architecture.md).

The bugs are injected in-process (monkeypatched methods) into a real Server and real Clients
over the in-memory links and devices (tests/runtime/serverlab.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.runtime.serverlab import ServerLab
from trivpn.commands.run import run_supervised
from trivpn.config import ConfigError
from trivpn.logging import get_logger
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.poolpersist import PoolPersistence
from trivpn.runtime.server import Server
from trivpn.runtime.supervision import ERROR_TEXT_LIMIT, first_leaf, task_name

EXIT_BOUND = 5.0  # seconds (trio's clock, and the wall clock) from the bug to the exit


def _spy_down(server: Server) -> list[str]:
    """Record the signals ``down`` runs with (the real method still runs)."""
    calls: list[str] = []
    real = server.scripts.down

    async def down(signal: str) -> Any:
        calls.append(signal)
        return await real(signal)

    server.scripts.down = down  # type: ignore[method-assign]
    return calls


async def _server_exit(lab: ServerLab) -> int | None:
    started = time.monotonic()
    with trio.fail_after(EXIT_BOUND):
        await lab._server_done.wait()
    assert time.monotonic() - started < EXIT_BOUND
    return lab.server_exit


async def test_a_bug_in_a_server_setup_step_exits_1_with_internal_error_and_a_closed_device(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()

        def on_tunnel(info: object) -> None:
            raise NameError("name 'own6' is not defined")

        server.scripts.on_tunnel = on_tunnel  # type: ignore[method-assign]
        assert await _server_exit(lab) == 1
    [bug] = lab.server_events("internal_error")
    assert bug["task"] == "Server._device_scripts"
    assert bug["error_type"] == "NameError" and bug["error"] == "name 'own6' is not defined"
    assert str(bug["origin"]).endswith("test_supervision.py:" + str(
        on_tunnel.__code__.co_firstlineno + 1))
    assert "NameError" in str(bug["exception"])  # the traceback, for the developer
    assert lab.server_device.closed
    assert [e["status"] for e in lab.server_events("exiting")] == [1]


async def test_a_bug_in_a_long_running_server_task_stops_the_server_cleaned_up(
        tmp_path: Path, autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        downs = _spy_down(server)

        def tick(self: PoolPersistence, now: float) -> None:
            raise KeyError("lease")

        monkeypatch.setattr(PoolPersistence, "tick", tick)  # called by the housekeeping task
        assert await _server_exit(lab) == 1
    [bug] = lab.server_events("internal_error")
    assert bug["task"] == "Server._housekeeping" and bug["error_type"] == "KeyError"
    assert lab.server_device.closed
    assert downs == ["sigterm"]  # as on SIGTERM, once
    assert not server.connected
    assert [e["status"] for e in lab.server_events("exiting")] == [1]
    # the teardown comes after the event that says why
    names = [e["event"] for e in lab.log.events() if e.get("side") == "server"]
    assert names.index("internal_error") < names.index("exiting")


async def test_a_bug_in_one_peers_task_drops_that_peer_and_the_others_keep_working(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, "script-security 2\ntls-verify /bin/true\n") as lab:
        server = lab.start_server()

        async def tls_verify(env: object, peer: Any) -> tuple[bool, str]:
            if peer.common_name == "mallory":
                raise AttributeError("'NoneType' object has no attribute 'serial'")
            return True, ""

        server.scripts.tls_verify = tls_verify  # type: ignore[method-assign]
        bob = lab.start_client("bob")
        await lab.wait_for(bob.tunnel_up, 30)
        lab.start_client("mallory")
        await lab.wait_for(lambda: bool(lab.server_events("peer_error")), 30)
        await lab.client_to_server(bob, 1)
        await lab.server_to_client(bob, 2)
        assert [p.common_name for p in server.connected] == ["bob"]
        assert server.errors.totals["peer_error"] >= 1
        assert lab.server_exit is None  # still serving
        assert await lab.stop_server() == 0
    error = lab.server_events("peer_error")[0]
    assert error["task"] == "PeerLifecycle._tls_verify"
    assert "AttributeError" in str(error["error"])
    assert not lab.server_events("internal_error")
    dropped = [e for e in lab.server_events("peer_disconnected")
               if e["reason"] == "internal_error"]
    # mallory's address (its common name is set once tls-verify accepted it)
    assert dropped and all(str(e["peer"]).startswith("198.18.0.11:") for e in dropped)


async def test_a_bug_in_a_client_setup_step_exits_1_with_internal_error(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        lab.start_server()
        c = lab.start_client("alice")

        def start_privileged() -> None:
            raise TypeError("start() missing 1 required positional argument")

        c.client.scripts.start_privileged = start_privileged  # type: ignore[method-assign]
        with trio.fail_after(EXIT_BOUND):
            await c.done.wait()
        assert c.exit_code == 1
    [bug] = lab.client_events("internal_error")
    assert str(bug["task"]).endswith("start_privileged") and bug["error_type"] == "TypeError"
    [exiting] = lab.client_events("exiting")
    assert exiting["code"] == 1 and exiting["reason"] == "internal_error"


async def test_a_bug_in_a_client_task_exits_1_with_the_device_torn_down(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        tunnel = c.tunnel

        hits: list[int] = []

        def collect_tun_drops() -> None:
            hits.append(1)
            if len(hits) == 1:  # once: the connection's teardown calls it again
                raise ZeroDivisionError("division by zero")

        c.client.collect_tun_drops = collect_tun_drops  # type: ignore[method-assign]
        started = time.monotonic()
        with trio.fail_after(EXIT_BOUND):
            await c.done.wait()
        assert time.monotonic() - started < EXIT_BOUND
        assert c.exit_code == 1
    [bug] = lab.client_events("internal_error")
    assert bug["task"] == "Connection._drop_ticker"
    assert bug["error_type"] == "ZeroDivisionError"
    assert tunnel.closed and c.client.tunnel is None
    assert lab.client_events("tun_closed")


def test_a_bug_before_the_runtime_objects_exist_is_still_one_event_and_status_1():
    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    async def main() -> int:
        raise NameError("name 'options' is not defined")

    assert run_supervised(main, Log()) == 1
    [(event, fields)] = logged
    assert event == "internal_error" and str(fields["task"]).endswith("main")
    assert fields["error_type"] == "NameError"


def test_a_config_error_keeps_its_own_path():
    async def main() -> int:
        raise ConfigError("bad", Path("x.conf"))

    with pytest.raises(ConfigError):
        run_supervised(main, get_logger())


def test_the_failed_task_is_named_from_inside_nested_exception_groups():
    async def outer() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inner)

    async def inner() -> None:
        raise ValueError("x" * 1000)

    with pytest.raises(BaseExceptionGroup) as caught:
        trio.run(outer)
    assert isinstance(first_leaf(caught.value), ValueError)
    assert task_name(caught.value).endswith("inner")
    logged: list[dict[str, Any]] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            logged.append(fields)

    from trivpn.runtime.supervision import log_internal_error
    log_internal_error(Log(), caught.value, "inner")
    assert len(str(logged[0]["error"])) <= ERROR_TEXT_LIMIT + 3


async def test_a_setup_error_outside_the_setup_steps_is_setup_failed_not_a_bug(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()

        def load_auth() -> None:
            raise RuntimeSetupError("cannot read the auth file", "/nonexistent")

        server.lifecycle.load_auth = load_auth  # type: ignore[method-assign]
        assert await _server_exit(lab) == 1
    [failed] = lab.server_events("setup_failed")
    assert failed["what"] == "cannot read the auth file"
    assert not lab.server_events("internal_error")
