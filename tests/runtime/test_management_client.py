"""The management client of ``doctor --watch`` (trivpn/runtime/management_client.py) against
trivpn's own management interface (trivpn/runtime/management.py): password, greeting, and the
notifications the watcher turns on."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trivpn.diagnostics.watch import WatchEvent, watch
from trivpn.logging import get_logger
from trivpn.runtime.management import ManagementServer
from trivpn.runtime.management_client import (
    ManagementAddress,
    ManagementClientError,
    connect_management,
)
from trivpn.runtime.stats import LogHistory, OperatorState


class ClientRuntime:
    """Canned answers of a client runtime (status with OpenVPN's client statistics)."""

    is_server = False

    def status_lines(self, version: int) -> list[str]:
        return ["OpenVPN STATISTICS", "Updated,2026-12-04 14:00:00", "TCP/UDP read bytes,100",
                "Auth read bytes,100", "END"]

    def kill(self, target: str) -> str:
        return "ERROR: The 'kill' command is not supported by the current daemon mode"

    def bytecount_lines(self) -> list[str]:
        return [">BYTECOUNT:100,200"]


async def serve(nursery: trio.Nursery, tmp_path: Path, password: str | None = None
                ) -> tuple[ManagementServer, OperatorState, LogHistory]:
    state, history = OperatorState(), LogHistory()
    server = ManagementServer(ClientRuntime(), history, state, get_logger(),
                              host=str(tmp_path / "mgmt.sock"), port=None, unix=True,
                              password=password, send_signal=lambda s: None)
    await nursery.start(server.serve)
    return server, state, history


async def test_the_client_gives_the_password_from_the_file(nursery: trio.Nursery,
                                                           tmp_path: Path) -> None:
    await serve(nursery, tmp_path, password="s3cret")
    (tmp_path / "pw").write_text("s3cret\n")
    conn = await connect_management(ManagementAddress(str(tmp_path / "mgmt.sock"), None,
                                                      tmp_path / "pw"))
    await conn.send("pid")
    assert (await conn.read_line() or "").startswith("SUCCESS: pid=")
    await conn.aclose()


async def test_a_wrong_password_is_a_clear_error(nursery: trio.Nursery,
                                                 tmp_path: Path) -> None:
    await serve(nursery, tmp_path, password="s3cret")
    (tmp_path / "pw").write_text("guess\n")
    with pytest.raises(ManagementClientError, match="refused the password"):
        await connect_management(ManagementAddress(str(tmp_path / "mgmt.sock"), None,
                                                   tmp_path / "pw"))


async def test_a_password_prompt_without_a_password_file_is_a_clear_error(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    await serve(nursery, tmp_path, password="s3cret")
    with pytest.raises(ManagementClientError, match="asks for a password"):
        await connect_management(ManagementAddress(str(tmp_path / "mgmt.sock"), None))


async def test_the_watcher_sees_trivpns_state_and_log_notifications(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    _, state, history = await serve(nursery, tmp_path)
    events: list[WatchEvent] = []
    address = ManagementAddress(str(tmp_path / "mgmt.sock"), None)

    async def fault() -> None:
        while not any(e.id == "watch.attached" for e in events):
            await trio.sleep(0.01)
        await trio.sleep(0.2)  # 'state on' / 'log on' answered
        # what the runtime's log line goes through (trivpn/runtime/stats.py, LogHistory)
        history(None, "warning", {"event": "packet_dropped", "level": "warning",
                                  "reason": "bad_hmac", "count": 3, "total": 9})
        state.set_state("RECONNECTING", "ping_restart")

    nursery.start_soon(fault)
    outcome = await watch(address, events.append, interval=1, duration=1.5)
    ids = [e.id for e in events]
    assert "watch.reconnect.ping-restart" in ids
    assert "watch.drops.bad_hmac" in ids
    assert outcome.reason == "time" and outcome.worst == "warn"
