"""Runtime events: what a client or server did, as typed values on one bus.

The runtimes publish an event where something an operator cares about happens (a link
opened, the tunnel configured, a peer connected, a handshake step, a reconnect…). Observers
subscribe to the :class:`EventBus`. The bus writes each event as its JSON log line first (the
names and fields in docs/events.md), then the operator tools
(:class:`~trivpn.runtime.stats.OperatorState`: counters for Prometheus, the management
``state``) read the typed fields. Nothing reads a log line back.

Per-packet outcomes are not events: drops stay aggregated counters (see
:class:`~trivpn.protocol.errors` and ``DropAggregator``), so the data path pays nothing here.
Peers are named by their ``label`` (``host:port``); ``peer`` is ``None`` in a client, whose
only peer is its server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog

Log = structlog.stdlib.BoundLogger


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """Base of the runtime events; ``name`` is the log event name, ``level`` its log level."""

    name: ClassVar[str] = "runtime_event"
    level: ClassVar[str] = "info"

    def log_level(self) -> str:
        return self.level

    def log_fields(self) -> dict[str, Any]:
        """The fields of the log line, in the order docs/events.md lists them."""
        return {}


@dataclass(frozen=True, slots=True)
class LinkOpened(RuntimeEvent):
    """The transport is up: a server's listening socket (``peer`` is None) or a client's
    socket/connection towards ``peer``. ``proto`` is udp, tcp or tcp-server; addresses are
    ``host:port`` text as logged."""

    name: ClassVar[str] = "link_open"
    proto: str
    local: str
    peer: str | None = None

    @property
    def local_endpoint(self) -> tuple[str, int] | None:
        return parse_endpoint(self.local)

    @property
    def peer_endpoint(self) -> tuple[str, int] | None:
        return None if self.peer is None else parse_endpoint(self.peer)

    def log_fields(self) -> dict[str, Any]:
        return {"proto": self.proto, "local": self.local} | _peer(self.peer)


@dataclass(frozen=True, slots=True)
class TunConfigured(RuntimeEvent):
    """The tunnel device is configured. A client's event carries the ``ifindex`` (its tunnel
    is then complete); ``description`` is the device's own summary (device, kind, mtu,
    addresses, routes)."""

    name: ClassVar[str] = "tun_configured"
    addresses: tuple[str, ...]
    description: Mapping[str, object] = field(repr=False)
    ifindex: int | None = None
    reused: bool = False
    reconfigured: bool = True
    topology: str | None = None

    def log_fields(self) -> dict[str, Any]:
        if self.ifindex is not None:
            head: dict[str, Any] = {"ifindex": self.ifindex, "reused": self.reused,
                                    "reconfigured": self.reconfigured}
        else:
            head = {"topology": self.topology}
        return {**head, **self.description}


@dataclass(frozen=True, slots=True)
class HandshakeStarted(RuntimeEvent):
    """The TLS handshake of key ``key_id`` started (with ``peer``, on a server)."""

    name: ClassVar[str] = "tls_handshake_started"
    key_id: int
    peer: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return _peer(self.peer) | {"key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class TlsEstablished(RuntimeEvent):
    """The TLS handshake finished; ``common_name`` is the other side's certificate CN."""

    name: ClassVar[str] = "tls_handshake_complete"
    key_id: int
    common_name: str
    tls: str
    peer: str | None = None

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:  # a client names its server by CN
            return {"key_id": self.key_id, "tls": self.tls, "peer": self.common_name}
        return {"peer": self.peer, "key_id": self.key_id, "cn": self.common_name,
                "tls": self.tls}


