"""``trivpn doctor --watch TARGET``: attach to a running tunnel (OpenVPN's or trivpn's) through
its management interface and explain what happens, as it happens.

The watcher turns on real-time state and log notifications (``state on``, ``log on``), byte
counts (``bytecount N``) and asks for ``status`` every interval; it never changes the tunnel (no
``hold release``, no signal). What it reads becomes :class:`WatchEvent` objects:

- ``>STATE:...,RECONNECTING,REASON``: a reconnect, explained by its reason (OpenVPN's signal
  texts: ``ping-restart``, ``tls-error``, ``connection-reset``, ``auth-failure``,
  ``server-pushed-connection-reset``, ``SIGUSR1``...; trivpn's snake_case reasons
  ``ping_restart``, ``handshake_failed``...); ``EXITING`` likewise; ``CONNECTED``.
- ``>LOG:`` lines: every line ``doctor --log`` knows (trivpn/diagnostics/logscan.py, PATTERNS)
  with its explanation and fix; trivpn's ``packet_dropped reason=... count=... total=...``
  lines as growing drop counters.
- ``>PASSWORD:Verification Failed: 'Auth' ['reason']``: AUTH_FAILED, explained as
  trivpn/diagnostics/auth_diag.py does when the config is known.
- ``>FATAL:``, ``>HOLD:``.
- counters: ``status`` (OpenVPN's client statistics: ``TCP/UDP read bytes`` against ``Auth read
  bytes``, the bytes that passed authentication) and ``>BYTECOUNT:IN,OUT`` (sending while
  nothing comes back).

The interpretation (:class:`Interpreter`) is pure: lines in, events out, time passed in.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from trivpn.config import Options
from trivpn.diagnostics.auth_diag import diagnose_auth_failed
from trivpn.diagnostics.logscan import describe, match_line, patterns_for
from trivpn.runtime.management_client import (
    ManagementAddress,
    ManagementClientError,
    connect_management,
)

Level = Literal["info", "ok", "warn", "fail"]
DEFAULT_INTERVAL = 5
UNAUTH_BYTES_THRESHOLD = 8192
"""Bytes per status interval that may fail authentication before it is reported: a TLS
handshake or renegotiation's control packets are never counted as authenticated data, and a
certificate chain takes a few kilobytes."""
SILENT_INTERVALS = 3
"""Byte-count updates in a row with bytes sent and none received before it is reported."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One thing that happened, explained."""

    id: str
    level: Level
    unix_time: float
    summary: str
    explanation: str = ""
    fix: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "level": self.level, "time": self.unix_time,
                               "summary": self.summary}
        if self.explanation:
            out["explanation"] = self.explanation
        if self.fix:
            out["fix"] = self.fix
        out["evidence"] = self.evidence
        return out


# --- reconnect and exit reasons -------------------------------------------------------------

_KEEPALIVE_FIX = ("Check the path between client and server (is the server up? does "
                  "'ping SERVER' answer?); if it happens every few minutes on an idle "
                  "tunnel, a NAT or firewall forgets the UDP binding: use 'keepalive 10 60' "
                  "on the server (it pushes ping 10 / ping-restart 60) so packets keep it open.")

