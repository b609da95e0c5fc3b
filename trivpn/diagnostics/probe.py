"""Network probes for ``trivpn doctor``: send a real OpenVPN reset to a configured remote and
classify what comes back.

Every probe uses the protocol core's codecs (:func:`~trivpn.protocol.packets.encode_control`,
the configured :mod:`~trivpn.protocol.wrap`), creates its sockets inside the doctor's network
namespace when one is set, talks only to addresses taken from the config's ``remote`` lines, is
bounded in attempts and time, and records each step in a :class:`Timeline` (seconds since the
probe started) so that evidence shows *when* something happened or stopped happening.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from trivpn.config import ConfigError, Options, Remote
from trivpn.diagnostics.model import CheckResult, DoctorContext, skip
from trivpn.protocol.errors import AuthenticationError, ProtocolError
from trivpn.protocol.framing import StreamDeframer, frame
from trivpn.protocol.packets import (
    ControlPacket,
    Opcode,
    decode_control,
    encode_control,
    looks_like_server_reset,
)
from trivpn.protocol.tlscryptv2 import EARLY_NEG_START, TlsCryptV2
from trivpn.protocol.wrap import ControlWrap, NoWrap
from trivpn.runtime.link import make_socket
from trivpn.sessionsetup import control_wrap

Transport = Literal["udp", "tcp"]
ReplyKind = Literal["openvpn_reset", "hmac_mismatch", "unwrapped_reset", "openvpn_other",
                    "not_openvpn"]
State = Literal["open", "closed", "filtered", "open_not_openvpn"]

MAX_TARGETS = 4  # remotes probed per check; OpenVPN itself tries them one by one
RESET_ATTEMPTS = 3
RESET_INTERVAL = 1.0  # seconds between reset retransmissions (3 attempts over ~3 s)
TCP_CONNECT_TIMEOUT = 3.0
RECV_SIZE = 65536

_UNREACHABLE = {
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "net_unreachable",
    errno.EACCES: "admin_prohibited",
    errno.EPERM: "blocked_locally",
}


class Timeline:
    """Named steps, each with its time in seconds since the timeline started."""

    def __init__(self, start: float | None = None) -> None:
        self._start = trio.current_time() if start is None else start
        self.steps: list[dict[str, Any]] = []

    @property
    def start(self) -> float:
        return self._start

    def elapsed(self, at: float | None = None) -> float:
        return round((trio.current_time() if at is None else at) - self._start, 4)

    def add(self, step: str, at: float | None = None, **details: Any) -> None:
        self.steps.append({"step": step, "t": self.elapsed(at), **details})


@dataclass(frozen=True, slots=True)
class Target:
    """One resolved ``remote`` line."""

    host: str
    address: str
    port: int
    transport: Transport
    line: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.address, self.port)

    def describe(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{addr}:{self.port}/{self.transport}"

    def as_evidence(self) -> dict[str, Any]:
        return {"host": self.host, "address": self.address, "port": self.port,
                "proto": self.transport, "remote_line": self.line}


def transport_of(remote: Remote) -> Transport:
    return "udp" if remote.proto == "udp" else "tcp"


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _dns_rows(options: Options, dns: CheckResult | None) -> list[Any] | None:
    if dns is None or dns.status not in ("ok", "warn"):
        return None
    rows = dns.evidence.get("remotes")
    if not isinstance(rows, list) or len(rows) != len(options.remotes):
        return None
    return rows


async def resolve_targets(options: Options, dns: CheckResult | None = None,
                          ) -> tuple[list[Target], list[dict[str, Any]]]:
    """The config's remotes as addresses (the first address of each, as OpenVPN tries first),
    plus the remotes that did not resolve. Addresses come from the ``dns.remote`` result when
    given, else literal addresses are used as they are and names are resolved here. Only
    addresses of ``remote`` lines are ever returned."""
    targets: list[Target] = []
    unresolved: list[dict[str, Any]] = []
    rows = _dns_rows(options, dns)
    for i, remote in enumerate(options.remotes[:MAX_TARGETS]):
        transport = transport_of(remote)
        address = _literal(remote.host)
        if address is None and rows is not None:
            found = rows[i].get("addresses") if isinstance(rows[i], dict) else None
            if found:
                address = str(found[0])
            else:
                unresolved.append({"host": remote.host, "remote_line": remote.line,
                                   "error": str(rows[i].get("error", "did not resolve"))})
                continue
        if address is None:
            family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(remote.family or 0, 0)
            kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            try:
                with trio.fail_after(5):
                    infos = await trio.socket.getaddrinfo(remote.host, remote.port, family, kind)
            except (OSError, trio.TooSlowError) as exc:
                unresolved.append({"host": remote.host, "remote_line": remote.line,
                                   "error": str(exc) or type(exc).__name__})
                continue
            if not infos:
                unresolved.append({"host": remote.host, "remote_line": remote.line,
                                   "error": "no addresses"})
                continue
            address = str(infos[0][4][0])
        targets.append(Target(remote.host, address, remote.port, transport, remote.line))
    return targets, unresolved


def config_name(options: Options) -> str:
    return options.config_path.name


def where(options: Options, directive: str) -> str:
    """``client.conf line 7`` for the first line of ``directive`` (or just the file name)."""
    loc = options.location(directive)
    if loc is None:
        return config_name(options)
    return f"{loc[0].name} line {loc[1]}"


def remote_where(options: Options, target: Target) -> str:
    return f"{config_name(options)} line {target.line} (remote {target.host} {target.port})"


@dataclass(frozen=True, slots=True)
class ProbeInputs:
    """What every network probe starts from: the options, the control wrapping as configured
    and the resolved remotes."""

    options: Options
    wrap: ControlWrap
    targets: list[Target]
    unresolved: list[dict[str, Any]]


async def probe_inputs(ctx: DoctorContext, check_id: str) -> ProbeInputs | CheckResult:
    """The shared prelude of the network checks, or the skip result explaining why they can't
    probe (no parsed config, no ``remote``, an unusable tls-auth/tls-crypt key, no remote that
    resolved)."""
    o = ctx.options
    if o is None:
        return skip(check_id, "skipped: the config did not parse")
    if not o.remotes:
        return skip(check_id, "skipped: the config has no 'remote' line to probe")
    try:
        wrap = control_wrap(o)
    except ConfigError as exc:
        return skip(check_id,
                    f"skipped: the tls-auth/tls-crypt key cannot be used ({exc.reason})")
    targets, unresolved = await resolve_targets(o, ctx.results.get("dns.remote"))
    if not targets:
        return skip(check_id, "skipped: no remote resolved (see dns.remote)",
                    unresolved=unresolved)
    return ProbeInputs(o, wrap, targets, unresolved)


def wrap_name(options: Options) -> str:
    if options.tls_crypt_v2 is not None:
        return "tls-crypt-v2"
    if options.tls_crypt is not None:
        return "tls-crypt"
    if options.tls_auth is not None:
        return "tls-auth"
    return "none"


def unix_offset() -> float:
    """Add to ``trio.current_time()`` to get Unix time (tls-auth/tls-crypt timestamps)."""
    return time.time() - trio.current_time()


def new_session_id() -> bytes:
    while True:
        sid = os.urandom(8)
        if any(sid):
            return sid


def client_reset(wrap: ControlWrap, session_id: bytes, packet_id: int) -> bytes:
    """A P_CONTROL_HARD_RESET_CLIENT_V2 (message id 0, no acks), wrapped as ``wrap`` says; with
    a tls-crypt-v2 client key the v3 reset a 2.6 client sends (docs/protocol.md §3.4)."""
    opcode = Opcode.CONTROL_HARD_RESET_CLIENT_V2
    if isinstance(wrap, TlsCryptV2):
        opcode, packet_id = Opcode.CONTROL_HARD_RESET_CLIENT_V3, EARLY_NEG_START + packet_id
    plain = encode_control(ControlPacket(opcode, 0, session_id, message_id=0))
    return wrap.wrap(plain, packet_id, int(time.time()))


def classify_reply(data: bytes, wrap: ControlWrap, session_id: bytes) -> ReplyKind:
    """What a reply to our reset is.

    ``openvpn_reset``: a HARD_RESET_SERVER_V2 that authenticates with ``wrap`` and acks our
    reset. ``hmac_mismatch``: it looks like a server reset but fails our key's authentication.
    ``unwrapped_reset``: a server reset without any tls-auth/tls-crypt although we wrap.
    ``openvpn_other``: an authenticated OpenVPN control packet that is not the answer.
    ``not_openvpn``: anything else.
    """
    try:
        packet = decode_control(wrap.unwrap(data).plain)
    except AuthenticationError:
        return "hmac_mismatch" if looks_like_server_reset(data) else "not_openvpn"
    except ProtocolError:
        packet = None
    if packet is not None:
        if (packet.opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2 and 0 in packet.acks
                and packet.remote_session_id == session_id):
            return "openvpn_reset"
        return "openvpn_other"
    if not isinstance(wrap, NoWrap):
        try:
            plain = decode_control(data)
        except ProtocolError:
            return "not_openvpn"
        if (plain.opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2
                and plain.remote_session_id == session_id):
            return "unwrapped_reset"
    return "not_openvpn"


@dataclass
class Exchange:
    """What one reset probe saw. ``state`` uses the words of the ``port.reachable`` check."""

    target: Target
    wrap: str
    connected: bool
    timeline: Timeline
    attempts: int = 0
    replies: list[dict[str, Any]] = field(default_factory=list)
    icmp: str | None = None  # port_unreachable, host_unreachable... (ICMP error or TCP connect)
    tcp: str | None = None  # connected, refused, timeout, unreachable, closed_by_peer
    error: str | None = None

    @property
    def answered(self) -> dict[str, Any] | None:
        """The first reply that is a proper OpenVPN reset for us, if any."""
        return next((r for r in self.replies if r["kind"] == "openvpn_reset"), None)

    @property
    def state(self) -> State:
        if self.replies:
            openvpn = {"openvpn_reset", "hmac_mismatch", "unwrapped_reset", "openvpn_other"}
            if any(r["kind"] in openvpn for r in self.replies):
                return "open"
            return "open_not_openvpn"
        if self.tcp == "connected":
            return "open_not_openvpn"
        if self.icmp == "port_unreachable" or self.tcp == "refused":
            return "closed"
        return "filtered"

    def evidence(self) -> dict[str, Any]:
        first = self.replies[0] if self.replies else None
        return {
            "state": self.state,
            "sent_to": self.target.describe(),
            "target": self.target.as_evidence(),
            "wrap": self.wrap,
            "attempts": self.attempts,
            "reply_from": first["from"] if first else None,
            "reply_kind": first["kind"] if first else None,
            "bytes_received": [r["bytes"] for r in self.replies],
            "first_reply_s": first["t"] if first else None,
            "icmp": self.icmp,
            "tcp": self.tcp,
            "error": self.error,
            "timeline": self.timeline.steps,
        }


def _addr_text(addr: Any) -> str:
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _icmp_word(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "port_unreachable"
    return _UNREACHABLE.get(exc.errno or 0, errno.errorcode.get(exc.errno or 0, "error"))


# Linux <linux/errqueue.h> and <linux/in.h>/<linux/in6.h> (not all in Python's socket module).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err
REPROBE_ATTEMPTS = 4  # more resets, RESET_INTERVAL apart, before silence counts as filtered


@dataclass(frozen=True, slots=True)
class IcmpError:
    """One ICMP error the kernel queued for a UDP socket with IP_RECVERR (MSG_ERRQUEUE)."""

    word: str  # port_unreachable, host_unreachable, ...
    icmp_type: int
    icmp_code: int
    offender: str | None  # who sent the ICMP error
    original_destination: str | None  # where the datagram that caused it was going

    def as_evidence(self) -> dict[str, Any]:
        return {"error": self.word, "icmp_type": self.icmp_type, "icmp_code": self.icmp_code,
                "icmp_from": self.offender}


def _sockaddr_in(raw: bytes) -> str | None:
    """The address in a struct sockaddr_in / sockaddr_in6 (the SO_EE_OFFENDER)."""
    if len(raw) >= 8 and int.from_bytes(raw[:2], sys.byteorder) == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and int.from_bytes(raw[:2], sys.byteorder) == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def read_icmp_errors(sock: socket.socket) -> list[IcmpError]:
    """Drain the socket's error queue (IP_RECVERR must be on); never blocks."""
    found: list[IcmpError] = []
    while True:
        try:
            _data, ancdata, _flags, addr = sock.recvmsg(RECV_SIZE, 1024, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return found
        except OSError:
            return found
        for level, kind, payload in ancdata:
            if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR),
                                     (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                continue
            if len(payload) < _EE.size:
                continue
            err, origin, icmp_type, icmp_code, _pad, _info, _data32 = _EE.unpack_from(payload)
            if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                continue
            word = ("port_unreachable" if err == errno.ECONNREFUSED else
                    _UNREACHABLE.get(err, errno.errorcode.get(err, "error")))
            found.append(IcmpError(word, icmp_type, icmp_code,
                                   _sockaddr_in(payload[_EE.size:]),
                                   _addr_text(addr) if addr else None))


def udp_socket(target: Target, netns: str | None) -> socket.socket:
    """An unconnected UDP socket for ``target``'s family, created inside ``netns`` when set,
    with IP_RECVERR on so that ICMP errors are queued with their details."""
    sock = make_socket(target.family, socket.SOCK_DGRAM, netns)
    if target.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    with contextlib.suppress(OSError):  # on a v6 socket: for IPv4-mapped peers
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    return sock


async def udp_reset_exchange(target: Target, wrap: ControlWrap, *, wrap_label: str,
                             netns: str | None, connected: bool = True,
                             attempts: int = RESET_ATTEMPTS,
                             interval: float = RESET_INTERVAL, reprobe: int = 0) -> Exchange:
    """Send up to ``attempts`` resets ``interval`` apart and listen until ``interval`` after the
    last one; when that stays silent, ``reprobe`` more resets go out the same way before the
    exchange gives up (a host that rate-limits its ICMP errors (Linux: net.ipv4.icmp_ratelimit,
    one per second per client by default, after a burst of six) answers a closed port only
    now and then, and silence alone must not turn "closed" into "filtered").

    The socket is never connected: ICMP errors are read from its error queue (IP_RECVERR,
    MSG_ERRQUEUE) with their type, code and sender, and only those about ``target`` count.
    ``connected`` keeps what a connected socket would see (replies from ``target`` only; others
    are noted in the timeline); without it replies from any source are kept."""
    timeline = Timeline()
    ex = Exchange(target, wrap_label, connected, timeline)
    sid = new_session_id()
    want = _addr_text(target.sockaddr)
    std = udp_socket(target, netns)
    total = attempts
    with trio.socket.from_stdlib_socket(std) as sock:
        next_send = trio.current_time()
        end = next_send + attempts * interval

        def icmp_seen() -> bool:
            for err in read_icmp_errors(std):
                if err.original_destination not in (None, want):
                    timeline.add("icmp_error_elsewhere", to=err.original_destination,
                                 **err.as_evidence())
                    continue
                ex.icmp = err.word
                timeline.add("icmp_error", **err.as_evidence())
                return True
            return False

        while True:
            now = trio.current_time()
            if now >= end:
                if icmp_seen():
                    break
                if total < attempts + reprobe:
                    total = attempts + reprobe
                    end = now + reprobe * interval
                    next_send = now
                    timeline.add("reprobe", attempts=reprobe)
                    continue
                timeline.add("gave_up", attempts=ex.attempts)
                break
            if ex.attempts < total and now >= next_send:
                packet = client_reset(wrap, sid, ex.attempts + 1)
                try:
                    await sock.sendto(packet, target.sockaddr)
                except OSError as exc:
                    if icmp_seen():
                        break
                    ex.icmp = _icmp_word(exc)
                    timeline.add("send_error", error=ex.icmp)
                    break
                ex.attempts += 1
                timeline.add("reset_sent", attempt=ex.attempts, bytes=len(packet))
                next_send = now + interval
            wake = min(end, next_send) if ex.attempts < total else end
            with trio.move_on_at(wake):
                try:
                    data, addr = await sock.recvfrom(RECV_SIZE)
                except OSError:  # an ICMP error is pending: its details are in the queue
                    if icmp_seen():
                        break
                    continue
                kind = classify_reply(data, wrap, sid)
                reply = {"from": _addr_text(addr), "bytes": len(data), "kind": kind,
                         "t": timeline.elapsed()}
                if connected and reply["from"] != want:
                    timeline.add("reply_elsewhere", source=reply["from"], bytes=len(data),
                                 kind=kind)
                    continue
                ex.replies.append(reply)
                timeline.add("reply", source=reply["from"], bytes=len(data), kind=kind)
                if kind in {"openvpn_reset", "not_openvpn"}:
                    break
    return ex


async def tcp_reset_exchange(target: Target, wrap: ControlWrap, *, wrap_label: str,
                             netns: str | None, reply_wait: float = 3.0) -> Exchange:
    """Connect (refused → closed, timeout/unreachable → filtered); once accepted send the
    framed reset and wait ``reply_wait`` seconds for the framed server reset."""
    timeline = Timeline()
    ex = Exchange(target, wrap_label, True, timeline)
    sid = new_session_id()
    sock = trio.socket.from_stdlib_socket(make_socket(target.family, socket.SOCK_STREAM, netns))
    with sock:
        timeline.add("connect_started")
        try:
            with trio.fail_after(TCP_CONNECT_TIMEOUT):
                await sock.connect(target.sockaddr)
        except trio.TooSlowError:
            ex.tcp = "timeout"
            timeline.add("connect_timeout")
            return ex
        except ConnectionRefusedError:
            ex.tcp = "refused"
            timeline.add("connect_refused")
            return ex
        except OSError as exc:
            ex.tcp = "unreachable"
            ex.icmp = _icmp_word(exc)
            timeline.add("connect_error", error=ex.icmp)
            return ex
        ex.tcp = "connected"
        timeline.add("connected")
        stream = trio.SocketStream(sock)
        packet = client_reset(wrap, sid, 1)
        try:
            await stream.send_all(frame(packet))
        except (OSError, trio.BrokenResourceError) as exc:
            ex.error = str(exc)
            return ex
        ex.attempts = 1
        timeline.add("reset_sent", attempt=1, bytes=len(packet))
        deframer = StreamDeframer()
        with trio.move_on_after(reply_wait):
            while True:
                try:
                    data = await stream.receive_some(RECV_SIZE)
                except (OSError, trio.BrokenResourceError) as exc:
                    ex.error = str(exc)
                    timeline.add("connection_error", error=str(exc))
                    break
                if not data:
                    timeline.add("closed_by_peer")
                    ex.error = "the server closed the connection without answering"
                    break
                try:
                    packets = deframer.feed(data)
                except ProtocolError:
                    ex.replies.append({"from": target.describe(), "bytes": len(data),
                                       "kind": "not_openvpn", "t": timeline.elapsed()})
                    timeline.add("reply", kind="not_openvpn", bytes=len(data))
                    break
                for reply_bytes in packets:
                    kind = classify_reply(reply_bytes, wrap, sid)
                    ex.replies.append({"from": target.describe(), "bytes": len(reply_bytes),
                                       "kind": kind, "t": timeline.elapsed()})
                    timeline.add("reply", kind=kind, bytes=len(reply_bytes))
                if ex.replies:
                    break
    return ex


async def reset_exchange(target: Target, wrap: ControlWrap, *, wrap_label: str,
                         netns: str | None, attempts: int = RESET_ATTEMPTS,
                         interval: float = RESET_INTERVAL, reprobe: int = 0) -> Exchange:
    """The reset exchange over the target's transport (UDP, replies from the target only, or
    TCP); ``reprobe`` as for :func:`udp_reset_exchange` (UDP only)."""
    if target.transport == "udp":
        return await udp_reset_exchange(target, wrap, wrap_label=wrap_label, netns=netns,
                                        attempts=attempts, interval=interval, reprobe=reprobe)
    return await tcp_reset_exchange(target, wrap, wrap_label=wrap_label, netns=netns,
                                    reply_wait=attempts * interval)


def open_target(ctx: DoctorContext, targets: list[Target]) -> Target:
    """The target ``port.reachable`` found open (if its result is known), else the first."""
    result = ctx.results.get("port.reachable")
    if result is not None:
        for entry in result.evidence.get("targets", ()):
            if entry.get("state") == "open" and entry.get("reply_kind") == "openvpn_reset":
                for t in targets:
                    if t.describe() == entry.get("sent_to"):
                        return t
    return targets[0]
