"""structlog, configured once by the CLI: JSON lines by default, readable console on a terminal.

Event names are stable snake_case identifiers; fields are plain JSON values. Key material is
never logged: nothing here receives it, and the protocol objects' reprs hide it.
"""

from __future__ import annotations

import logging
import sys
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


def configure_logging(*, verb: int = 3, fmt: LogFormat | None = None,
                      stream: TextIO | None = None) -> None:
    """Route structlog to ``stream`` (stderr by default) as JSON or console lines."""
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_for_verb(verb)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
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

    def flush(self, log: structlog.stdlib.BoundLogger, now: float, **fields: Any) -> None:
        if not self._since_flush:
            return
        for reason, count in sorted(self._since_flush.items()):
            log.warning("packet_dropped", reason=reason, count=count,
                        total=self.totals[reason], **fields)
        self._since_flush.clear()
        self._last_flush = now
