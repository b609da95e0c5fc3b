"""Counters and history shared by the operator tools (status file, management, metrics).

The runtimes only count bytes and packets (plain int attributes bumped in their loops). Every
other figure an operator sees comes from the typed runtime events (trivpn/runtime/events.py):
:class:`OperatorState` observes the runtime's event bus, counts handshakes, renegotiations,
failures by cause and reconnects, and tracks an OpenVPN-style connection state (``state`` in
the management interface). :class:`LogHistory` only keeps the recent log lines for ``log all``
/ ``log on``; it sees INFO lines even when ``verb`` hides them from the output. Nothing here
reads a log line's fields.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from trivpn.runtime import events as rt

LOG_HISTORY = 250  # OpenVPN's management-log-cache default
STATE_HISTORY = 100

_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR, "critical": logging.CRITICAL,
                  "exception": logging.ERROR}
_LEVEL_FLAGS = {"debug": "D", "info": "I", "warning": "W", "error": "N", "exception": "N",
                "critical": "F"}


@dataclass(slots=True)
class Traffic:
    """Link and device byte/packet counts of one tunnel (a client's, or one server peer's)."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    tun_read_bytes: int = 0
    tun_write_bytes: int = 0


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log line as the management interface shows it (the text is formatted only when
    someone reads it: most records are never shown)."""

    unix_time: int
    level: str
    event: str
    fields: Mapping[str, Any] = field(repr=False)

    @property
    def text(self) -> str:
        return format_fields(self.fields)

    @property
    def flags(self) -> str:
        return _LEVEL_FLAGS.get(self.level, "I")


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One OpenVPN state transition (``state`` command, ``>STATE:`` notifications)."""

    unix_time: int
    name: str
    detail: str = ""
    tun_ip: str = ""
    remote: tuple[str, int] | None = None
    local: tuple[str, int] | None = None

    def line(self) -> str:
        """``time,STATE,detail,tun_ip,remote_ip,remote_port,local_ip,local_port``."""
        remote = f"{self.remote[0]},{self.remote[1]}" if self.remote else ","
        local = f"{self.local[0]},{self.local[1]}" if self.local else ","
        return f"{self.unix_time},{self.name},{self.detail},{self.tun_ip},{remote},{local}"


@dataclass(slots=True)
class EventCounts:
    """Counters derived from runtime events."""

    handshakes: int = 0
    renegotiations: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    connects: int = 0


def format_fields(event_dict: Mapping[str, Any]) -> str:
    """``event key=value ...``: a log event as one line of text (no timestamp/level)."""
    parts = [str(event_dict.get("event", ""))]
    for key, value in event_dict.items():
        if key in ("event", "timestamp", "level") or value is None:
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts).replace("\n", " ").replace("\r", " ")


Subscriber = Callable[[LogRecord], None]
StateSubscriber = Callable[[StateRecord], None]


class LogHistory:
    """A structlog processor keeping the recent log lines for the management ``log`` command
    and ``>LOG:`` notifications. It only stores and forwards lines (it interprets none of
    them: the counters and the state come from typed events, see :class:`OperatorState`).

    ``output_level`` is the level the log output keeps: the history sees everything from INFO
    up and drops (``structlog.DropEvent``) what the output would not have shown.
    """

    def __init__(self, *, output_level: int = logging.INFO, history: int = LOG_HISTORY,
                 clock: Callable[[], float] = time.time) -> None:
        self.output_level = output_level
        self.clock = clock
        self.history: deque[LogRecord] = deque(maxlen=history)
        self.subscribers: list[Subscriber] = []

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        level = str(event_dict.get("level", method))
        name = str(event_dict.get("event", ""))
        # a copy: a renderer after this processor may take keys out of event_dict
        record = LogRecord(int(self.clock()), level, name, dict(event_dict))
        self.history.append(record)
        if self.subscribers:
            for subscriber in list(self.subscribers):
                subscriber(record)
        if _LEVEL_NUMBERS.get(level, logging.INFO) < self.output_level:
            raise structlog.DropEvent
        return event_dict


class OperatorState:
    """Counters and the OpenVPN-style connection state, observed from the runtime's
    :class:`~trivpn.runtime.events.EventBus` (subscribe the instance: it is an observer).

    Counts handshakes, renegotiations, failures by cause and reconnects (Prometheus), and
    tracks the ``state`` of the management interface (``>STATE:`` notifications).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counts = EventCounts()
        self.states: deque[StateRecord] = deque(maxlen=STATE_HISTORY)
        self.state_subscribers: list[StateSubscriber] = []
        self.seen_cns: set[str] = set()
        self.server_cn: str | None = None
        self._remote: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None
        self._tun_ip = ""
        self.set_state("CONNECTING")

    def __call__(self, event: rt.RuntimeEvent) -> None:  # noqa: PLR0912 - one branch per event
        c = self.counts
        if isinstance(event, rt.KeysReady):
            c.handshakes += 1
        elif isinstance(event, rt.Renegotiated):
            c.renegotiations += 1
        elif isinstance(event, rt.HandshakeFailed):
            c.handshake_failures[event.cause or "unknown"] += 1
        elif isinstance(event, rt.Reconnecting):
            c.reconnects += 1
            self.set_state("RECONNECTING", event.reason)
        elif isinstance(event, rt.PeerConnected):
            c.connects += 1
            cn = event.common_name
            if cn is not None:
                if cn in self.seen_cns:
                    c.reconnects += 1
                self.seen_cns.add(cn)
        elif isinstance(event, rt.LinkOpened):
            self._local = event.local_endpoint
            if event.peer is None:  # the server's listening socket
                self.set_state("CONNECTED", "SUCCESS")
            else:
                self._remote = event.peer_endpoint
                self.set_state("TCP_CONNECT" if event.proto == "tcp" else "WAIT")
        elif isinstance(event, rt.HandshakeStarted) and event.peer is None:
            self._client_progress("AUTH")
        elif isinstance(event, rt.TlsEstablished) and event.peer is None:
            self.server_cn = event.common_name
            self._client_progress("GET_CONFIG")
        elif isinstance(event, rt.PushApplied):
            self.set_state("ASSIGN_IP")
        elif isinstance(event, rt.TunConfigured):
            if event.addresses:
                self._tun_ip = event.addresses[0].split("/")[0]
            if event.ifindex is not None:  # client: the tunnel is complete
                self.set_state("CONNECTED", "SUCCESS")
        elif isinstance(event, rt.SignalReceived):
            self.set_state("EXITING", event.signal)

    # -- state ---------------------------------------------------------------------------

    def _client_progress(self, name: str) -> None:
        """A handshake step: a new state unless it is a renegotiation of a live tunnel."""
        if self.state.name != "CONNECTED":
            self.set_state(name)

    def set_state(self, name: str, detail: str = "") -> None:
        connected = name == "CONNECTED"
        record = StateRecord(int(self.clock()), name, detail,
                             self._tun_ip if name in ("CONNECTED", "ASSIGN_IP") else "",
                             self._remote if connected else None,
                             self._local if connected else None)
        self.states.append(record)
        for subscriber in list(self.state_subscribers):
            subscriber(record)

    @property
    def state(self) -> StateRecord:
        return self.states[-1]


def install_log_history(tap: LogHistory) -> None:
    """Put ``tap`` in front of the renderer of the current structlog configuration, and let
    INFO events reach it even when the output level is higher."""
    config = structlog.get_config()
    processors = list(config["processors"])
    processors.insert(max(len(processors) - 1, 0), tap)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min(tap.output_level,
                                                                logging.INFO)))
