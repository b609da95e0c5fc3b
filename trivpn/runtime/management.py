"""A subset of OpenVPN's management interface (management-notes.txt, interface version 5).

``management 127.0.0.1 PORT [PWFILE]`` listens on that address only; ``management PATH unix``
on a unix socket (replaced if stale, removed at exit). Lines end with CRLF like OpenVPN's.

Commands: ``help``, ``status [1|2|3]``, ``state [on|off|all|N]``, ``log [on|off|all|N]``,
``kill CN`` / ``kill IP:PORT`` (server), ``bytecount N``, ``version``, ``pid``, ``signal
SIGTERM|SIGINT``, ``exit`` / ``quit``; with ``management-client-auth`` (server):
``client-auth CID KID`` (then config lines and ``END``), ``client-auth-nt CID KID``,
``client-deny CID KID "reason" ["client reason"]`` answering ``>CLIENT:CONNECT``; on a client
``remote ACCEPT|SKIP [N]|MOD HOST PORT`` and ``proxy NONE|HTTP HOST PORT [nct]|SOCKS HOST PORT``
answering ``>REMOTE:`` / ``>PROXY:`` (management-query-remote / -query-proxy).
With ``management-client`` trivpn connects to the address instead of listening, and exits when
that connection closes; ``disconnect_hooks`` serve management-signal and
management-forget-disconnect, :meth:`ManagementServer.up_down` management-up-down.
Answers use OpenVPN's ``SUCCESS:`` / ``ERROR:`` texts;
multi-line answers end with ``END``; real-time notifications start with ``>``. Up to
:data:`MAX_CONNECTIONS` clients may be connected at once (OpenVPN serves one and leaves the next
waiting in the listen backlog); each has its own notification settings. A connection that has
not given the password within :data:`AUTH_TIMEOUT` seconds is closed.

No input line can end the process: numbers are ASCII digits of bounded length (Python's
``int()`` would accept other scripts' digits and arbitrarily long strings), and a command that
fails anyway is answered ``ERROR: ...`` and logged (rate-limited), like any other error.

The unix socket is created the way OpenVPN's ``socket_bind_unix`` does it, under ``umask(0)``
(mode 0777: who may connect is decided by the directory's permissions, the password file and
``management-client-user``/``management-client-group``, which are checked on every accept with
the peer's credentials as OpenVPN's ``man_verify_unix_peer_uid_gid`` does).
"""

from __future__ import annotations

import contextlib
import hmac
import math
import os
import shlex
import signal
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import structlog
import trio

from trivpn import __version__
from trivpn.config.options import StaticChallenge
from trivpn.logging import RateLimitedLog
from trivpn.runtime.serverauth import MAX_CONFIG_LINES, ClientAuthBroker, ManagementAnswer
from trivpn.runtime.stats import LogHistory, LogRecord, OperatorState, StateRecord

Log = structlog.stdlib.BoundLogger

MANAGEMENT_VERSION = 5
PASSWORD_TRIES = 3
MAX_LINE = 4096
OUTPUT_QUEUE = 1000
MAX_CONNECTIONS = 8
"""Management clients served at once; one more is told so and closed."""
AUTH_TIMEOUT = 30.0
"""Seconds a connection may stay without giving the password."""
MAX_DIGITS = 9
"""Longest number accepted in a command (fits OpenVPN's ``int``, costs nothing to parse)."""
MAX_BYTECOUNT = 86400
CONNECT_TIMEOUT = 5.0
"""management-client: seconds to connect (manage.c, man_connect(): openvpn_connect(..., 5))."""
TITLE = f"trivpn {__version__} (OpenVPN 2.6 compatible)"

HELP = (
    f"Management Interface for {TITLE}",
    "Commands:",
    "bytecount n            : Show bytes in/out, update every n secs (0=off).",
    "client-auth CID KID    : Authenticate client-id/key-id CID/KID (MULTILINE)",
    "client-auth-nt CID KID : Authenticate client-id/key-id CID/KID",
    "client-deny CID KID R [CR] : Deny auth client-id/key-id CID/KID with log reason",
    "                             text R and optional client reason text CR",
    "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)",
    "exit|quit              : Close management session.",
    "help                   : Print this message.",
    "hold [on|off|release]  : Set/show hold flag to on/off state, or",
    "                         release current hold and start tunnel.",
    "kill cn                : Kill the client instance(s) having common name cn.",
    "kill IP:port           : Kill the client instance connecting from IP:port.",
    "log [on|off] [N|all]   : Turn on/off realtime log display",
    "                         + show last N lines or 'all' for entire history.",
    "password type p        : Enter password p for a queried OpenVPN password.",
    "pid                    : Show process ID of the current OpenVPN process.",
    "proxy TYPE HOST PORT [nct] : Provide proxy server host/port and flags in response",
    "                         to a >PROXY notification (TYPE = HTTP|SOCKS|NONE).",
    "remote type [host port] : Override remote directive, type=ACCEPT|MOD|SKIP.",
    "signal s               : Send signal s to daemon,",
    "                         s = SIGTERM|SIGINT.",
    "state [on|off] [N|all] : Like log, but show state history.",
    "status [n]             : Show current daemon status info using format #n.",
    "username type u        : Enter username u for a queried OpenVPN username.",
    "version                : Show current version of daemon.",
    "END",
)


