"""structlog, configured once by the CLI: JSON lines by default, readable console on a terminal.

Event names are stable snake_case identifiers; fields are plain JSON values. Key material is
never logged: nothing here receives it, and the protocol objects' reprs hide it.
"""

from __future__ import annotations

import logging
import sys
import syslog
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]


def level_for_verb(verb: int) -> int:
    """OpenVPN's ``verb``: 0 only fatal errors, 1-3 normal, 4 adds pushes/peer-info, 5+ debug."""
    if verb <= 0:
        return logging.ERROR
    if verb <= 3:
        return logging.INFO
    return logging.DEBUG


class Mute:
    """``mute N``: at most N consecutive lines of the same event; the next different event
    carries ``muted`` (how many were left out), like OpenVPN's "N variation(s) on previous M
    message(s) suppressed by --mute". OpenVPN groups messages by category; trivpn by event
    name."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._last: str | None = None
        self._count = 0
        self._muted = 0

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        name = event_dict.get("event")
        if name == self._last:
            self._count += 1
            if self._count > self.limit:
                self._muted += 1
                raise structlog.DropEvent
            return event_dict
        self._last, self._count = name, 1
        if self._muted:
            event_dict["muted"] = self._muted
            self._muted = 0
        return event_dict


class SyslogLogger:
    """Writes rendered lines to the system logger (``syslog [NAME]``, ``daemon``)."""

    _PRIORITIES: Mapping[str, int] = {
        "debug": syslog.LOG_DEBUG, "info": syslog.LOG_INFO, "msg": syslog.LOG_INFO,
        "warning": syslog.LOG_WARNING, "error": syslog.LOG_ERR, "exception": syslog.LOG_ERR,
        "critical": syslog.LOG_CRIT}

    def __init__(self, ident: str) -> None:
        syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_DAEMON)

    def __getattr__(self, method: str) -> Any:
        priority = self._PRIORITIES.get(method, syslog.LOG_INFO)

        def write(message: str) -> None:
            syslog.syslog(priority, message)
        return write


def configure_logging(*, verb: int = 3, fmt: LogFormat | None = None,
                      stream: TextIO | None = None, syslog_ident: str | None = None,
                      mute: int | None = None, console_timestamps: bool = True) -> None:
    """Route structlog to ``stream`` (stderr by default) as JSON or console lines, or, with
    ``syslog_ident``, to the system logger as JSON. ``mute``: see :class:`Mute`.
    ``console_timestamps=False`` (``suppress-timestamps``) drops the time prefix of console
    lines; JSON lines keep their ``timestamp`` field."""
    out = stream if stream is not None else sys.stderr
    if syslog_ident is not None:
        fmt = "json"
    elif fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if mute:
        processors.append(Mute(mute))
    processors += [
        structlog.processors.add_log_level,
    ]
    if fmt == "json" or console_timestamps:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True,
                                                           key="timestamp"))
    processors += [
        structlog.processors.format_exc_info,
        renderer,
    ]
    factory: Any
    if syslog_ident is not None:
        logger = SyslogLogger(syslog_ident)
        factory = lambda *args: logger  # noqa: E731
    else:
        factory = structlog.PrintLoggerFactory(file=out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_for_verb(verb)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(**context)
    return logger


class DropAggregator:
    """Counts dropped packets per reason and logs one ``packet_dropped`` line per interval.

    The per-packet path only increments a counter; :meth:`flush` (called from a timer) logs the
    totals since the last flush, so a flood of garbage costs one log line per interval.
    """

    def __init__(self, interval: float = 10.0, *, muted: frozenset[str] = frozenset()) -> None:
        self.interval = interval
        self.muted = muted  # counted in ``totals`` (metrics), never logged
        self.totals: Counter[str] = Counter()
        self._since_flush: Counter[str] = Counter()
        self._last_flush: float | None = None

    def add(self, reason: str, count: int = 1) -> None:
        if reason not in self.muted:
            self._since_flush[reason] += count
        self.totals[reason] += count

    def merge(self, counts: Mapping[str, int]) -> None:
        for reason, count in counts.items():
            if count:
                self.add(reason, count)

    def due(self, now: float) -> bool:
        return bool(self._since_flush) and (
            self._last_flush is None or now - self._last_flush >= self.interval)

    def take(self, now: float) -> list[tuple[str, int, int]]:
        """(reason, count since the last take, total) per reason, and start a new interval."""
        out = [(reason, count, self.totals[reason])
               for reason, count in sorted(self._since_flush.items())]
        if out:
            self._since_flush.clear()
            self._last_flush = now
        return out

    def flush(self, log: structlog.stdlib.BoundLogger, now: float, **fields: Any) -> None:
        for reason, count, total in self.take(now):
            log.warning("packet_dropped", reason=reason, count=count, total=total, **fields)


class RateLimitedLog:
    """Logs an exception with its traceback at most once per ``interval`` per kind.

    A kind is the event name, the exception type and the place it was raised, so a peer that
    triggers the same bug 10,000 times costs one traceback per interval; the others are
    counted. :meth:`flush` (from a timer) logs one ``error_repeated`` line per kind with the
    count of tracebacks left out, like ``packet_dropped`` does for dropped packets. At most
    ``max_kinds`` kinds are remembered (the oldest is forgotten first).
    """

    def __init__(self, log: structlog.stdlib.BoundLogger, interval: float = 60.0,
                 max_kinds: int = 256) -> None:
        self.log = log
        self.interval = interval
        self.max_kinds = max_kinds
        self.totals: Counter[str] = Counter()
        # kind -> [time of the last traceback, occurrences left out since]
        self._kinds: dict[tuple[str, str, str], list[float]] = {}

    @staticmethod
    def _origin(exc: BaseException | None) -> str:
        tb = exc.__traceback__ if exc is not None else None
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None:
            return ""
        return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"

    def exception(self, event: str, now: float, **fields: Any) -> bool:
        """Call from an ``except`` block. True if the traceback was logged."""
        exc = sys.exc_info()[1]
        kind = (event, type(exc).__name__, self._origin(exc))
        self.totals[event] += 1
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            return False
        left_out = int(state[1]) if state is not None else 0
        self._kinds.pop(kind, None)
        if len(self._kinds) >= self.max_kinds:
            del self._kinds[next(iter(self._kinds))]
        self._kinds[kind] = [now, 0]
        if left_out:
            fields["repeated"] = left_out
        self.log.exception(event, **fields)
        return True

    def flush(self, now: float) -> None:
        """Log how many tracebacks were left out, per kind whose interval has passed."""
        for (event, error, origin), state in self._kinds.items():
            if state[1] and now - state[0] >= self.interval:
                self.log.warning("error_repeated", event_name=event, error=error,
                                 origin=origin, count=int(state[1]))
                state[1] = 0