_REASONS: dict[str, tuple[Level, str, str, str]] = {
    # reason: (level, summary, explanation, fix)
    "ping-restart": (
        "warn", "nothing came from the other side for the ping-restart time",
        "No packet (not even a keepalive ping) arrived within 'ping-restart' seconds, so the "
        "tunnel restarts: the server went down or restarted, the network path broke, or a "
        "NAT/firewall mapping expired.", _KEEPALIVE_FIX),
    "tls-error": (
        "fail", "the TLS handshake (or a renegotiation) failed",
        "A TLS handshake did not complete: the first one after a restart, or a key "
        "renegotiation ('reneg-sec', 'reneg-bytes'). Within 'hand-window' (60 s by default) "
        "no valid answer came back, or the TLS layer reported an error; the log lines just "
        "before this event name the cause (for example a tls-crypt or tls-auth key the "
        "server no longer accepts, a certificate error).",
        "Read the log events above; run 'trivpn doctor CLIENT.conf' to find out which "
        "handshake phase fails. A server restarted with a new tls-crypt/tls-auth key drops "
        "the old key's packets silently: give the client the server's current key."),
    "connection-reset": (
        "warn", "the TCP connection to the server was closed",
        "Over TCP the server (or a middlebox on the way) closed or reset the connection: the "
        "server restarted, it aborted the TLS handshake, or a firewall/DPI device cut the "
        "connection.",
        "Look at the server's log for this client at that time; if the server logged "
        "nothing, suspect a middlebox ('trivpn doctor CLIENT.conf' probes the port)."),
    "server-pushed-connection-reset": (
        "info", "the server asked this client to reconnect",
        "The server sent RESTART (it is shutting down or restarting with "
        "'explicit-exit-notify', or an operator killed this client).",
        "Nothing to fix if the server comes back; otherwise see the server's log."),
    "auth-failure": (
        "fail", "the server refused the login (AUTH_FAILED)",
        "The server rejected the username/password or the account; with 'auth-retry' the "
        "client asks again.",
        "Check the credentials in 'auth-user-pass'; the server's log says why it refused."),
    "SIGUSR1": (
        "info", "restart requested (SIGUSR1)",
        "Someone sent SIGUSR1 (an operator, a network-change script, the management "
        "'signal SIGUSR1' command), so the connection restarts.",
        "Nothing to fix unless it happens unexpectedly: find who sends the signal."),
    "SIGHUP": (
        "info", "restart with a configuration re-read (SIGHUP)",
        "A SIGHUP restarts the process and re-reads the configuration.",
        "Nothing to fix unless it happens unexpectedly."),
    "SIGTERM": ("info", "the tunnel is stopping (SIGTERM)", "", ""),
    "SIGINT": ("info", "the tunnel is stopping (SIGINT)", "", ""),
    "exit-with-notification": ("info", "the server announced it is going away", "", ""),
}
# trivpn's reasons (trivpn/runtime/client.py, Reconnect(...)) said in OpenVPN's words
_TRIVPN_REASONS = {"ping_restart": "ping-restart", "handshake_failed": "tls-error",
                   "connection_closed": "connection-reset", "server_restart":
                   "server-pushed-connection-reset", "auth_failed": "auth-failure"}


def _reason_texts(reason: str) -> tuple[str, tuple[Level, str, str, str]]:
    """(canonical reason, texts) for a RECONNECTING/EXITING detail."""
    key = _TRIVPN_REASONS.get(reason, reason)
    known = _REASONS.get(key)
    if known is not None:
        return key, known
    text = reason.replace("_", " ") or "no reason given"
    return key, ("warn", f"the connection restarts ({text})",
                 f"The tunnel restarted with the reason {reason!r}.",
                 "Read the log events above for the cause.")


# --- the interpreter -----------------------------------------------------------------------

_STATE = re.compile(r"^>STATE:(\d+),([A-Z_]+),([^,]*),?([^,]*),?([^,]*),?([^,]*)")
_LOG = re.compile(r"^>LOG:(\d+),([A-Z]*),(.*)$")
_BYTECOUNT = re.compile(r"^>BYTECOUNT:(\d+),(\d+)$")
_AUTH_FAILED = re.compile(r"^>PASSWORD:Verification Failed: '([^']*)'(?: \['(.*)'\])?")
_TRIVPN_DROP = re.compile(r"\bpacket_dropped\b.*\breason=(\S+).*\bcount=(\d+).*\btotal=(\d+)")
_STAT_LINE = re.compile(r"^([^,]+),(\d+)$")
_HANDSHAKE_FAILURES = frozenset({"log.tls_timeout", "log.tls_certificate_rejected",
                                 "log.peer_rejected_cert", "log.auth_failed"})


