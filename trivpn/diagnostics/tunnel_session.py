"""One post-handshake session shared by every doctor check that needs the data channel.

Why one: each check doing its own handshake would cost a handshake's time per check, and an
OpenVPN server without ``duplicate-cn`` keeps one session per certificate common name — a new
handshake with the same certificate drops the previous session (OpenVPN
src/openvpn/multi.c, multi_delete_dup()). Checks with their own sessions would kick each other
out, and the doctor run with the certificate of a tunnel that is up kicks that tunnel once
(docs/doctor.md, "tunnel").

A :class:`TunnelBroker` lives for one doctor run (``commands/doctor.py`` opens it around
:func:`~trivpn.diagnostics.runner.run_checks` and puts it on ``DoctorContext.tunnel``). A check
writes::

    async with tunnel_lease(ctx) as t:      # TunnelUnavailable when there is no session
        await t.send(ip_packet)             # one inner IPv4/IPv6 packet, encrypted
        reply = await t.receive(match, deadline)

and has the session to itself until the ``async with`` ends (leases are exclusive, in arrival
order). The session is established once, in the broker's own task (a check that times out
while waiting does not abort it), by whichever comes first: ``tls.handshake`` asking for
:meth:`TunnelBroker.handshake` (it reports the phases, timeline and failure cause of this very
handshake: :class:`Handshake`) or a lease. So a doctor run makes one handshake with the
server, not one for tls.handshake and one for the data-channel checks. A failed handshake is
remembered and every later lease raises the same :class:`TunnelUnavailable`. When the context
has no broker (a check run alone, in tests), :func:`tunnel_lease` and tls.handshake open a
private one.

While the session is up a background loop drives it: decrypts what arrives, answers the
server's control traffic and runs the session's timers, so the server's keepalive pings are
answered between leases. Socket options a lease holder sets on the outer socket are put back
when its lease ends. Closing the broker says goodbye (explicit-exit-notify / OCC EXIT) the way
``tunnel.traffic`` always did.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import trio

from trivpn.config import ConfigError, Options
from trivpn.diagnostics.auth_diag import PLACEHOLDER_PASSWORD, PLACEHOLDER_USER
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.diagnostics.probe import Target, Timeline, open_target, probe_inputs
from trivpn.diagnostics.probe_session import SessionProbe, probe_config
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.push import Ifconfig as PushIfconfig
from trivpn.protocol.push import PushedOptions
from trivpn.protocol.session import SessionConfig

T = TypeVar("T")
BUFFER_PACKETS = 512  # inner packets kept for receive() within one lease (oldest dropped)


def handshake_budget(timeout: float) -> float:
    """Seconds the handshake may take: well inside a check's timeout."""
    return max(3.0, min(timeout * 0.8, 12.0))


SILENT_AFTER = 2.0  # seconds without any packet (not even an ack) from the server
GIVE_UP_AFTER = 3.5  # ... after which the handshake stops waiting
TLS_PHASES = (ev.PHASE_TLS_STARTED, ev.PHASE_TLS_COMPLETE, ev.PHASE_KEY_METHOD_SENT)


def server_gave_up(probe: SessionProbe) -> bool:
    """Inside TLS, the server has not sent anything (not even an ack) for GIVE_UP_AFTER seconds
    while we kept retransmitting: OpenVPN has dropped our session; waiting longer shows
    nothing new."""
    phases = probe.phases
    if not phases or phases[-1]["phase"] not in TLS_PHASES:
        return False
    silence = probe.silence()
    return bool(silence["server_silent_s"] >= GIVE_UP_AFTER
                and silence["sent_after_last_reply"])


@dataclass(eq=False)
class Handshake:
    """The doctor's handshake with the server, finished (established or failed): what
    ``tls.handshake`` reports from. ``probe`` keeps running while the session is up."""

    options: Options
    target: Target
    config: SessionConfig
    budget: float  # seconds the handshake was given
    prompted: bool  # 'auth-user-pass' prompts: a placeholder username/password was sent
    started: float  # trio time
    probe: SessionProbe

    @property
    def established(self) -> bool:
        session = self.probe.session
        return (self.probe.saw(ev.DataChannelReady) and session is not None
                and session.pushed is not None)