class ManagedRuntime(Protocol):
    """What the management interface needs from a client or server runtime."""

    @property
    def is_server(self) -> bool: ...

    def status_lines(self, version: int) -> list[str]: ...

    def kill(self, target: str) -> str: ...

    def bytecount_lines(self) -> list[str]: ...


def parse_number(text: str) -> int | None:
    """A non-negative number of at most :data:`MAX_DIGITS` ASCII digits; None otherwise."""
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def split_command(line: str) -> list[str]:
    """Words of a command line; double-quoted words may hold spaces (``password "Auth"
    "a b"``), as OpenVPN's parse_line reads them. An unbalanced quote: plain words."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


class _Query:
    """A pending ``>PASSWORD:Need ...`` query (``username``/``password`` answer it)."""

    def __init__(self, kind: str, need_username: bool) -> None:
        self.kind = kind
        self.need_username = need_username
        self.username: str | None = None
        self.password: str | None = None
        self.done = trio.Event()

    def check(self) -> None:
        if self.password is not None and (self.username is not None or not self.need_username):
            self.done.set()


RH_HOST_LEN = 80
"""OpenVPN's limit on a ``remote MOD`` host (options.h, RH_HOST_LEN; the port's is 20)."""


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    """The answer to ``>REMOTE:HOST,PORT,PROTO`` (``management-query-remote``):
    ``remote ACCEPT``, ``remote SKIP [N]`` (go on N profiles, 1 by default) or ``remote MOD
    HOST PORT`` (this attempt goes to HOST PORT instead; init.c,
    management_callback_remote_cmd())."""

    action: Literal["ACCEPT", "SKIP", "MOD"]
    host: str | None = None
    port: int | None = None
    skip: int = 1


@dataclass(frozen=True, slots=True)
class ProxyAnswer:
    """The answer to ``>PROXY:N,UDP|TCP,HOST`` (``management-query-proxy``): ``proxy NONE``
    (as configured), ``proxy HTTP HOST PORT [nct]`` (TCP only) or ``proxy SOCKS HOST PORT``
    (init.c, management_callback_proxy_cmd()); ``kind`` None: a bad command, the attempt
    goes on as configured."""

    kind: Literal["NONE", "HTTP", "SOCKS"] | None
    host: str = ""
    port: int = 0
    nct: bool = False


class _ConnectionQuery:
    """A pending ``>REMOTE:`` or ``>PROXY:`` query."""

    def __init__(self, kind: Literal["remote", "proxy"], tcp: bool) -> None:
        self.kind = kind
        self.tcp = tcp
        self.answer: RemoteAnswer | ProxyAnswer | None = None
        self.done = trio.Event()


def _port(text: str) -> int | None:
    port = parse_number(text)
    return port if port is not None and 0 < port < 65536 else None


def _leading_number(text: str) -> int:
    """C's atoi() for the non-negative numbers a command takes (``remote SKIP 2``)."""
    digits = ""
    for ch in text[:MAX_DIGITS]:
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    return int(digits) if digits else 0


def parse_remote_answer(args: list[str]) -> RemoteAnswer | None:
    """``ACCEPT`` / ``SKIP [N]`` / ``MOD HOST PORT``; None where OpenVPN answers "remote
    command failed" (trivpn also wants PORT to be a port number, OpenVPN would fail later
    resolving it)."""
    if args[0] == "ACCEPT":
        return RemoteAnswer("ACCEPT")
    if args[0] == "SKIP":
        count = _leading_number(args[1]) if len(args) > 1 else 1
        return RemoteAnswer("SKIP", skip=max(count, 1))
    if args[0] == "MOD" and len(args) > 2 and len(args[1]) < RH_HOST_LEN:
        port = _port(args[2])
        if port is not None and args[1]:
            return RemoteAnswer("MOD", args[1], port)
    return None


