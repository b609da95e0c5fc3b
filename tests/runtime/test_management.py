"""The management interface subset: answers as OpenVPN's management-notes.txt documents them.

A fake runtime stands in for the server (its answers are canned); what is tested here is the
protocol: banner, password prompt, command dispatch, SUCCESS:/ERROR: texts, END terminators and
real-time notifications. The real server's status/kill are covered in tests/interop.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.logging import get_logger
from trivpn.runtime.management import ManagementServer, _Connection
from trivpn.runtime.stats import LogHistory, OperatorState

BANNER = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info"


class FakeRuntime:
    is_server = True

    def __init__(self) -> None:
        self.killed: list[str] = []
        self.versions: list[int] = []

    def status_lines(self, version: int) -> list[str]:
        self.versions.append(version)
        return ["TITLE,fake", "END"]

    def kill(self, target: str) -> str:
        self.killed.append(target)
        return f"SUCCESS: common name '{target}' found, 1 client(s) killed"

    def bytecount_lines(self) -> list[str]:
        return [">BYTECOUNT_CLI:0,100,200"]


class Client:
    """A management client over the unix socket: line-oriented, CRLF-terminated."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> str:
        with trio.fail_after(5):
            while b"\r\n" not in self.buffer:
                chunk = await self.stream.receive_some(4096)
                if not chunk:
                    raise EOFError(self.buffer)
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        return raw.decode()

    async def prompt(self) -> str:
        with trio.fail_after(5):
            while not self.buffer.endswith(b":"):
                self.buffer += await self.stream.receive_some(4096)
        text, self.buffer = self.buffer.decode(), b""
        return text

    async def send(self, command: str) -> None:
        await self.stream.send_all(command.encode() + b"\n")

    async def until_end(self) -> list[str]:
        lines = []
        while (line := await self.line()) != "END":
            lines.append(line)
        return lines


class Setup:
    def __init__(self, path: Path, history: LogHistory, state: OperatorState,
                 runtime: FakeRuntime, signals: list[signal.Signals],
                 server: ManagementServer | None = None) -> None:
        self.server = server
        self.path = path
        self.history = history
        self.state = state
        self.runtime = runtime
        self.signals = signals

    async def connect(self) -> Client:
        return Client(await trio.open_unix_socket(str(self.path)))


async def start(nursery: trio.Nursery, tmp_path: Path, password: str | None = None) -> Setup:
    path = tmp_path / "mgmt.sock"
    history, state = LogHistory(), OperatorState()
    runtime = FakeRuntime()
    signals: list[signal.Signals] = []
    server = ManagementServer(runtime, history, state, get_logger(), host=str(path), port=None,
                              unix=True, password=password, status_version=2,
                              send_signal=signals.append)
    await nursery.start(server.serve)
    return Setup(path, history, state, runtime, signals, server)


@pytest.fixture
async def setup(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Setup]:
    yield await start(nursery, tmp_path)


async def test_connect_greets_with_the_version_5_banner(setup: Setup):
    client = await setup.connect()
    assert await client.line() == BANNER


