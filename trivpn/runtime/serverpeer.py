"""A server's client: :class:`Peer` (its session, where it is, what it was given) and
:class:`Pending` (a client that has not authenticated, as the pre-authentication ledger
counts it), and how a link address is written in logs."""

from __future__ import annotations

import ipaddress
import math
import socket

import trio

from trivpn.config.derive import PoolEntry
from trivpn.protocol.session import Session
from trivpn.runtime.link import Address
from trivpn.runtime.transport import ServerPacketLink

TCP_SEND_QUEUE = 1024
BATCH = 64  # packets read, encrypted and sent together


class Peer:
    """One client: its session, where it is, what it was given."""

    __slots__ = ("address", "admitted", "cancel_scope", "cert_serial", "common_name",
                 "connect_state", "connected", "created", "entry", "fixed_address",
                 "fixed_index6", "iroutes",
                 "iroutes6", "label", "learned", "mac_refused", "peer_id", "preauth",
                 "remove_at", "remove_reason", "removed", "reset_counted", "rx_bytes",
                 "rx_packets", "script_env", "session", "sleeping_until", "tcp", "tcp_recv",
                 "tcp_send", "tx_bytes", "tx_packets", "vaddr", "vaddr6", "vaddr_refused",
                 "wakeup")

    def __init__(self, session: Session, address: Address, peer_id: int, now: float,
                 tcp: ServerPacketLink | None = None, *,
                 tcp_queue: int = TCP_SEND_QUEUE) -> None:
        self.session = session
        self.address = address
        self.peer_id = peer_id
        self.created = now
        self.tcp = tcp
        self.tcp_send: trio.MemorySendChannel[bytes] | None = None
        self.tcp_recv: trio.MemoryReceiveChannel[bytes] | None = None
        if tcp is not None:
            # tcp-queue-limit: packets beyond it are dropped (_send_now counts them)
            self.tcp_send, self.tcp_recv = trio.open_memory_channel[bytes](tcp_queue)
        self.label = format_address(address)
        # its entry in the server's pre-authentication ledger until it authenticates
        self.preauth: Pending | None = None
        # TCP: its reset counts against connect-freq-initial until the client goes on
        self.reset_counted = False
        self.common_name: str | None = None
        self.cert_serial: int | None = None  # of the certificate it authenticated with
        self.entry: PoolEntry | None = None
        # ifconfig-push in its client-config-dir file: its fixed address (instead of entry)
        self.fixed_address: ipaddress.IPv4Address | None = None
        # iroute lines of its client-config-dir file: (network as int, prefix length)
        self.iroutes: tuple[tuple[int, int], ...] = ()
        self.iroutes6: tuple[tuple[int, int], ...] = ()  # iroute-ipv6 lines, likewise
        # ifconfig-ipv6-push inside the IPv6 pool: the pool entry it keeps from others
        self.fixed_index6: int | None = None
        self.admitted = False  # authenticated and given its addresses (max-clients counts it)
        self.vaddr: bytes | None = None
        # its IPv6 address (16 bytes): from the IPv6 pool, or its ifconfig-ipv6-push
        self.vaddr6: bytes | None = None
        self.connected = False
        self.removed = False
        self.mac_refused: tuple[str, ...] = ()  # TAP: reasons mac_refused was logged for
        self.remove_at: float | None = None
        self.remove_reason = "handshake_timeout"
        self.cancel_scope = trio.CancelScope()
        self.wakeup = trio.Event()
        # when the timer task sleeps, the deadline it sleeps until (-inf while it runs)
        self.sleeping_until = -math.inf
        # link traffic (status file, management, metrics)
        self.rx_bytes = self.rx_packets = self.tx_bytes = self.tx_packets = 0
        # server scripts (serverscripts.py): the client's environment set (None: no
        # per-client script configured); how far client-connect got ("none", "partial": a
        # handler succeeded but the client was refused later, "done": admitted), which
        # learn-address adds succeeded, and whether the one of its own address failed
        self.script_env: dict[str, str] | None = None
        self.connect_state = "none"
        self.learned: list[str] = []
        self.vaddr_refused = False

    def __repr__(self) -> str:
        return f"Peer({self.label}, peer_id={self.peer_id}, cn={self.common_name!r})"

    @property
    def vpn_ip(self) -> str | None:
        if self.entry is not None:
            return str(self.entry.local)
        return str(self.fixed_address) if self.fixed_address is not None else None

    @property
    def vpn_ip6(self) -> str | None:
        return str(ipaddress.IPv6Address(self.vaddr6)) if self.vaddr6 is not None else None

    @property
    def floatable(self) -> bool:
        """May a P_DATA_V2 from another address move it there (connected, over UDP)?"""
        return self.connected and self.tcp is None


class Pending:
    """A client that has not authenticated: the key of its pre-authentication ledger entry.
    For a TCP connection that has sent nothing valid yet (an opening), also its link and the
    cancel scope that evicts it."""

    __slots__ = ("address", "cancel_scope", "evicted", "link")

    def __init__(self, address: Address, link: ServerPacketLink | None = None) -> None:
        self.address = address
        self.link = link
        self.cancel_scope = trio.CancelScope()
        self.evicted = False


def next_deadline(peer: Peer) -> float:
    """The earliest of the session's next timer and the peer's removal time (inf: none)."""
    deadline = peer.session.next_timer()
    if deadline is None:
        deadline = math.inf
    if peer.remove_at is not None and peer.remove_at < deadline:
        deadline = peer.remove_at
    return deadline


def format_address(address: Address) -> str:
    """``ip:port``, ``[v6]:port`` (an IPv4-mapped ``::ffff:a.b.c.d`` as ``a.b.c.d:port``); a
    scoped IPv6 source (link-local, 4-tuple sockaddr with a
    scope id; recvfrom leaves ``%zone`` out of the host) as ``[fe80::1%eth0]:port``."""
    host, port = str(address[0]), address[1]
    if ":" not in host:
        return f"{host}:{port}"
    if host.startswith("::ffff:") and "." in host:  # an IPv4 client of a dual-stack socket
        return f"{host[7:]}:{port}"
    if len(address) > 3 and address[3] and "%" not in host:
        try:
            zone = socket.if_indextoname(int(address[3]))
        except OSError:
            zone = str(address[3])
        host = f"{host}%{zone}"
    return f"[{host}]:{port}"
