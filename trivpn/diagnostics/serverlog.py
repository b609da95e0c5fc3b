"""Read what a running OpenVPN (or trivpn) server leaves on disk: its ``status`` file (status
versions 1, 2 and 3, as OpenVPN's multi.c ``multi_print_status()`` writes them) and its log
(``log``/``log-append`` file lines, or journal text), for the server-state checks.

Pure functions over text; the checks read the files.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# --- status file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusClient:
    common_name: str
    real_address: str  # "198.18.0.2:41234" (OpenVPN writes IPv6 as "[AF_INET6]..." rarely)
    virtual_address: str | None  # the IPv4 pool address, when the status file names it


@dataclass(frozen=True, slots=True)
class ServerStatus:
    version: int
    updated: str | None
    clients: tuple[StatusClient, ...]

    def updated_unix(self) -> float | None:
        """When the server last wrote the file (its local time, as OpenVPN's time_string()
        writes it), or None."""
        if self.updated is None:
            return None
        try:
            return time.mktime(time.strptime(self.updated.strip(), "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            return None


class StatusFormatError(ValueError):
    """The text is not a server status file of a known version."""


def parse_status(text: str) -> ServerStatus:
    """A server status file of version 1 (``OpenVPN CLIENT LIST``), 2 (comma-separated
    ``TITLE``/``HEADER``/``CLIENT_LIST`` rows) or 3 (the same, tab-separated)."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    first = next((line for line in lines if line.strip()), "")
    if first.startswith("OpenVPN CLIENT LIST"):
        return _parse_v1(lines)
    if first.startswith("TITLE\t") or first.startswith("TIME\t"):
        return _parse_v23(lines, "\t", 3)
    if first.startswith("TITLE,") or first.startswith("TIME,"):
        return _parse_v23(lines, ",", 2)
    if first.startswith("OpenVPN STATISTICS"):
        raise StatusFormatError("this is a client's status file (OpenVPN STATISTICS)")
    raise StatusFormatError(f"not an OpenVPN server status file (first line {first[:60]!r})")


def _parse_v1(lines: Sequence[str]) -> ServerStatus:
    updated: str | None = None
    section = "clients"
    rows: list[list[str]] = []
    routes: dict[str, str] = {}  # real address -> IPv4 virtual address
    for line in lines[1:]:
        if line.startswith("Updated,"):
            updated = line.split(",", 1)[1]
            continue
        if line == "ROUTING TABLE":
            section = "routes"
            continue
        if line in ("GLOBAL STATS", "END"):
            section = "other"
            continue
        if line.startswith("Common Name,") or line.startswith("Virtual Address,"):
            continue
        fields = line.split(",")
        if section == "clients" and len(fields) >= 5:
            rows.append(fields)
        elif section == "routes" and len(fields) >= 4 and _is_ipv4_host(fields[0]):
            routes.setdefault(fields[2], fields[0])
    clients = tuple(StatusClient(f[0], f[1], routes.get(f[1])) for f in rows)
    return ServerStatus(1, updated, clients)


def _parse_v23(lines: Sequence[str], sep: str, version: int) -> ServerStatus:
    headers: dict[str, list[str]] = {}
    updated: str | None = None
    clients: list[StatusClient] = []
    for line in lines:
        fields = line.split(sep)
        kind = fields[0]
        if kind == "TIME" and len(fields) > 1:
            updated = fields[1]
        elif kind == "HEADER" and len(fields) > 2:
            headers[fields[1]] = fields[2:]
        elif kind == "CLIENT_LIST":
            names = headers.get("CLIENT_LIST", [])
            row = dict(zip(names, fields[1:], strict=False))
            cn = row.get("Common Name", fields[1] if len(fields) > 1 else "")
            real = row.get("Real Address", fields[2] if len(fields) > 2 else "")
            virtual = row.get("Virtual Address") or None
            clients.append(StatusClient(cn, real, virtual))
    return ServerStatus(version, updated, tuple(clients))


def _is_ipv4_host(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


# --- log --------------------------------------------------------------------------------------

# "2026-12-04 14:35:46 " (log file), "2026-12-04T14:35:46+0000 host openvpn[1]: "
# (journalctl -o short-iso) and "Dec 04 14:35:46 host openvpn[1]: " (journalctl, syslog).
_FILE_TS = re.compile(r"^(\d{4}-\d\d-\d\d)([ T])(\d\d:\d\d:\d\d)\S*\s+")
_SYSLOG_TS = re.compile(r"^([A-Z][a-z]{2})\s+(\d{1,2}) (\d\d:\d\d:\d\d)\s+")
_JOURNAL_TAG = re.compile(r"^\S+ [\w@.\-]+\[\d+\]: ")  # "HOST openvpn[123]: "
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), start=1)}