async def test_help_lists_commands_and_ends_with_end(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("help")
    lines = await client.until_end()
    assert lines[0].startswith("Management Interface for ")
    for command in ("bytecount n", "kill cn", "log [on|off]", "state [on|off]", "status [n]"):
        assert any(line.startswith(command) for line in lines), command


async def test_unknown_command_is_an_error(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("frobnicate")
    assert await client.line() == "ERROR: unknown command, enter 'help' for more options"


@pytest.mark.parametrize(("command", "version"), [("status", 2), ("status 3", 3),
                                                  ("status 1", 1)])
async def test_status_uses_the_requested_or_configured_version(setup: Setup, command: str,
                                                                version: int):
    client = await setup.connect()
    await client.line()
    await client.send(command)
    assert await client.until_end() == ["TITLE,fake"]
    assert setup.runtime.versions == [version]


async def test_kill_reports_the_runtime_answer(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("kill client1")
    assert await client.line() == "SUCCESS: common name 'client1' found, 1 client(s) killed"
    assert setup.runtime.killed == ["client1"]


async def test_kill_without_argument_needs_a_parameter(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("kill")
    assert await client.line() == "ERROR: the 'kill' command requires 1 parameter"


async def test_pid_and_version(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("pid")
    assert await client.line() == f"SUCCESS: pid={os.getpid()}"
    await client.send("version")
    lines = await client.until_end()
    assert lines[0].startswith("OpenVPN Version: trivpn ")
    assert lines[1] == "Management Version: 5"


async def test_state_shows_the_current_state_then_end(setup: Setup):
    client = await setup.connect()
    await client.line()
    setup.state.set_state("CONNECTED", "SUCCESS")
    await client.send("state")
    lines = await client.until_end()
    assert len(lines) == 1
    fields = lines[0].split(",")
    assert fields[1:3] == ["CONNECTED", "SUCCESS"] and fields[0].isdigit()


async def test_state_on_sends_real_time_state_lines(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("state on")
    assert await client.line() == "SUCCESS: real-time state notification set to ON"
    setup.state.set_state("EXITING", "SIGTERM")
    assert (await client.line()).split(",")[1:3] == ["EXITING", "SIGTERM"]


async def test_log_on_streams_events_as_log_lines(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("log on")
    assert await client.line() == "SUCCESS: real-time log notification set to ON"
    setup.history(None, "warning", {"event": "route_failed", "level": "warning", "detail": "x"})
    line = await client.line()
    assert line.startswith(">LOG:")
    when, flags, text = line[len(">LOG:"):].split(",", 2)
    assert when.isdigit() and flags == "W" and text == "route_failed detail=x"


async def test_log_all_replays_history_then_end(setup: Setup):
    setup.history(None, "info", {"event": "peer_connected", "level": "info", "cn": "client1"})
    client = await setup.connect()
    await client.line()
    await client.send("log all")
    lines = await client.until_end()
    assert lines[-1].endswith(",I,peer_connected cn=client1")


async def test_bytecount_sends_periodic_counts(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("bytecount 1")
    assert await client.line() == "SUCCESS: bytecount interval changed"
    assert await client.line() == ">BYTECOUNT_CLI:0,100,200"


async def test_signal_sigterm_is_thrown(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("signal SIGTERM")
    assert await client.line() == "SUCCESS: signal SIGTERM thrown"
    assert setup.signals == [signal.SIGTERM]
    await client.send("signal SIGFOO")
    assert await client.line() == "ERROR: signal 'SIGFOO' is not a known signal type"


async def test_exit_closes_the_session(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("exit")
    with trio.fail_after(5):
        assert await client.stream.receive_some(100) == b""


async def test_password_is_asked_before_anything_else(nursery: trio.Nursery, tmp_path: Path):
    setup = await start(nursery, tmp_path, password="s3cret")
    client = await setup.connect()
    assert await client.prompt() == "ENTER PASSWORD:"
    await client.send("wrong")
    assert await client.line() == "ERROR: bad password"
    assert await client.prompt() == "ENTER PASSWORD:"
    await client.send("s3cret")
    assert await client.line() == "SUCCESS: password is correct"
    assert await client.line() == BANNER


async def test_three_bad_passwords_close_the_connection(nursery: trio.Nursery,
                                                        tmp_path: Path):
    setup = await start(nursery, tmp_path, password="s3cret")
    client = await setup.connect()
    for _ in range(3):
        await client.prompt()
        await client.send("nope")
        assert await client.line() == "ERROR: bad password"
    with trio.fail_after(5):
        assert await client.stream.receive_some(100) == b""


# -- robustness: no input line ends the process ----------------------------------------------

class BrokenRuntime(FakeRuntime):
    def kill(self, target: str) -> str:
        raise RuntimeError("a bug in kill")


def connection(runtime: FakeRuntime | None = None) -> _Connection:
    """A management connection without a socket: lines in, answers from its output queue."""
    server = ManagementServer(runtime or FakeRuntime(), LogHistory(), OperatorState(),
                              get_logger(), host="unused", port=None, unix=True,
                              send_signal=lambda s: None)
    return _Connection(server, None)  # type: ignore[arg-type]


def answers(conn: _Connection) -> list[str]:
    out = []
    while True:
        try:
            out.append(conn.receive.receive_nowait())
        except trio.WouldBlock:
            return out


@pytest.mark.directive("management")
async def test_bytecount_with_hundreds_of_zeros_is_refused_and_the_session_lives(setup: Setup):
    client = await setup.connect()
    await client.line()
    await client.send("bytecount 1" + "0" * 400)
    assert (await client.line()).startswith("ERROR: bytecount parameter must be a number")
    await client.send("pid")
    assert (await client.line()).startswith("SUCCESS: pid=")


@pytest.mark.directive("management")
@pytest.mark.parametrize("number", ["\u00b2", "\u0663", "\uff13", "\u0661" * 3])
async def test_non_ascii_digits_are_not_numbers(setup: Setup, number: str):
    """'²'.isdigit() is true but int('²') raises; Arabic-Indic and full-width digits are
    digits to int() but not to OpenVPN's atoi()."""
    client = await setup.connect()
    await client.line()
    await client.send(f"status {number}")
    assert await client.until_end() == ["TITLE,fake"]
    assert setup.runtime.versions == [2]  # the configured version, as for 'status 0'
    await client.send(f"bytecount {number}")
    assert (await client.line()).startswith("ERROR: bytecount parameter must be a number")
    await client.send(f"log {number}")
    assert (await client.line()).startswith("ERROR: log parameter must be")


def test_a_command_that_fails_is_answered_error_and_logged_once():
    conn = connection(BrokenRuntime())
    for _ in range(50):
        conn.handle_line("kill client1")
    assert answers(conn) == ["ERROR: kill command failed\r\n"] * 50
    assert conn.server.errors.totals["management_command_failed"] == 50
    assert not conn.halt


LINE = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
COMMANDS = ("help", "status", "state", "log", "kill", "bytecount", "version", "pid", "signal",
            "frobnicate")
NUMBER_LIKE = st.one_of(st.integers(-10**30, 10**400).map(str),
                        st.text(alphabet="0123456789\u00b2\u0663\uff13-+", max_size=500))


@given(st.one_of(LINE, st.tuples(st.sampled_from(COMMANDS),
                                 st.lists(st.one_of(NUMBER_LIKE, LINE), max_size=3))
                 .map(lambda c: " ".join([c[0], *c[1]]))))
@settings(max_examples=400, deadline=None)
def test_every_line_gets_an_answer_and_nothing_raises(line: str):
    conn = connection()
    conn.handle_line(line)
    out = answers(conn)
    words = line.split()
    if words and words[0] not in ("exit", "quit"):
        assert out, line
        assert all(text.endswith("\r\n") for text in out)
    assert 0 <= conn.bytecount <= 86400
    assert conn.server.errors.totals["management_command_failed"] == 0


@given(st.binary(max_size=300))
@settings(max_examples=60, deadline=None)
def test_arbitrary_bytes_on_the_socket_never_end_the_server(data: bytes):
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        conn = connection()
        conn.stream = right
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await left.send_all(data + b"\nexit\n")
            with trio.fail_after(5):
                while await left.receive_some(65536):
                    pass
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- limits -------------------------------------------------------------------------------

def memory_client(nursery: trio.Nursery, server: ManagementServer) -> Client:
    """A client connected to ``server`` through an in-memory stream (no socket)."""
    left, right = trio.testing.memory_stream_pair()
    nursery.start_soon(server._handle, right)  # type: ignore[arg-type]
    return Client(left)  # type: ignore[arg-type]


@pytest.mark.directive("management")
async def test_a_connection_without_the_password_is_closed_after_the_timeout(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock):
    server = ManagementServer(FakeRuntime(), LogHistory(), OperatorState(),
                              get_logger(), host="unused",
                              port=None, unix=False, password="s3cret", auth_timeout=30.0)
    client = memory_client(nursery, server)
    assert await client.prompt() == "ENTER PASSWORD:"
    start = trio.current_time()
    await client.send("wrong")  # typing does not extend the deadline
    assert await client.line() == "ERROR: bad password"
    with trio.fail_after(60):
        while await client.stream.receive_some(100):
            pass
    assert 30.0 <= trio.current_time() - start < 31.0
    await trio.testing.wait_all_tasks_blocked()
    assert server.active == 0


@pytest.mark.directive("management")
async def test_an_authenticated_connection_has_no_timeout(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock):
    server = ManagementServer(FakeRuntime(), LogHistory(), OperatorState(),
                              get_logger(), host="unused",
                              port=None, unix=False, password="s3cret", auth_timeout=30.0)
    client = memory_client(nursery, server)
    await client.prompt()
    await client.send("s3cret")
    assert await client.line() == "SUCCESS: password is correct"
    await client.line()
    await trio.sleep(3600)
    await client.send("pid")
    assert (await client.line()).startswith("SUCCESS: pid=")


@pytest.mark.directive("management")
async def test_connections_beyond_the_cap_are_told_and_closed(nursery: trio.Nursery,
                                                              tmp_path: Path):
    path = tmp_path / "mgmt.sock"
    server = ManagementServer(FakeRuntime(), LogHistory(), OperatorState(),
                              get_logger(), host=str(path),
                              port=None, unix=True, max_connections=2)
    await nursery.start(server.serve)
    first = Client(await trio.open_unix_socket(str(path)))
    second = Client(await trio.open_unix_socket(str(path)))
    assert await first.line() == BANNER and await second.line() == BANNER
    third = Client(await trio.open_unix_socket(str(path)))
    assert await third.line() == ("ERROR: too many management connections (2), "
                                  "try again later")
    with trio.fail_after(5):
        assert await third.stream.receive_some(100) == b""
    await first.send("quit")
    with trio.fail_after(5):
        while server.active > 1:
            await trio.sleep(0.01)
    fourth = Client(await trio.open_unix_socket(str(path)))
    assert await fourth.line() == BANNER


@pytest.mark.directive("management-client-user", "management-client-group")
@pytest.mark.parametrize(("uid", "gid", "allowed"), [(0, None, True), (65534, None, False),
                                                     (None, 0, True), (None, 65534, False),
                                                     (0, 65534, False)])
async def test_management_client_user_and_group_check_the_unix_peer(
        nursery: trio.Nursery, tmp_path: Path, uid: int | None, gid: int | None, allowed: bool):
    from tests.conftest import require_root

    require_root()  # connects as root:root (CI: a failure, never a skip)
    assert os.getegid() == 0
    path = tmp_path / "mgmt.sock"
    server = ManagementServer(FakeRuntime(), LogHistory(), OperatorState(),
                              get_logger(), host=str(path),
                              port=None, unix=True, client_uid=uid, client_gid=gid)
    await nursery.start(server.serve)
    client = Client(await trio.open_unix_socket(str(path)))
    if allowed:
        assert await client.line() == BANNER
    else:
        with trio.fail_after(5):
            assert await client.stream.receive_some(100) == b""


@pytest.mark.directive("management")
async def test_the_unix_socket_gets_mode_0777_whatever_the_umask(nursery: trio.Nursery,
                                                                 tmp_path: Path):
    old = os.umask(0o077)
    try:
        setup = await start(nursery, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(setup.path.lstat().st_mode) == 0o777
    assert os.umask(old) == old  # the process umask is restored


@pytest.mark.directive("management-client-user", "management-client-group")
@pytest.mark.parametrize("management", ["", "management 127.0.0.1 7505 pw.txt\n"])
def test_management_client_user_needs_a_unix_socket(management: str):
    from tests.config.helpers import server
    from trivpn.config import ConfigError

    with pytest.raises(ConfigError, match="management unix socket"):
        server(management + "management-client-user nobody\n")
    options = server("management /run/m.sock unix\nmanagement-client-user nobody\n"
                     "management-client-group nogroup\n")
    assert (options.management_client_user, options.management_client_group) == (
        "nobody", "nogroup")


class BrokenCounters(FakeRuntime):
    def bytecount_lines(self) -> list[str]:
        raise RuntimeError("a bug in the byte counters")


async def test_a_bug_in_a_connection_task_closes_that_connection_only(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock):
    server = ManagementServer(BrokenCounters(), LogHistory(), OperatorState(),
                              get_logger(), host="unused",
                              port=None, unix=False)
    broken, healthy = memory_client(nursery, server), memory_client(nursery, server)
    assert await broken.line() == BANNER and await healthy.line() == BANNER
    await broken.send("bytecount 1")
    assert await broken.line() == "SUCCESS: bytecount interval changed"
    with trio.fail_after(10):
        while await broken.stream.receive_some(100):
            pass
    await trio.testing.wait_all_tasks_blocked()
    assert server.errors.totals["management_connection_failed"] == 1
    await healthy.send("pid")
    assert (await healthy.line()).startswith("SUCCESS: pid=")