def parse_proxy_answer(args: list[str]) -> ProxyAnswer:
    """``NONE`` / ``HTTP HOST PORT [nct]`` / ``SOCKS HOST PORT``; ``ProxyAnswer(None)`` for
    anything else (OpenVPN: "Bad proxy command")."""
    if args[0] == "NONE":
        return ProxyAnswer("NONE")
    if len(args) > 2 and args[0] in ("HTTP", "SOCKS"):
        port = _port(args[2])
        if port is not None and args[1]:
            nct = args[0] == "HTTP" and len(args) > 3 and args[3] == "nct"
            return ProxyAnswer("HTTP" if args[0] == "HTTP" else "SOCKS", args[1], port, nct)
    return ProxyAnswer(None)


def read_password(path: Path) -> str:
    """The first line of a management password file."""
    with path.open() as f:
        return f.readline().rstrip("\r\n")


class _Connection:
    """One management client."""

    def __init__(self, server: ManagementServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.send, self.receive = trio.open_memory_channel[str](OUTPUT_QUEUE)
        self.authenticated = server.password is None
        self.tries = 0
        self.halt = False
        self.log_realtime = False
        self.state_realtime = False
        self.bytecount = 0
        self.bytecount_changed = trio.Event()
        self._drained = trio.Event()
        # client-auth CID KID: the config lines read until END
        self.collecting: tuple[int, int, list[str]] | None = None

    def put(self, text: str, *, line: bool = True) -> None:
        # a client that does not read loses notifications, it never blocks the VPN
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError,
                                 trio.BrokenResourceError):
            self.send.send_nowait(text + "\r\n" if line else text)

    def on_log(self, record: LogRecord) -> None:
        if self.log_realtime:
            self.put(f">LOG:{record.unix_time},{record.flags},{record.text}")

    def on_state(self, record: StateRecord) -> None:
        if self.state_realtime:
            self.put(f">STATE:{record.line()}")

    async def run(self) -> None:
        history, state = self.server.history, self.server.state
        history.subscribers.append(self.on_log)
        state.state_subscribers.append(self.on_state)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._bytecounter)
                if self.authenticated:
                    self.welcome()
                else:
                    self.put("ENTER PASSWORD:", line=False)
                await self._reader()
                await self.send.aclose()
                with trio.move_on_after(1.0):
                    await self._drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            history.subscribers.remove(self.on_log)
            state.state_subscribers.remove(self.on_state)
            with contextlib.suppress(Exception):
                await self.stream.aclose()

    async def _writer(self) -> None:
        try:
            async for text in self.receive:
                await self.stream.send_all(text.encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.halt = True
        finally:
            self._drained.set()

    async def _reader(self) -> None:
        buffer = b""
        auth_deadline = trio.current_time() + self.server.auth_timeout
        while not self.halt:
            try:
                with trio.move_on_at(math.inf if self.authenticated else auth_deadline):
                    chunk = await self.stream.receive_some(4096)
                    if not chunk:
                        return
                    buffer += chunk
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not self.authenticated and trio.current_time() >= auth_deadline:
                self.server.log.warning("management_auth_timeout",
                                        seconds=self.server.auth_timeout)
                return
            while b"\n" in buffer and not self.halt:
                raw, buffer = buffer.split(b"\n", 1)
                self.handle_line(raw.decode("utf-8", "replace").strip("\r \t"))
            if len(buffer) > MAX_LINE:
                self.put("ERROR: command too long")
                return

    async def _bytecounter(self) -> None:
        while True:
            if self.bytecount <= 0:
                await self.bytecount_changed.wait()
                continue
            with trio.move_on_after(self.bytecount):
                await self.bytecount_changed.wait()
                continue
            for line in self.server.runtime.bytecount_lines():
                self.put(line)

    def welcome(self) -> None:
        self.put(f">INFO:OpenVPN Management Interface Version {MANAGEMENT_VERSION} "
                 "-- type 'help' for more info")
        if self.server.special is not None:  # a hold or query waiting (manage.c)
            self.put(self.server.special)

    # -- commands --------------------------------------------------------------------------

    def handle_line(self, line: str) -> None:
        """Answer one input line; never raises (a failing command is answered ERROR)."""
        if not self.authenticated:
            self.check_password(line)
            return
        if self.collecting is not None:
            self.collect_client_config(line)
            return
        words = split_command(line)
        if not words:
            return
        command, args = words[0], words[1:]
        if command == "client-deny":  # its reasons are quoted
            try:
                args = shlex.split(line)[1:]
            except ValueError:
                self.put("ERROR: client-deny: unbalanced quotes")
                return
        handler = self.server.commands.get(command)
        if handler is None:
            self.put("ERROR: unknown command, enter 'help' for more options")
            return
        try:
            handler(self, args)
        except Exception as exc:  # a bug in one command must not end the VPN
            self.server.errors.exception("management_command_failed", time.monotonic(),
                                         command=command, error=repr(exc))
            self.put(f"ERROR: {command} command failed")

    def check_password(self, line: str) -> None:
        password = self.server.password or ""
        if hmac.compare_digest(line.encode(), password.encode()):
            self.authenticated = True
            self.put("SUCCESS: password is correct")
            self.welcome()
            return
        self.put("ERROR: bad password")
        self.tries += 1
        if self.tries >= PASSWORD_TRIES:
            self.server.log.warning("management_password_rejected", tries=self.tries)
            self.halt = True
            return
        self.put("ENTER PASSWORD:", line=False)

    def need(self, command: str, args: list[str], n: int, at_least: bool = False) -> bool:
        if len(args) >= n:
            return True
        plural = "s" if n > 1 else ""
        self.put(f"ERROR: the '{command}' command requires "
                 f"{'at least ' if at_least else ''}{n} parameter{plural}")
        return False

    def cmd_exit(self, args: list[str]) -> None:
        self.halt = True

    def cmd_help(self, args: list[str]) -> None:
        for line in HELP:
            self.put(line)

    def cmd_version(self, args: list[str]) -> None:
        if args:
            self.put("SUCCESS: version changed" if parse_number(args[0]) is not None
                     else "ERROR: version parameter must be a number")
            return
        self.put(f"OpenVPN Version: {TITLE}")
        self.put(f"Management Version: {MANAGEMENT_VERSION}")
        self.put("END")

    def cmd_pid(self, args: list[str]) -> None:
        self.put(f"SUCCESS: pid={os.getpid()}")

    def cmd_status(self, args: list[str]) -> None:
        version = (parse_number(args[0]) or 0) if args else 0
        for line in self.server.runtime.status_lines(version or self.server.status_version):
            self.put(line)

    def cmd_kill(self, args: list[str]) -> None:
        if self.need("kill", args, 1):
            if not self.server.runtime.is_server:
                self.put("ERROR: The 'kill' command is not supported by the current daemon "
                         "mode")
                return
            self.put(self.server.runtime.kill(args[0]))

    def cmd_bytecount(self, args: list[str]) -> None:
        if self.need("bytecount", args, 1):
            seconds = parse_number(args[0])
            if seconds is None and args[0].startswith("-"):
                seconds = 0  # OpenVPN: anything not positive turns it off
            if seconds is None or seconds > MAX_BYTECOUNT:
                self.put(f"ERROR: bytecount parameter must be a number of seconds "
                         f"from 0 to {MAX_BYTECOUNT}")
                return
            self.bytecount = seconds
            self.bytecount_changed.set()
            self.bytecount_changed = trio.Event()
            self.put("SUCCESS: bytecount interval changed")

    def cmd_signal(self, args: list[str]) -> None:
        if not self.need("signal", args, 1):
            return
        name = args[0].upper()
        if name in ("SIGTERM", "SIGINT"):
            self.put(f"SUCCESS: signal {name} thrown")
            self.server.log.info("management_signal", signal=name)
            self.server.send_signal(signal.Signals[name])
        elif name in ("SIGHUP", "SIGUSR1", "SIGUSR2"):
            self.put(f"ERROR: signal '{args[0]}' is currently ignored")
        else:
            self.put(f"ERROR: signal '{args[0]}' is not a known signal type")

    # -- management-client-auth --------------------------------------------------------------

    def _client_ids(self, command: str, args: list[str], n: int) -> tuple[int, int] | None:
        broker = self.server.client_auth
        if broker is None:
            self.put(f"ERROR: The '{command}' command is not supported by the current daemon "
                     "mode")
            return None
        if not self.need(command, args, n, at_least=n > 2):
            return None
        cid, kid = parse_number(args[0]), parse_number(args[1])
        if cid is None:
            self.put(f"ERROR: cannot parse CID: {args[0]}")
            return None
        if kid is None:
            self.put(f"ERROR: cannot parse KID: {args[1]}")
            return None
        return cid, kid

    def _answer(self, command: str, cid: int, kid: int, answer: ManagementAnswer) -> None:
        broker = self.server.client_auth
        assert broker is not None
        ok = broker.answer(cid, kid, answer)
        self.put(f"SUCCESS: {command} command succeeded" if ok
                 else f"ERROR: {command} command failed")

    def cmd_client_auth(self, args: list[str]) -> None:
        ids = self._client_ids("client-auth", args, 2)
        if ids is not None:
            self.collecting = (*ids, [])

    def collect_client_config(self, line: str) -> None:
        assert self.collecting is not None
        cid, kid, lines = self.collecting
        if line != "END":
            if len(lines) < MAX_CONFIG_LINES:
                lines.append(line)
            return
        self.collecting = None
        self._answer("client-auth", cid, kid, ManagementAnswer(True, config=tuple(lines)))

    def cmd_client_auth_nt(self, args: list[str]) -> None:
        ids = self._client_ids("client-auth-nt", args, 2)
        if ids is not None:  # answered as client-auth, as OpenVPN does (in_extra_dispatch())
            self._answer("client-auth", *ids, ManagementAnswer(True))

    def cmd_client_deny(self, args: list[str]) -> None:
        ids = self._client_ids("client-deny", args, 3)
        if ids is not None:
            self._answer("client-deny", *ids, ManagementAnswer(
                False, args[2], args[3] if len(args) > 3 else None))

    def cmd_client_kill(self, args: list[str]) -> None:
        """``client-kill CID [MSG]`` (manage.c, man_client_kill()): the client of CID is told
        MSG (RESTART by default) and removed."""
        broker = self.server.client_auth
        if broker is None or broker.kill is None:
            self.put("ERROR: The 'client-kill' command is not supported by the current daemon "
                     "mode")
            return
        if not self.need("client-kill", args, 1, at_least=True):
            return
        cid = parse_number(args[0])
        if cid is None:
            self.put(f"ERROR: cannot parse CID: {args[0]}")
            return
        ok = broker.kill(cid, args[1] if len(args) > 1 else None)
        self.put("SUCCESS: client-kill command succeeded" if ok
                 else "ERROR: client-kill command failed")

    # -- management-query-remote / -query-proxy (init.c) ------------------------------------

    def _connection_query(self, kind: Literal["remote", "proxy"],
                          args: list[str]) -> _ConnectionQuery | None:
        if self.server.runtime.is_server:
            self.put(f"ERROR: The '{kind}' command is not supported by the current daemon "
                     "mode")
            return None
        if not self.need(kind, args, 1, at_least=True):
            return None
        query = self.server.connection_query
        if query is not None and query.kind == kind:
            return query
        if kind == "proxy":  # OpenVPN takes it anyway: it only applies to the next question
            answer = parse_proxy_answer(args)
            ok = answer.kind is not None and (answer.kind != "HTTP" or self.server.last_tcp)
            self.put("SUCCESS: proxy command succeeded" if ok else "ERROR: proxy command failed")
            return None
        self.put(f"ERROR: {kind} command failed")
        return None

    def cmd_remote(self, args: list[str]) -> None:
        query = self._connection_query("remote", args)
        if query is None:
            return
        answer = parse_remote_answer(args)
        if answer is None:
            self.put("ERROR: remote command failed")
            return
        query.answer = answer
        query.done.set()
        self.put("SUCCESS: remote command succeeded")

    def cmd_proxy(self, args: list[str]) -> None:
        query = self._connection_query("proxy", args)
        if query is None:
            return
        answer = parse_proxy_answer(args)
        if answer.kind == "HTTP" and not query.tcp:
            # OpenVPN leaves the query open: another answer may follow
            self.server.log.warning("management_proxy_refused",
                                    detail="HTTP proxy support only works for TCP based "
                                    "connections")
            self.put("ERROR: proxy command failed")
            return
        query.answer = answer
        query.done.set()
        if answer.kind is None:
            self.server.log.warning("management_proxy_refused", detail="Bad proxy command")
            self.put("ERROR: proxy command failed")
            return
        self.put("SUCCESS: proxy command succeeded")

    def cmd_hold(self, args: list[str]) -> None:
        server = self.server
        if not args:
            self.put(f"SUCCESS: hold={int(server.hold)}")
        elif args[0] == "on":
            server.hold = True
            self.put("SUCCESS: hold flag set to ON")
        elif args[0] == "off":
            server.hold = False
            self.put("SUCCESS: hold flag set to OFF")
        elif args[0] == "release":
            server.hold_released.set()
            self.put("SUCCESS: hold release succeeded")
        else:
            self.put("ERROR: bad hold command parameter")

    def _answer_query(self, what: str, args: list[str]) -> None:
        if not self.need(what, args, 2):
            return
        query = self.server.query
        if query is None or (what == "username" and not query.need_username):
            self.put(f"ERROR: no {what} is currently needed at this time")
            return
        if args[0] != query.kind:
            self.put(f"ERROR: {what} of type '{args[0]}' entered, but we need one of type "
                     f"'{query.kind}'")
            return
        setattr(query, what, args[1])
        query.check()
        self.put(f"SUCCESS: '{query.kind}' {what} entered, but not yet verified")
        self.server.log.info("management_credential_entered", kind=query.kind, what=what)

    def cmd_username(self, args: list[str]) -> None:
        self._answer_query("username", args)

    def cmd_password(self, args: list[str]) -> None:
        self._answer_query("password", args)

    def _history(self, kind: str, parameter: str, lines: list[str]) -> None:
        if parameter in ("on", "off"):
            setattr(self, f"{kind}_realtime", parameter == "on")
            self.put(f"SUCCESS: real-time {kind} notification set to {parameter.upper()}")
            return
        n = parse_number(parameter) or 0
        if parameter != "all" and n <= 0:
            self.put(f"ERROR: {kind} parameter must be 'on' or 'off' or some number n or 'all'")
            return
        for line in (lines if parameter == "all" else lines[-n:]):
            self.put(line)
        self.put("END")

    def cmd_log(self, args: list[str]) -> None:
        if self.need("log", args, 1, at_least=True):
            for parameter in args[:2]:
                lines = [f"{r.unix_time},{r.flags},{r.text}" for r in self.server.history.history]
                self._history("log", parameter, lines)

    def cmd_state(self, args: list[str]) -> None:
        for parameter in args[:2] or ["1"]:
            self._history("state", parameter, [r.line() for r in self.server.state.states])


_COMMANDS: dict[str, Callable[[_Connection, list[str]], None]] = {
    "exit": _Connection.cmd_exit, "quit": _Connection.cmd_exit, "help": _Connection.cmd_help,
    "version": _Connection.cmd_version, "pid": _Connection.cmd_pid,
    "status": _Connection.cmd_status, "kill": _Connection.cmd_kill,
    "bytecount": _Connection.cmd_bytecount, "signal": _Connection.cmd_signal,
    "log": _Connection.cmd_log, "state": _Connection.cmd_state,
    "client-auth": _Connection.cmd_client_auth, "client-auth-nt": _Connection.cmd_client_auth_nt,
    "client-deny": _Connection.cmd_client_deny, "client-kill": _Connection.cmd_client_kill,
    "hold": _Connection.cmd_hold, "username": _Connection.cmd_username,
    "password": _Connection.cmd_password,
    "remote": _Connection.cmd_remote, "proxy": _Connection.cmd_proxy,
}


class ManagementServer:
    """Accepts management clients on a TCP address or a unix socket.

    :meth:`open` binds the socket; call it before privileges are dropped (a unix socket in a
    root-owned directory, a port below 1024), then :meth:`serve`.
    """

    def __init__(self, runtime: ManagedRuntime, history: LogHistory, state: OperatorState,
                 log: Log, *, host: str,
                 port: int | None, unix: bool, password: str | None = None,
                 status_version: int = 1,
                 send_signal: Callable[[signal.Signals], None] | None = None,
                 client_uid: int | None = None, client_gid: int | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 auth_timeout: float = AUTH_TIMEOUT,
                 client_auth: ClientAuthBroker | None = None, hold: bool = False,
                 connect_out: bool = False, up_down: bool = False) -> None:
        self.runtime = runtime
        self.history = history
        self.state = state
        self.log = log
        self.errors = RateLimitedLog(log)
        self.host = host
        self.port = port
        self.unix = unix
        self.password = password
        self.status_version = status_version
        self.send_signal = send_signal or (lambda sig: os.kill(os.getpid(), sig))
        self.client_uid = client_uid
        self.client_gid = client_gid
        self.max_connections = max_connections
        self.auth_timeout = auth_timeout
        self.commands = _COMMANDS
        self.bound_port: int | None = None
        self.active = 0
        self.connections: set[_Connection] = set()
        self.hold = hold  # management-hold / 'hold on'
        self.hold_released = trio.Event()
        self.special: str | None = None  # the pending >HOLD / >PASSWORD notification
        self.query: _Query | None = None
        self.client_auth = client_auth
        if client_auth is not None:
            client_auth.notify = self.broadcast
        self._listeners: list[trio.SocketListener] | None = None
        # --- mgmt ---
        self.connect_out = connect_out  # management-client: connect to host:port / the path
        self._outgoing: trio.SocketStream | None = None
        self.up_down_enabled = up_down  # management-up-down
        self.connection_query: _ConnectionQuery | None = None  # >REMOTE: / >PROXY:
        self.last_tcp = True  # the protocol of the last question (a late 'proxy HTTP')
        # called when a management client disconnects (management-signal,
        # management-forget-disconnect); not when trivpn stops
        self.disconnect_hooks: list[Callable[[], None]] = []

    def broadcast(self, lines: list[str]) -> None:
        """Real-time notification lines to every client that gave the password."""
        for line in lines:
            self.notify(line)

    # -- hold and password queries (management-hold, management-query-passwords) ----------

    def notify(self, text: str) -> None:
        """A real-time notification to every authenticated management client."""
        for connection in self.connections:
            if connection.authenticated:
                connection.put(text)

    async def _wait_special(self, message: str, done: trio.Event) -> None:
        self.special = message
        self.notify(message)
        try:
            await done.wait()
        finally:
            self.special = None

    async def wait_hold(self, holdtime: int = 0) -> bool:
        """With the hold flag on: ``>HOLD:Waiting for hold release:N`` and wait for ``hold
        release`` (each restart asks again, as OpenVPN's management_hold). True if held."""
        if not self.hold:
            return False
        self.hold_released = trio.Event()
        self.log.info("management_hold", holdtime=holdtime)
        await self._wait_special(f">HOLD:Waiting for hold release:{holdtime}",
                                 self.hold_released)
        return True

    async def _query(self, kind: str, need_username: bool, message: str) -> _Query:
        query = self.query = _Query(kind, need_username)
        self.log.info("management_password_query", kind=kind)
        try:
            await self._wait_special(message, query.done)
        finally:
            self.query = None
        return query

    async def query_user_pass(self, kind: str,
                              static_challenge: StaticChallenge | None) -> tuple[str, str]:
        message = f">PASSWORD:Need '{kind}' username/password"
        if static_challenge is not None:
            message += f" SC:{int(static_challenge.echo)},{static_challenge.text}"
        query = await self._query(kind, True, message)
        assert query.username is not None and query.password is not None
        return query.username, query.password

    async def query_password(self, kind: str) -> str:
        query = await self._query(kind, False, f">PASSWORD:Need '{kind}' password")
        assert query.password is not None
        return query.password

    def auth_failed(self, kind: str, reason: str | None) -> None:
        """``>PASSWORD:Verification Failed: 'Auth' ['reason']`` (manage.c,
        management_auth_failure)."""
        self.notify(f">PASSWORD:Verification Failed: '{kind}'"
                    + (f" ['{reason}']" if reason else ""))

    # -- management-query-remote / -query-proxy / -up-down ------------------------------------

    async def _connection_question(self, query: _ConnectionQuery, message: str
                                   ) -> RemoteAnswer | ProxyAnswer | None:
        self.connection_query = query
        self.last_tcp = query.tcp
        self.log.info("management_query", kind=query.kind, question=message[1:])
        try:
            await self._wait_special(message, query.done)
        finally:
            self.connection_query = None
        return query.answer

    async def query_remote(self, host: str, port: int, proto: str) -> RemoteAnswer:
        """``>REMOTE:HOST,PORT,PROTO`` (init.c, ce_management_query_remote()); waits for the
        ``remote`` command."""
        answer = await self._connection_question(_ConnectionQuery("remote", True),
                                                 f">REMOTE:{host},{port},{proto}")
        assert isinstance(answer, RemoteAnswer)
        return answer

    async def query_proxy(self, number: int, tcp: bool, host: str) -> ProxyAnswer:
        """``>PROXY:N,UDP|TCP,HOST`` (init.c, ce_management_query_proxy()), N counting the
        connection profiles from 1; waits for the ``proxy`` command."""
        answer = await self._connection_question(
            _ConnectionQuery("proxy", tcp), f">PROXY:{number},{'TCP' if tcp else 'UDP'},{host}")
        assert isinstance(answer, ProxyAnswer)
        return answer

    def up_down(self, what: Literal["UP", "DOWN"], env: Mapping[str, str]) -> None:
        """``>UPDOWN:UP`` / ``>UPDOWN:DOWN``, then ``>UPDOWN:ENV,NAME=VALUE`` for each variable
        of the script environment and ``>UPDOWN:ENV,END`` (manage.c, management_up_down(),
        man_output_env()); with ``management-up-down`` only."""
        if not self.up_down_enabled:
            return
        self.notify(f">UPDOWN:{what}")
        for name, value in env.items():
            self.notify(f">UPDOWN:ENV,{name}={value}")
        self.notify(">UPDOWN:ENV,END")

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout`` seconds) until every client's queued lines were sent."""
        with trio.move_on_after(timeout):
            while any(c.send.statistics().current_buffer_used for c in self.connections):
                await trio.sleep(0.01)
            await trio.sleep(0.01)  # the writer's last send_all

    def _client_left(self) -> None:
        """A management client disconnected (manage.c, man_reset_client_socket()): the
        hooks (forget the passwords, restart), then with management-client the exit."""
        for hook in list(self.disconnect_hooks):
            hook()
        if self.connect_out:
            self.log.info("management_exit", detail="Triggering management exit")
            self.send_signal(signal.SIGTERM)

    @property
    def where(self) -> str:
        return self.host if self.unix else f"{self.host}:{self.bound_port or self.port}"

    async def open(self) -> None:
        """Bind and listen (idempotent); with management-client connect to the address
        instead, within :data:`CONNECT_TIMEOUT` seconds (as OpenVPN's man_connect()). Raises
        OSError."""
        if self._listeners is not None or self._outgoing is not None:
            return
        if self.connect_out:
            self._outgoing = await self._connect()
            return
        if self.unix:
            self._listeners = [await self._unix_listener()]
        else:
            assert self.port is not None
            self._listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.bound_port = int(self._listeners[0].socket.getsockname()[1])

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        await self.open()
        if self._outgoing is not None:
            stream, self._outgoing = self._outgoing, None
            self.log.info("management_connected", address=self.where,
                          password=self.password is not None)
            task_status.started()
            await self._handle(stream)
            return
        listeners = self._listeners
        assert listeners is not None
        self.log.info("management_listening", address=self.where,
                      password=self.password is not None)
        task_status.started()
        try:
            await trio.serve_listeners(self._handle, listeners)
        finally:
            if self.unix:
                with contextlib.suppress(OSError):
                    os.unlink(self.host)

    async def _connect(self) -> trio.SocketStream:
        stream: trio.SocketStream | None = None
        with trio.move_on_after(CONNECT_TIMEOUT):
            if self.unix:
                stream = await trio.open_unix_socket(self.host)
            else:
                assert self.port is not None
                stream = await trio.open_tcp_stream(self.host, self.port)
        if stream is None:
            raise TimeoutError(f"no answer within {CONNECT_TIMEOUT:g} seconds")
        return stream

    async def _unix_listener(self) -> trio.SocketListener:
        path = self.host
        with contextlib.suppress(FileNotFoundError):
            if Path(path).is_socket():
                os.unlink(path)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            # as OpenVPN's socket_bind_unix: the socket gets mode 0777, access is decided by
            # the directory, the password and management-client-user/-group
            old = os.umask(0)
            try:
                await sock.bind(path)
            finally:
                os.umask(old)
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        return trio.SocketListener(sock)

    def _peer_allowed(self, stream: trio.SocketStream) -> bool:
        """management-client-user/-group: the unix peer's uid and gid (SO_PEERCRED)."""
        if not self.unix or (self.client_uid is None and self.client_gid is None):
            return True
        try:
            raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                           struct.calcsize("3i"))
            _, uid, gid = struct.unpack("3i", raw)
        except OSError as exc:
            self.log.warning("management_client_rejected", reason="no_peer_credentials",
                             error=str(exc))
            return False
        if self.client_uid is not None and uid != self.client_uid:
            self.log.warning("management_client_rejected", reason="uid", uid=uid,
                             required=self.client_uid)
            return False
        if self.client_gid is not None and gid != self.client_gid:
            self.log.warning("management_client_rejected", reason="gid", gid=gid,
                             required=self.client_gid)
            return False
        return True

    async def _handle(self, stream: trio.SocketStream) -> None:
        if not self._peer_allowed(stream):
            await stream.aclose()
            return
        if self.active >= self.max_connections:
            self.log.warning("management_client_refused", connections=self.active)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError), trio.move_on_after(1.0):
                await stream.send_all(b"ERROR: too many management connections "
                                      b"(%d), try again later\r\n" % self.max_connections)
            await stream.aclose()
            return
        self.active += 1
        self.log.info("management_client_connected")
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            await connection.run()
            self.connections.discard(connection)
            self._client_left()
        except Exception as exc:  # a bug costs this connection, never the VPN
            self.errors.exception("management_connection_failed", time.monotonic(),
                                  error=repr(exc))
            with contextlib.suppress(Exception):
                await stream.aclose()
        finally:
            self.connections.discard(connection)
            self.active -= 1
            self.log.info("management_client_disconnected")