class Interpreter:
    """Management lines in, explained :class:`WatchEvent` objects out."""

    def __init__(self, options: Options | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.clock = clock
        self.patterns = patterns_for(options.role if options is not None else None)
        self.state = ""
        self._status: dict[str, int] | None = None  # a status block being read
        self._last_status: dict[str, int] | None = None
        self._bytes: tuple[int, int] | None = None
        self._silent = 0
        self._silent_reported = False
        self.up = False  # CONNECTED seen since the last restart: a handshake is a renegotiation
        self.expect_state = False  # set when a one-shot 'state' command was sent
        self._reneg_reported = False

    def feed(self, line: str) -> list[WatchEvent]:
        """The events one line of the management stream means (often none)."""
        if self._status is not None:
            return self._status_line(line)
        if self.expect_state:  # the answer to the one-shot 'state' sent on attaching
            if line == "END":
                self.expect_state = False
                return []
            if m := _STATE.match(">STATE:" + line):
                return self._current_state(m)
        if line == "OpenVPN STATISTICS":
            self._status = {}
            return []
        if m := _STATE.match(line):
            return self._state(m)
        if m := _LOG.match(line):
            return self._log(float(m.group(1)), m.group(3))
        if m := _BYTECOUNT.match(line):
            return self._bytecount(int(m.group(1)), int(m.group(2)))
        if m := _AUTH_FAILED.match(line):
            return [self._auth_failed(m.group(1), m.group(2))]
        if line.startswith(">FATAL:"):
            return self._fatal(line.removeprefix(">FATAL:"))
        if line.startswith(">HOLD:"):
            return [WatchEvent("watch.hold", "info", self.clock(),
                               "the tunnel waits for 'hold release' on the management "
                               "interface", "It runs with 'management-hold' (or was told "
                               "'hold on'): it does not connect until a management client "
                               "releases it; the watcher only watches.",
                               "Release it from your management client ('hold release').",
                               {"line": line})]
        return []

    # -- state -----------------------------------------------------------------------------

    def _current_state(self, m: re.Match[str]) -> list[WatchEvent]:
        """The state the tunnel was in when the watcher attached."""
        since, name = float(m.group(1)), m.group(2)
        self.state, self.up = name, name == "CONNECTED"
        evidence: dict[str, Any] = {"state": name, "since": since}
        if m.group(4):
            evidence["tunnel_ip"] = m.group(4)
        return [WatchEvent("watch.current_state", "ok" if self.up else "info", self.clock(),
                           f"the tunnel is {name} (since "
                           f"{time.strftime('%H:%M:%S', time.localtime(since))})",
                           evidence=evidence)]

    def _state(self, m: re.Match[str]) -> list[WatchEvent]:
        when, name, detail = float(m.group(1)), m.group(2), m.group(3)
        tun_ip, remote, port = m.group(4), m.group(5), m.group(6)
        previous, self.state = self.state, name
        evidence: dict[str, Any] = {"state": name}
        if detail:
            evidence["reason" if name in ("RECONNECTING", "EXITING") else "detail"] = detail
        if name == "RECONNECTING":
            key, (level, summary, explanation, fix) = _reason_texts(detail)
            if key == "tls-error" and self.up:
                summary = "a key renegotiation of the running tunnel failed"
            self.up = False
            evidence["previous_state"] = previous or None
            return [WatchEvent(f"watch.reconnect.{key}", level, when,
                               f"reconnecting: {summary}", explanation, fix, evidence)]
        if name == "EXITING":
            self.up = False
            key, (level, summary, explanation, fix) = _reason_texts(detail)
            return [WatchEvent(f"watch.exit.{key}", level, when, f"exiting: {summary}",
                               explanation, fix, evidence)]
        if name == "CONNECTED":
            self.up, self._reneg_reported = True, False
            if tun_ip:
                evidence["tunnel_ip"] = tun_ip
            if remote:
                evidence["remote"] = f"{remote}:{port}" if port else remote
            if detail == "SUCCESS":
                return [WatchEvent("watch.connected", "ok", when, "the tunnel is up",
                                   evidence=evidence)]
            return [WatchEvent("watch.connected_with_errors", "warn", when,
                               f"the tunnel is up, with errors ({detail})",
                               "OpenVPN reports CONNECTED,ERROR when something of the "
                               "tunnel setup failed, typically a route it could not add.",
                               "Read the log events above (a route that already exists, an "
                               "up script that failed).", evidence)]
        if self.up and name in ("AUTH", "WAIT"):  # OpenVPN's states during a renegotiation
            return [WatchEvent("watch.renegotiating", "info", when,
                               f"the running tunnel renegotiates its keys (state {name})",
                               evidence=evidence)]
        return [WatchEvent(f"watch.state.{name.lower()}", "info", when, f"state {name}",
                           evidence=evidence)]

    # -- log ------------------------------------------------------------------------------

    def _log(self, when: float, text: str) -> list[WatchEvent]:
        if m := _TRIVPN_DROP.search(text):
            reason, count, total = m.group(1), int(m.group(2)), int(m.group(3))
            return [WatchEvent(f"watch.drops.{reason}", "warn", when,
                               f"{count} packet(s) dropped ({reason}), {total} since start",
                               "The tunnel drops incoming packets it cannot accept, counted "
                               f"by reason ({reason!r}): packets failing authentication "
                               "(another key, a replay, garbage on the port) or malformed.",
                               "If the count keeps growing, look for a second client using "
                               "the same certificate, a peer with another key, or traffic "
                               "from elsewhere on the tunnel's port.",
                               {"reason": reason, "count": count, "total": total,
                                "line": text})]
        found = match_line(text, self.patterns)
        if found is None:
            return []
        pattern, m = found
        if pattern.status == "ok":
            return []
        summary, explanation, fix = describe(pattern, m)
        events = [WatchEvent(f"watch.{pattern.id}", pattern.status, when, summary, explanation,
                             fix, {"line": text})]
        if self.up and pattern.id in _HANDSHAKE_FAILURES and not self._reneg_reported:
            self._reneg_reported = True
            events.append(WatchEvent(
                "watch.renegotiation_failed", "fail", when,
                "a key renegotiation of the running tunnel failed",
                "The tunnel was up and started a new TLS handshake to renew its keys "
                "('reneg-sec', 'reneg-bytes', or the server's), and that handshake failed "
                f"({summary}). The tunnel keeps using its old key for now, at most for "
                "'transition-window' seconds, then stops passing traffic. A server that "
                "accepted the first handshake and refuses the next usually no longer accepts "
                "this client: its certificate was revoked (the server's 'crl-verify' file "
                "changed), its account or password changed (a script re-checks credentials at "
                "every renegotiation unless 'auth-gen-token' is used), or the server restarted "
                "with another tls-auth/tls-crypt key.",
                "Look at the server's log at this time for this client (VERIFY ERROR "
                "'certificate revoked', AUTH failures, tls-crypt unwrap errors); renew the "
                "certificate or credentials accordingly. Until then the tunnel will restart "
                "and fail to connect.", {"line": text}))
        return events

    def _fatal(self, text: str) -> list[WatchEvent]:
        found = match_line(text, self.patterns)
        if found is not None:
            summary, explanation, fix = describe(*found)
        else:
            summary, explanation, fix = (f"fatal error: {text}", "The tunnel process stops "
                                         "with this fatal error.", "Act on the message.")
        return [WatchEvent("watch.fatal", "fail", self.clock(), summary, explanation, fix,
                           {"line": text})]

    def _auth_failed(self, kind: str, reason: str | None) -> WatchEvent:
        evidence: dict[str, Any] = {"kind": kind}
        if reason:
            evidence["reason"] = reason
        if kind == "Auth" and self.options is not None:
            d = diagnose_auth_failed(self.options, reason)
            return WatchEvent(f"watch.{d.cause}", "fail", self.clock(), d.summary,
                              d.explanation, d.fix, {**evidence, **d.evidence})
        if kind == "Auth":
            detail = f": {reason!r}" if reason else ""
            return WatchEvent(
                "watch.auth_failed", "fail", self.clock(),
                f"the server refused the login (AUTH_FAILED{detail})",
                "The TLS handshake and the certificate were accepted, then the server answered "
                "AUTH_FAILED: the username or password is wrong, or the server refuses this "
                "account (a script, plugin or 'ccd-exclusive')"
                + (f"; it gave the reason {reason!r}" if reason else "") + ".",
                "Check the username (line 1) and password (line 2) of the 'auth-user-pass' "
                "file; the server's log says which of the causes it was.", evidence)
        return WatchEvent("watch.password_failed", "fail", self.clock(),
                          f"the '{kind}' password was refused",
                          f"The password given for '{kind}' (for example the private key's "
                          "passphrase) was wrong.", f"Give the right '{kind}' password.",
                          evidence)

    # -- counters -------------------------------------------------------------------------

    def _status_line(self, line: str) -> list[WatchEvent]:
        assert self._status is not None
        if line != "END":
            if m := _STAT_LINE.match(line):
                self._status[m.group(1)] = int(m.group(2))
            return []
        current, self._status = self._status, None
        previous, self._last_status = self._last_status, current
        if previous is None:
            return []
        return self._compare_status(previous, current)

    def _compare_status(self, old: dict[str, int], new: dict[str, int]) -> list[WatchEvent]:
        link, auth = "TCP/UDP read bytes", "Auth read bytes"
        if not {link, auth} <= old.keys() or not {link, auth} <= new.keys():
            return []
        d_link, d_auth = new[link] - old[link], new[auth] - old[auth]
        if d_link < 0 or d_auth < 0:  # the counters restarted with the connection
            return []
        unauth = d_link - d_auth
        if unauth <= UNAUTH_BYTES_THRESHOLD:
            return []
        return [WatchEvent(
            "watch.drops.unauthenticated", "warn", self.clock(),
            f"{unauth} bytes received that did not pass authentication since the last status",
            "The link received more bytes than passed the data channel's authentication "
            f"('{link}' grew by {d_link}, '{auth}' by {d_auth}). Control packets of a "
            "handshake account for a few kilobytes; more means packets are dropped: data "
            "packets under a key this side does not have, replays, or packets from another "
            "peer or a flood on the tunnel's port.",
            "Look at the log events for 'Authenticate/Decrypt packet error' or replay "
            "warnings; make sure no second client uses this certificate; if the counter "
            "grows without such lines, something else sends to the tunnel's port.",
            {"link_read_bytes": d_link, "auth_read_bytes": d_auth,
             "unauthenticated_bytes": unauth})]

    def _bytecount(self, bytes_in: int, bytes_out: int) -> list[WatchEvent]:
        previous, self._bytes = self._bytes, (bytes_in, bytes_out)
        if previous is None or not self.up:
            self._silent = 0
            return []
        got, sent = bytes_in - previous[0], bytes_out - previous[1]
        if got < 0 or sent < 0:  # a new connection restarted the counters
            self._silent = 0
            return []
        if got > 0:
            self._silent = 0
            self._silent_reported = False
            return []
        if sent > 0:
            self._silent += 1
        if self._silent < SILENT_INTERVALS or self._silent_reported:
            return []
        self._silent_reported = True
        return [WatchEvent(
            "watch.receiving_nothing", "warn", self.clock(),
            f"sending but receiving nothing for {self._silent} byte-count intervals",
            "The tunnel keeps sending (data or keepalive pings) but no byte came back: the "
            "server or the path stopped answering; a ping-restart will follow if "
            "'ping-restart' is set.", _KEEPALIVE_FIX,
            {"bytes_in": bytes_in, "bytes_out": bytes_out, "intervals": self._silent})]


# --- running it ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchOutcome:
    """Why the watch ended and the worst level seen."""

    reason: Literal["closed", "time", "signal"]
    worst: Level
    events: int


_RANK: dict[Level, int] = {"info": 0, "ok": 1, "warn": 2, "fail": 3}


def address_from_options(options: Options) -> ManagementAddress | None:
    """The management address a config listens on (``management``), password file included;
    None without one."""
    m = options.management
    if m is None:
        return None
    password = None
    if m.password_file is not None:
        password = Path(m.password_file)
        if not password.is_absolute():
            password = options.base_dir / password
    path = m.address
    if m.unix and not Path(path).is_absolute():
        path = str(options.base_dir / path)
    return ManagementAddress(path, None if m.unix else m.port, password)


async def watch(address: ManagementAddress, emit: Callable[[WatchEvent], None], *,
                options: Options | None = None, interval: int = DEFAULT_INTERVAL,
                duration: float | None = None, connect_timeout: float = 5.0,
                stop: trio.Event | None = None) -> WatchOutcome:
    """Attach to ``address`` and ``emit`` events until the connection closes, ``duration``
    seconds pass or ``stop`` is set. Raises ManagementClientError when it cannot attach."""
    conn = await connect_management(address, timeout=connect_timeout)
    interpreter = Interpreter(options)
    worst: Level = "info"
    count = 0
    reason: Literal["closed", "time", "signal"] = "closed"

    def deliver(event: WatchEvent) -> None:
        nonlocal worst, count
        count += 1
        if _RANK[event.level] > _RANK[worst]:
            worst = event.level
        emit(event)

    emit(WatchEvent("watch.attached", "info", time.time(),
                    f"attached to the management interface at {address}",
                    evidence={"address": str(address)}))
    try:
        async with trio.open_nursery() as nursery:
            async def poll_status() -> None:
                with contextlib.suppress(ManagementClientError):  # closed: read() ends it
                    while True:
                        await conn.send("status")
                        await trio.sleep(interval)

            async def read() -> None:
                nonlocal reason
                while (line := await conn.read_line()) is not None:
                    for event in interpreter.feed(line):
                        deliver(event)
                reason = "closed"
                nursery.cancel_scope.cancel()

            async def until_stopped() -> None:
                nonlocal reason
                if stop is not None:
                    await stop.wait()
                    reason = "signal"
                    nursery.cancel_scope.cancel()

            interpreter.expect_state = True
            with contextlib.suppress(ManagementClientError):  # closed: read() says so
                for command in ("state", "state on", "log on", f"bytecount {interval}"):
                    await conn.send(command)
            nursery.start_soon(read)
            nursery.start_soon(poll_status)
            nursery.start_soon(until_stopped)
            if duration is not None:
                await trio.sleep(duration)
                reason = "time"
                nursery.cancel_scope.cancel()
    finally:
        await conn.aclose()
    if reason == "closed":
        emit(WatchEvent("watch.detached", "info", time.time(),
                        "the management connection closed (the tunnel process exited or "
                        "closed it)", evidence={"address": str(address)}))
    return WatchOutcome(reason, worst, count)


_MARKS: dict[Level, tuple[str, str]] = {"info": ("·", "90"), "ok": ("✓", "32"),
                                        "warn": ("!", "33"), "fail": ("✗", "31")}


def render_event(event: WatchEvent, *, color: bool = False) -> str:
    """Human lines for one event: ``HH:MM:SS [!] summary``, then why and fix, indented."""
    mark, code = _MARKS[event.level]
    stamp = time.strftime("%H:%M:%S", time.localtime(event.unix_time))
    head = f"[{mark}]"
    if color:
        head = f"\x1b[{code}m{head}\x1b[0m"
    lines = [f"{stamp} {head} {event.summary}"]
    line = event.evidence.get("line")
    if isinstance(line, str) and event.level in ("warn", "fail"):
        lines.append(f"    log: {line}")
    if event.explanation:
        lines.append(f"    why: {event.explanation}")
    if event.fix:
        lines.append(f"    fix: {event.fix}")
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_INTERVAL", "Interpreter", "WatchEvent", "WatchOutcome",
           "address_from_options", "render_event", "watch"]