async def plan_handshake(ctx: DoctorContext
                         ) -> tuple[Options, Target, SessionConfig, float, bool]:
    """(options, target, session config, budget, prompted) for the doctor's handshake, as
    ``trivpn run`` would set the session up, with a hand-window inside the budget. A config
    whose credentials are prompted for logs in with a placeholder username/password (the
    doctor does not ask) to see how far it gets. Raises :class:`TunnelUnavailable`
    (``no_inputs``, ``config``)."""
    inputs = await probe_inputs(ctx, "tls.handshake")
    if isinstance(inputs, CheckResult):
        raise TunnelUnavailable("no_inputs", inputs.summary.removeprefix("skipped: "),
                                **dict(inputs.evidence))
    o, target = inputs.options, open_target(ctx, inputs.targets)
    budget = handshake_budget(ctx.timeout)
    prompted = o.auth_user_pass == "prompt"
    try:
        if prompted:
            config = dataclasses.replace(
                probe_config(dataclasses.replace(o, auth_user_pass=None),
                             hand_window=budget - 0.5),
                username=PLACEHOLDER_USER, password=PLACEHOLDER_PASSWORD)
        else:
            config = probe_config(o, hand_window=budget - 0.5)
    except (ConfigError, ProtocolError) as exc:
        raise TunnelUnavailable("config", f"cannot build the TLS setup from the config ({exc})",
                                error=str(exc)) from None
    return o, target, config, budget, prompted


def gateway_of(pushed: PushedOptions) -> tuple[str, str] | None:
    """(our tunnel address, the server's tunnel address) from what the server pushed:
    ``route-gateway`` for topology subnet, the ``ifconfig`` peer for net30/p2p."""
    if pushed.ifconfig is None:
        return None
    local = str(pushed.ifconfig.local)
    if pushed.topology == "subnet":
        gw = pushed.route_gateway
        if gw is None or gw == "dhcp":
            return None
        return local, str(gw)
    return local, str(pushed.ifconfig.remote_or_netmask)


class TunnelUnavailable(Exception):
    """No session to lease: ``cause`` is a stable word (``no_inputs``, ``config``,
    ``handshake_failed``, ``link_error``, ``closed``, ``error``), ``summary`` a sentence for a
    skip result, ``evidence`` what was observed (handshake failure cause and detail...)."""

    def __init__(self, cause: str, summary: str, *, handshake: Handshake | None = None,
                 **evidence: Any) -> None:
        super().__init__(summary)
        self.cause = cause
        self.summary = summary
        self.handshake = handshake  # the failed handshake, for tls.handshake's diagnosis
        self.evidence: dict[str, Any] = {"tunnel_unavailable": cause, **evidence}

    def skip_result(self, check_id: str) -> CheckResult:
        """The skip result a check returns when it has no session."""
        return CheckResult(check_id, "skip", f"skipped: {self.summary}", dict(self.evidence))


class TunnelLink(Protocol):
    """What a :class:`Tunnel` needs from the session underneath (the real one:
    :class:`_ProbeLink`)."""

    async def send_inner(self, packet: bytes) -> None:
        """Encrypt ``packet`` with the session's data key and send it; OSError propagates
        (e.g. EMSGSIZE with IP_MTU_DISCOVER=DO)."""

    @property
    def socket(self) -> trio.socket.SocketType:
        """The outer (UDP or TCP) socket to the server."""

    def counters(self) -> dict[str, Any]:
        """The session's counters: ``drops`` (reason → count), packets sent and received,
        ``link_error`` (the first link error, None while the link works), ``transport``
        (udp/tcp), ``socket_errors`` ((trio time, OSError) the reader got)."""