@dataclass(frozen=True, slots=True)
class KeysReady(RuntimeEvent):
    """Key method 2 finished: the data channel of ``key_id`` is ready (the first key of a
    session: a handshake)."""

    name: ClassVar[str] = "key_method_complete"
    key_id: int
    cipher: str
    peer_id: int | None
    peer: str | None = None
    common_name: str | None = None
    key_derivation: str = "prf"  # or "tls-ekm" (docs/protocol.md §6.3)

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:
            return {"key_id": self.key_id, "cipher": self.cipher, "peer_id": self.peer_id,
                    "key_derivation": self.key_derivation}
        return {"peer": self.peer, "cn": self.common_name, "key_id": self.key_id,
                "cipher": self.cipher, "peer_id": self.peer_id,
                "key_derivation": self.key_derivation}


@dataclass(frozen=True, slots=True)
class Renegotiated(RuntimeEvent):
    """A new key replaced the live one (a renegotiation)."""

    name: ClassVar[str] = "renegotiated"
    key_id: int
    cipher: str = ""
    peer_id: int | None = None
    peer: str | None = None
    common_name: str | None = None

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:
            return {"key_id": self.key_id, "cipher": self.cipher, "peer_id": self.peer_id}
        return {"peer": self.peer, "cn": self.common_name, "key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class HandshakeFailed(RuntimeEvent):
    """A handshake failed with ``cause`` (one of the CAUSE_* of protocol/events.py)."""

    name: ClassVar[str] = "handshake_failed"
    level: ClassVar[str] = "warning"
    key_id: int
    cause: str
    phase: str
    detail: str
    peer: str | None = None
    common_name: str | None = None

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:
            return {"key_id": self.key_id, "cause": self.cause, "phase": self.phase,
                    "detail": self.detail}
        return {"peer": self.peer, "cn": self.common_name, "key_id": self.key_id,
                "cause": self.cause, "detail": self.detail, "phase": self.phase}


@dataclass(frozen=True, slots=True)
class CertificateRejected(RuntimeEvent):
    """A check the config asks for (crl_verify, ns_cert_type, remote_cert_ku,
    remote_cert_eku, tls_verify) refused the other side's certificate; a HandshakeFailed
    follows."""

    name: ClassVar[str] = "peer_cert_rejected"
    level: ClassVar[str] = "warning"
    check: str
    serial: int
    common_name: str
    detail: str
    peer: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return _peer(self.peer) | {"check": self.check, "serial": str(self.serial),
                                   "cn": self.common_name, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class KeyExpired(RuntimeEvent):
    """The key in use reached the end of its transition window before a new one replaced it."""

    name: ClassVar[str] = "key_expired"
    level: ClassVar[str] = "warning"
    key_id: int
    peer: str | None = None
    common_name: str | None = None

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:
            return {"key_id": self.key_id}
        return {"peer": self.peer, "cn": self.common_name, "key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class PushApplied(RuntimeEvent):
    """A client received its PUSH_REPLY; ``summary`` is what the log line shows of it."""

    name: ClassVar[str] = "push_reply_received"
    summary: Mapping[str, object] = field(repr=False)

    def log_fields(self) -> dict[str, Any]:
        return dict(self.summary)


@dataclass(frozen=True, slots=True)
class PeerConnected(RuntimeEvent):
    """Server: a client is admitted and its tunnel address routed."""

    name: ClassVar[str] = "peer_connected"
    peer: str
    common_name: str | None
    vpn_ip: str | None
    cipher: str
    peer_id: int
    proto: str
    vpn_ip6: str | None = None  # with server-ipv6

    def log_fields(self) -> dict[str, Any]:
        fields = {"peer": self.peer, "cn": self.common_name, "vpn_ip": self.vpn_ip,
                  "cipher": self.cipher, "peer_id": self.peer_id, "proto": self.proto}
        if self.vpn_ip6 is not None:
            fields["vpn_ip6"] = self.vpn_ip6
        return fields


@dataclass(frozen=True, slots=True)
class Reconnecting(RuntimeEvent):
    """Client: the connection ended with ``reason``; the next attempt is to ``remote``."""

    name: ClassVar[str] = "reconnecting"
    reason: str
    detail: str
    delay: float
    remote: str
    proto: str

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "delay": self.delay,
                "remote": self.remote, "proto": self.proto}


@dataclass(frozen=True, slots=True)
class SignalReceived(RuntimeEvent):
    """A stop signal arrived; ``action`` (client) says whether it exits now or cleanly."""

    name: ClassVar[str] = "signal_received"
    signal: str
    action: str | None = None

    @property
    def urgent(self) -> bool:
        return self.action == "exit_now"

    def log_fields(self) -> dict[str, Any]:
        if self.action is None:
            return {"signal": self.signal}
        return {"signal": self.signal, "action": self.action}


@dataclass(frozen=True, slots=True)
class PeerDisconnected(RuntimeEvent):
    """Server: a client was removed for ``reason``; ``extra`` carries what that reason adds
    (``cause``, ``how``, ``detail``, ``replaced_by``)."""

    name: ClassVar[str] = "peer_disconnected"
    reason: str
    peer: str
    common_name: str | None
    vpn_ip: str | None
    peer_id: int
    was_connected: bool
    extra: Mapping[str, object] = field(default_factory=dict, repr=False)

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason, "peer": self.peer, "cn": self.common_name,
                "vpn_ip": self.vpn_ip, "peer_id": self.peer_id,
                "was_connected": self.was_connected, **self.extra}


@dataclass(frozen=True, slots=True)
class PingRestart(RuntimeEvent):
    """Nothing came from the other side for ``ping-restart`` seconds: a client reconnects
    (a warning), a server removes the peer."""

    name: ClassVar[str] = "ping_restart"
    silent_for: float
    peer: str | None = None
    common_name: str | None = None

    def log_level(self) -> str:
        return "warning" if self.peer is None else "info"

    def log_fields(self) -> dict[str, Any]:
        if self.peer is None:
            return {"silent_for": self.silent_for}
        return {"peer": self.peer, "cn": self.common_name, "silent_for": self.silent_for}


@dataclass(frozen=True, slots=True)
class PacketsDropped(RuntimeEvent):
    """Packets dropped for ``reason`` since the last such event (``count``; ``total`` since
    the start). Published per flush interval, never per packet: the data path only counts."""

    name: ClassVar[str] = "packet_dropped"
    level: ClassVar[str] = "warning"
    reason: str
    count: int
    total: int

    def log_fields(self) -> dict[str, Any]:
        return {"reason": self.reason, "count": self.count, "total": self.total}


Observer = Callable[[RuntimeEvent], None]


class EventBus:
    """Delivers each published event to the log and then to every observer, in
    subscription order.

    Logging is the first observer: :meth:`publish` writes the event's log line on the logger
    it is given (a bound logger keeps its context, e.g. a client connection's ``remote``), or
    on the bus's own.
    """

    def __init__(self, log: Log | None = None) -> None:
        self.log = log
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add ``observer``; the returned callable removes it."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)
        return unsubscribe

    def publish(self, event: RuntimeEvent, log: Log | None = None) -> None:
        target = log if log is not None else self.log
        if target is not None:
            write_log(target, event)
        for observer in tuple(self._observers):
            observer(event)


class DropCounts(Protocol):
    def take(self, now: float) -> list[tuple[str, int, int]]: ...


def publish_drops(bus: EventBus, drops: DropCounts, now: float, log: Log | None = None) -> None:
    """One :class:`PacketsDropped` per reason counted since the last call."""
    for reason, count, total in drops.take(now):
        bus.publish(PacketsDropped(reason, count, total), log)


def write_log(log: Log, event: RuntimeEvent) -> None:
    """``event`` as its log line (docs/events.md) on ``log``."""
    fields = event.log_fields()
    if event.log_level() == "warning":
        log.warning(event.name, **fields)
    else:
        log.info(event.name, **fields)


def _peer(peer: str | None) -> dict[str, Any]:
    return {} if peer is None else {"peer": peer}


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` as (host, port); None if it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None