# socket.c link_socket_connection_initiated(): "Peer Connection Initiated with [AF_INET]ADDR",
# prefixed with the client's "ADDR [CN] " (multi context before the CN is known).
_CONNECT = re.compile(r"\[(?P<cn>[^\]]+)\] Peer Connection Initiated with "
                      r"\[AF_INET6?\](?P<addr>\S+)")
# multi.c multi_connection_established(): printed when a CN already has a session.
DUPLICATE_CN_TEXT = ("MULTI: new connection by client '{cn}' will cause previous active "
                     "sessions by this client to be dropped.")
_DUPLICATE = re.compile(r"(?:(?P<pcn>[^\s/]+)/(?P<addr>\S+) )?MULTI: new connection by client "
                        r"'(?P<cn>[^']*)' will cause previous active sessions")
_POOL_EMPTY = re.compile(r"MULTI: no dynamic or static remote --ifconfig address is "
                         r"available for (?P<who>\S+)")


@dataclass(frozen=True, slots=True)
class LogEvent:
    kind: str  # "connect", "duplicate_cn", "pool_exhausted"
    common_name: str
    address: str | None  # "198.18.0.2:41234"
    time: datetime | None
    line: int

    @property
    def host(self) -> str | None:
        """The address without its port (IPv4 "a.b.c.d:port" or IPv6 "[x]:port"/"x:port")."""
        if self.address is None:
            return None
        addr = self.address
        if addr.startswith("["):
            return addr[1:].split("]", 1)[0]
        return addr.rsplit(":", 1)[0]


def _timestamp(line: str, year: int) -> tuple[datetime | None, str]:
    m = _FILE_TS.match(line)
    if m is not None:
        try:
            when = datetime.fromisoformat(f"{m.group(1)} {m.group(3)}")
        except ValueError:
            return None, line
        rest = line[m.end():]
        tag = _JOURNAL_TAG.match(rest) if m.group(2) == "T" else None
        return when, rest[tag.end():] if tag is not None else rest
    m = _SYSLOG_TS.match(line)
    if m is not None and m.group(1) in _MONTHS:
        try:
            when = datetime.fromisoformat(
                f"{year:04d}-{_MONTHS[m.group(1)]:02d}-{int(m.group(2)):02d} {m.group(3)}")
        except ValueError:
            return None, line
        rest = line[m.end():]
        tag = _JOURNAL_TAG.match(rest)
        return when, rest[tag.end():] if tag is not None else rest
    return None, line


# trivpn's JSON log lines (trivpn/runtime/events.py): event name → kind here.
_TRIVPN_EVENTS = {"peer_connected": "connect", "pool_exhausted": "pool_exhausted"}


def _trivpn_event(text: str, number: int, when: datetime | None) -> LogEvent | None:
    """A trivpn JSON log line: peer_connected, pool_exhausted, and peer_disconnected with
    reason duplicate_cn (its ``replaced_by`` is the new session's address)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("event")
    kind = _TRIVPN_EVENTS.get(str(name))
    address = data.get("peer")
    if name == "peer_disconnected" and data.get("reason") == "duplicate_cn":
        kind, address = "duplicate_cn", data.get("replaced_by")
    if kind is None or not isinstance(data.get("cn"), str):
        return None
    stamp = data.get("timestamp")
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            when = parsed.astimezone(UTC).replace(tzinfo=None)
        except ValueError:
            pass
    addr = str(address).rsplit("/", 1)[-1] if address is not None else None
    return LogEvent(kind, data["cn"], addr, when, number)


def log_events(lines: Iterable[str], *, year: int) -> list[LogEvent]:
    """Connects, duplicate-CN drops and pool exhaustion found in server log lines: OpenVPN's
    text or trivpn's JSON events (``year`` completes syslog timestamps, which carry none)."""
    events: list[LogEvent] = []
    for number, raw in enumerate(lines, start=1):
        if ("MULTI" not in raw and "Peer Connection" not in raw and "peer_" not in raw
                and "pool_exhausted" not in raw):
            continue
        when, text = _timestamp(raw.rstrip("\r\n"), year)
        if text.startswith("{"):
            event = _trivpn_event(text, number, when)
            if event is not None:
                events.append(event)
            continue
        m = _CONNECT.search(text)
        if m is not None:
            events.append(LogEvent("connect", m.group("cn"), m.group("addr"), when, number))
            continue
        m = _DUPLICATE.search(text)
        if m is not None:
            events.append(LogEvent("duplicate_cn", m.group("cn"), m.group("addr"), when,
                                   number))
            continue
        m = _POOL_EMPTY.search(text)
        if m is not None:
            who = m.group("who")
            cn, _, addr = who.partition("/")
            events.append(LogEvent("pool_exhausted", cn, addr or None, when, number))
    return events