@dataclass(eq=False)
class Tunnel:
    """One established session, as a lease holder sees it."""

    pushed: PushedOptions
    link: TunnelLink
    remote: str  # "198.18.0.1:1194/udp"
    cipher: str | None = None
    handshake: Handshake | None = None  # how it was established (None: a test's fake)
    # Decrypted inner packets of the whole session that are not IPv4/IPv6, by first byte: a
    # peer framing data for compression (0xFA, 0xFB...) that this config does not expect.
    non_ip: dict[int, int] = field(default_factory=dict)
    # Steps of the current lease, timed from its start (mark()); reset by every lease.
    timeline: Timeline = field(default_factory=Timeline)
    handshake_timeline: list[dict[str, Any]] = field(default_factory=list)
    # The outer datagram's length for an inner packet (the session's exact framing: cipher,
    # opcode/peer-id, compression, fragment header), None when unknown; mtu.path uses it.
    wire_length: Callable[[bytes], int | None] | None = None
    _buffer: deque[tuple[float, bytes]] = field(default_factory=lambda: deque(
        maxlen=BUFFER_PACKETS))
    _arrived: trio.Event = field(default_factory=trio.Event)
    _saved_opts: dict[tuple[int, int], int | bytes] = field(default_factory=dict)

    # ------------------------------------------------------------ addresses

    @property
    def local_ipv4(self) -> str | None:
        """Our tunnel IPv4 address (``ifconfig``'s first argument), if pushed."""
        return str(self.pushed.ifconfig.local) if self.pushed.ifconfig is not None else None

    @property
    def local_ipv6(self) -> str | None:
        """Our tunnel IPv6 address (``ifconfig-ipv6``), if pushed."""
        i6 = self.pushed.ifconfig_ipv6
        return str(i6.address) if i6 is not None else None

    @property
    def gateway(self) -> str | None:
        """The server's tunnel IPv4 address: ``route-gateway`` under topology subnet, the
        ``ifconfig`` peer for net30/p2p; None when not known."""
        addresses = gateway_of(self.pushed)
        return addresses[1] if addresses is not None else None

    @property
    def gateway_ipv6(self) -> str | None:
        """The server's tunnel IPv6 address (``ifconfig-ipv6``'s remote), if pushed."""
        i6 = self.pushed.ifconfig_ipv6
        return str(i6.remote) if i6 is not None else None

    # ------------------------------------------------------------ traffic

    async def send(self, packet: bytes) -> None:
        """Send one inner IP packet through the data channel. Raises OSError from the outer
        socket and :class:`TunnelUnavailable` when the link is gone or has no data key."""
        counters = self.link.counters()
        error = counters.get("link_error")
        if error is not None and counters.get("transport") == "tcp":  # UDP errors pass
            raise TunnelUnavailable("link_error", f"the link to the server failed ({error})",
                                    link_error=error)
        await self.link.send_inner(packet)

    async def receive(self, match: Callable[[bytes], T | None], deadline: float) -> T | None:
        """The first inner packet received during this lease for which ``match`` returns
        something other than None (that value), waiting until ``deadline`` (trio time); None
        when none came. Packets ``match`` rejects stay for later ``receive`` calls."""
        while True:
            for item in list(self._buffer):
                value = match(item[1])
                if value is not None:
                    self._buffer.remove(item)
                    return value
            if trio.current_time() >= deadline:
                return None
            arrived = self._arrived
            with trio.move_on_at(deadline):
                await arrived.wait()

    def socket_errors(self) -> list[OSError]:
        """Errors the outer UDP socket reported to the session's reader during this lease
        (an ICMP error on the connected socket; with IP_RECVERR set, its error queue)."""
        return [exc for at, exc in self.link.counters().get("socket_errors", ())
                if at >= self.timeline.start]

    def deliver(self, packets: Iterable[bytes]) -> None:
        """Called by the link for decrypted inner packets."""
        now = trio.current_time()
        for p in packets:
            if not p or p[0] >> 4 not in (4, 6):
                first = p[0] if p else -1
                self.non_ip[first] = self.non_ip.get(first, 0) + 1
        self._buffer.extend((now, p) for p in packets)
        self._arrived.set()
        self._arrived = trio.Event()

    # ------------------------------------------------------------ outer socket

    @property
    def socket(self) -> trio.socket.SocketType:
        """The outer socket; prefer :meth:`setsockopt`, which is undone at the lease's end."""
        return self.link.socket

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        """Set an option on the outer socket for this lease (restored when it ends)."""
        sock = self.link.socket
        key = (level, option)
        if key not in self._saved_opts:
            self._saved_opts[key] = (sock.getsockopt(level, option) if isinstance(value, int)
                                     else sock.getsockopt(level, option, max(len(value), 64)))
        sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return int(self.link.socket.getsockopt(level, option))

    @property
    def counters(self) -> dict[str, Any]:
        """``drops`` (reason → count), ``sent_packets``, ``received_packets``, ``link_error``,
        ``transport``, ``socket_errors``."""
        return self.link.counters()

    @property
    def drops(self) -> dict[str, int]:
        return dict(self.link.counters().get("drops", {}))

    # ------------------------------------------------------------ lease bookkeeping

    def mark(self, step: str, **details: Any) -> None:
        """Record a step of this lease (its evidence timeline)."""
        self.timeline.add(step, **details)

    def _begin_lease(self) -> None:
        self._buffer.clear()
        self.timeline = Timeline()

    def _end_lease(self) -> None:
        self._buffer.clear()
        sock = self.link.socket
        for (level, option), value in self._saved_opts.items():
            with suppress(OSError):
                sock.setsockopt(level, option, value)
        self._saved_opts.clear()


Connector = Callable[[DoctorContext], AbstractAsyncContextManager[Tunnel]]


class TunnelBroker:
    """Hands out exclusive leases on one lazily established session (see module doc).

    Use as ``async with TunnelBroker() as broker:``; ``connect`` (for tests) replaces the real
    handshake: an async context manager factory yielding an established :class:`Tunnel` (or
    raising :class:`TunnelUnavailable`) and saying goodbye on exit."""

    def __init__(self, connect: Connector | None = None) -> None:
        self._connect: Connector = connect if connect is not None else open_tunnel
        self._lock = trio.Lock()
        self._ready = trio.Event()
        self._closing = trio.Event()
        self._started = False
        self._tunnel: Tunnel | None = None
        self._failure: TunnelUnavailable | None = None
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._connecting: trio.CancelScope | None = None
        self._attempt: Handshake | None = None
        self.handshakes = 0  # sessions established (or attempted)
        self.leases = 0

    async def __aenter__(self) -> TunnelBroker:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
        assert self._nursery_cm is not None
        # The body's own exception propagates as it is (not wrapped in an exception group):
        # the nursery only holds the session task, which ends once closed.
        await self._nursery_cm.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Say goodbye and end the session (idempotent). Later leases raise ``closed``."""
        self._closing.set()
        if self._tunnel is None and self._connecting is not None:
            self._connecting.cancel()  # a handshake still under way: no goodbye to say
        if self._failure is None:
            self._failure = TunnelUnavailable("closed", "the doctor's tunnel session is closed")
        self._ready.set()

    @property
    def failure(self) -> TunnelUnavailable | None:
        return self._failure if self._tunnel is None else None

    def _start(self, ctx: DoctorContext) -> None:
        if not self._started and not self._closing.is_set():
            if self._nursery is None:
                raise RuntimeError("TunnelBroker used outside 'async with'")
            self._started = True
            self._nursery.start_soon(self._hold, ctx)

    async def handshake(self, ctx: DoctorContext) -> Handshake:
        """The session's handshake once it has finished, established or failed (started with
        ``ctx`` if nothing started it yet): what tls.handshake reports. Raises
        :class:`TunnelUnavailable` when no handshake could be attempted (no inputs, a config
        the TLS setup cannot be built from, a socket error, the broker closed)."""
        self._start(ctx)
        await self._ready.wait()
        if self._attempt is None:
            raise self._failure or TunnelUnavailable(
                "error", "the session was established without a handshake to report")
        return self._attempt

    @asynccontextmanager
    async def lease(self, ctx: DoctorContext) -> AsyncIterator[Tunnel]:
        """Exclusive use of the session; establishes it with ``ctx`` on first use."""
        self._start(ctx)
        await self._ready.wait()
        async with self._lock:
            tunnel = self._tunnel
            if tunnel is None or self._closing.is_set():
                assert self._failure is not None
                raise self._failure
            self.leases += 1
            tunnel._begin_lease()
            try:
                yield tunnel
            finally:
                tunnel._end_lease()

    async def _hold(self, ctx: DoctorContext) -> None:
        """Establish the session and keep it until the broker closes."""
        self.handshakes += 1
        self._connecting = trio.CancelScope()
        try:
            with self._connecting:
                await self._keep(ctx)
        except TunnelUnavailable as exc:
            self._failure = exc
            self._attempt = exc.handshake
        except (OSError, ProtocolError, ConfigError) as exc:
            self._failure = TunnelUnavailable("error", f"no tunnel session ({exc})",
                                              error=str(exc))
        finally:
            self._tunnel = None
            if self._failure is None:
                self._failure = TunnelUnavailable("closed",
                                                  "the doctor's tunnel session is closed")
            self._ready.set()

    async def _keep(self, ctx: DoctorContext) -> None:
        async with self._connect(ctx) as tunnel:
            self._tunnel = tunnel
            self._attempt = tunnel.handshake
            self._ready.set()
            await self._closing.wait()
            # Let a lease in progress finish before the goodbye.
            async with self._lock:
                self._tunnel = None


@asynccontextmanager
async def tunnel_lease(ctx: DoctorContext) -> AsyncIterator[Tunnel]:
    """A lease from ``ctx.tunnel``, or from a private broker when the context has none."""
    if ctx.tunnel is not None:
        async with ctx.tunnel.lease(ctx) as t:
            yield t
        return
    async with TunnelBroker() as broker, broker.lease(ctx) as t:
        yield t


# ---------------------------------------------------------------- the real session


class _ProbeLink:
    """A :class:`SessionProbe` after its handshake, as a :class:`TunnelLink`."""

    def __init__(self, probe: SessionProbe) -> None:
        self.probe = probe

    async def send_inner(self, packet: bytes) -> None:
        session = self.probe.session
        assert session is not None
        wire = session.encrypt_data(packet, trio.current_time())
        if wire is None:
            raise TunnelUnavailable("no_key", "the session has no data-channel key to send with")
        await self.probe.send_wire(wire)

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.probe.socket

    def counters(self) -> dict[str, Any]:
        session = self.probe.session
        return {"drops": dict(session.drops) if session is not None else {},
                "sent_packets": self.probe.sent_packets,
                "received_packets": self.probe.received_packets,
                "link_error": self.probe.link_error,
                "transport": self.probe.target.transport,
                "socket_errors": list(self.probe.socket_errors)}


P2P_SETTLE = 1.2  # seconds; see open_tunnel()


@asynccontextmanager
async def open_tunnel(ctx: DoctorContext) -> AsyncIterator[Tunnel]:
    """Handshake with the config's remote (the one ``port.reachable`` found open), yield the
    established :class:`Tunnel` while a background loop drives the session, say goodbye on
    exit. Raises :class:`TunnelUnavailable` with the handshake's failure cause (and the
    :class:`Handshake` for tls.handshake's diagnosis)."""
    o, target, config, budget, prompted = await plan_handshake(ctx)
    started = trio.current_time()
    async with SessionProbe(config, target, ctx.netns) as probe:
        probe.start()
        await probe.run_until(lambda: probe.saw(ev.DataChannelReady)
                              or probe.failure() is not None or server_gave_up(probe),
                              started + budget)
        record = Handshake(o, target, config, budget, prompted, started, probe)
        session = probe.session
        assert session is not None
        pushed = session.pushed
        if not record.established or pushed is None:
            evidence: dict[str, Any] = {"sent_to": target.describe()}
            failure = probe.failure()
            detail = f" ({failure.cause}: {failure.detail})" if failure is not None else ""
            if failure is not None:
                evidence.update(handshake_cause=failure.cause, handshake_detail=failure.detail)
            if probe.link_error is not None:
                evidence["link_error"] = probe.link_error
            raise TunnelUnavailable("handshake_failed",
                                    "the handshake for the tunnel session did not complete"
                                    + detail, handshake=record, **evidence)
        if not o.pull:
            # A TLS peer-to-peer server installs its data keys only when it next checks that
            # the connection is up (OpenVPN forward.c, check_connection_established(), once
            # a second) and drops data until then ('Key ... not initialized (yet), dropping
            # packet'): wait for its first data packet, or that second.
            await probe.run_until(lambda: session.data_key is not None
                                  and session.data_key.packets_in > 0,
                                  trio.current_time() + P2P_SETTLE)
        if not o.pull and pushed.ifconfig is None and o.ifconfig is not None:
            # TLS peer-to-peer: nothing is pushed; the addresses are the config's own ifconfig
            pushed = replace(pushed, ifconfig=PushIfconfig(o.ifconfig.local, o.ifconfig.remote),
                             topology=pushed.topology or o.topology)
        tunnel = Tunnel(pushed, _ProbeLink(probe), target.describe(), session.cipher,
                        handshake=record, handshake_timeline=list(probe.timeline.steps),
                        wire_length=session.data_wire_length)
        probe.on_tun = tunnel.deliver
        if probe.tun:
            tunnel.deliver(probe.tun)
        probe.tun.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe.run_until, lambda: False, math.inf)
            try:
                yield tunnel
            finally:
                nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await probe.say_goodbye()
