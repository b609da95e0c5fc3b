"""Network behaviour between the client and the server (docs/doctor.md, "network behaviour").

* ``netbeh.keepalive`` (default run, no traffic): the configured ping interval against common
  UDP NAT timeouts (30 s), and against this host's own conntrack UDP timeouts
  (``net.netfilter.nf_conntrack_udp_timeout`` / ``_stream``) when this host NATs or filters
  statefully. Warns only with evidence (a number from the config or the kernel).
* ``netbeh.nat_timeout`` (opt-in, ``--check netbeh.nat_timeout``; it waits): measures the
  path's UDP binding timeout with a real session. After the handshake the probe sends nothing
  but what it chooses, while the server sends its keepalive ping N seconds after it last sent
  anything (pushed ``ping N``). One ping of ours g seconds before the server's next one
  leaves the binding idle for g seconds: the server's ping arrives only if the binding
  survived that long. The first round tests g = N (no packet of ours), later rounds bisect.
* ``netbeh.udp_blocked``: when ``port.reachable`` finds a UDP remote filtered, the same address
  is probed over TCP (443 and the configured port) with a real OpenVPN reset.
* ``netbeh.first_packet_reset``: a TCP remote that accepts the connection and then resets it
  right after the first OpenVPN packet; a second connection sending the same number of bytes
  that do not look like OpenVPN tells a middlebox (DPI) from the server.
* ``netbeh.remote_addresses``: a ``remote`` name with several addresses: each one is probed.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import trio

from trivpn.config import ConfigError, Options
from trivpn.config.derive import ping_settings
from trivpn.diagnostics.checks_tls import handshake_budget
from trivpn.diagnostics.hostinfo import in_netns_thread, read_sysctl, run_tool
from trivpn.diagnostics.model import (
    Check,
    CheckResult,
    DoctorContext,
    Status,
    ok,
    problem,
    skip,
)
from trivpn.diagnostics.probe import (
    RECV_SIZE,
    REPROBE_ATTEMPTS,
    TCP_CONNECT_TIMEOUT,
    ProbeInputs,
    Target,
    classify_reply,
    client_reset,
    new_session_id,
    open_target,
    probe_inputs,
    reset_exchange,
    transport_of,
    udp_reset_exchange,
    unix_offset,
    wrap_name,
)
from trivpn.diagnostics.probe_icmp import echo_request, parse_echo_reply
from trivpn.diagnostics.probe_session import SessionProbe, probe_config
from trivpn.diagnostics.tunnel_session import gateway_of
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.framing import StreamDeframer, frame
from trivpn.protocol.occ import PING_MAGIC
from trivpn.protocol.wrap import ControlWrap
from trivpn.runtime.link import make_socket

KEEPALIVE_ID = "netbeh.keepalive"
NAT_ID = "netbeh.nat_timeout"
UDP_BLOCKED_ID = "netbeh.udp_blocked"
RESET_ID = "netbeh.first_packet_reset"
ADDRESSES_ID = "netbeh.remote_addresses"

COMMON_NAT_UDP_TIMEOUT = 30  # s: Linux nf_conntrack_udp_timeout's default, many home routers
NAT_MAX_WAIT = 300.0  # s: the opt-in measurement stops after this
NAT_MARGIN = 1.0  # s after the latest expected server ping before it counts as lost
NAT_CLOCK_SLACK = 0.2  # s: the server's clock may differ from ours by this much
NAT_RESOLUTION = 1.5  # s: stop when the timeout is known to within this
RESET_WINDOW = 1.0  # s after our first packet: a reset within this counts as "right after"
FIRST_PACKET_WAIT = 2.5  # s to wait for a reply, a reset or a close after the first packet
MAX_ADDRESSES = 8


# ------------------------------------------------------------------ netbeh.keepalive


def _host_conntrack() -> dict[str, Any]:
    return {"udp_timeout": read_sysctl("net.netfilter.nf_conntrack_udp_timeout"),
            "udp_timeout_stream": read_sysctl("net.netfilter.nf_conntrack_udp_timeout_stream"),
            "ip_forward": read_sysctl("net.ipv4.ip_forward")}


def _stateful_rules(ruleset: str) -> list[str]:
    """Lines of an ``nft list ruleset`` that NAT or filter on connection state."""
    out = []
    for line in ruleset.splitlines():
        if ("masquerade" in line or "snat " in line
                or ("ct state" in line and "established" in line)):
            out.append(line.strip())
    return out


async def run_keepalive(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(KEEPALIVE_ID, "skipped: the config did not parse")
    pings = ping_settings(o)
    directive = "keepalive" if o.keepalive is not None else "ping"
    line = o.location(directive)
    place = f"{line[0].name} line {line[1]}" if line else o.config_path.name
    evidence: dict[str, Any] = {"ping": pings.ping, "ping_restart": pings.ping_restart,
                                "role": ctx.role}
    udp = (o.proto == "udp" if ctx.role == "server"
           else any(r.proto == "udp" for r in o.remotes))
    if not udp:
        return ok(KEEPALIVE_ID, "TCP only: NAT and firewalls keep established TCP "
                  "connections for hours", **evidence)
    conntrack = await in_netns_thread(ctx.netns, _host_conntrack)
    evidence["conntrack"] = conntrack
    pushed = [p for p in o.pushes if p.split()[:1] == ["ping"]]
    if ctx.role == "server" and o.mode == "server" and pings.ping is None and not pushed:
        return problem(
            KEEPALIVE_ID, "warn", "no keepalive: this server neither pings nor pushes 'ping'",
            **evidence,
            explanation=f"{o.config_path.name} has no 'keepalive' (and no 'ping' or 'push "
            "\"ping N\"'), so the server pushes no 'ping' to its clients and nothing is sent "
            "while a tunnel is idle. NAT routers and stateful firewalls in front of the "
            "clients forget an idle UDP flow (often after 30 s); the server's packets then no "
            "longer reach the client until it sends again, and neither side notices a dead "
            "tunnel.",
            fix=f"Add 'keepalive 10 60' to {o.config_path.name}: the server pings every 10 s and "
            "pushes 'ping 10' and 'ping-restart 60' to every client.")
    if pings.ping is not None and pings.ping > COMMON_NAT_UDP_TIMEOUT:
        who = ("every client (it is pushed as 'ping')" if ctx.role == "server"
               else "this client, unless the server pushes a 'ping' of its own (which "
               "replaces it)")
        return problem(
            KEEPALIVE_ID, "warn", f"ping interval {pings.ping} s is longer than common NAT UDP "
            f"timeouts ({COMMON_NAT_UDP_TIMEOUT} s)", **evidence,
            explanation=f"'{directive}' at {place} makes {who} send a keepalive only every "
            f"{pings.ping} s when the tunnel is idle. Many NAT routers and stateful firewalls "
            f"forget an idle UDP flow after {COMMON_NAT_UDP_TIMEOUT} s (Linux: "
            "net.netfilter.nf_conntrack_udp_timeout); after that the server's packets no "
            "longer reach the client until it sends again, and an idle tunnel stops working "
            "or restarts ('Inactivity timeout (--ping-restart), restarting').",
            fix=f"Use 'keepalive 10 60' instead at {place} (ping every 10 s; on a server it is "
            "pushed to the clients). 'trivpn doctor --check netbeh.nat_timeout' measures the "
            "real timeout of the path from a client.")
    timeouts = [int(v) for v in (conntrack["udp_timeout"], conntrack["udp_timeout_stream"])
                if v is not None and v.isdigit()]
    if pings.ping is None or not timeouts or min(timeouts) >= pings.ping:
        reason = ("no ping interval in the config (a client gets it pushed by the server)"
                  if pings.ping is None else f"ping every {pings.ping} s")
        return ok(KEEPALIVE_ID, f"{reason}; nothing here forgets the UDP flow sooner",
                  **evidence)
    nft = await run_tool(["nft", "list", "ruleset"], netns=ctx.netns, timeout=1.5)
    rules = _stateful_rules(nft.stdout) if nft is not None and nft.returncode == 0 else []
    evidence["stateful_rules"] = rules[:10]
    if not rules:
        return ok(KEEPALIVE_ID, f"ping every {pings.ping} s; this host's conntrack UDP timeout "
                  f"is {min(timeouts)} s, but it neither NATs nor filters on connection state",
                  **evidence)
    shortest = min(timeouts)
    return problem(
        KEEPALIVE_ID, "warn", f"this host forgets idle UDP flows after {shortest} s, but the "
        f"ping interval is {pings.ping} s", **evidence,
        explanation=f"This host NATs or filters on connection state ({rules[0]!r}) and its "
        f"conntrack UDP timeouts are {conntrack['udp_timeout']} s (one-way) and "
        f"{conntrack['udp_timeout_stream']} s (both ways). With '{directive}' at {place} an "
        f"idle tunnel sends a keepalive only every {pings.ping} s, so the flow is forgotten in "
        "between and the peer's packets are dropped until this side sends again.",
        fix=f"Ping more often than every {shortest} s ('keepalive {max(1, shortest // 2)} 60' "
        f"at {place}), or raise the timeout: 'sysctl -w "
        f"net.netfilter.nf_conntrack_udp_timeout_stream={max(pings.ping * 2, 120)}' (and "
        "nf_conntrack_udp_timeout).")


# ------------------------------------------------------------------ netbeh.nat_timeout


@dataclass
class _Rounds:
    """The measurement's state. The server sends its keepalive ping ``ping`` seconds after it
    last sent anything, counted in whole seconds of its clock (OpenVPN's ``now``): a packet
    it sent at Unix time u is followed by a ping within [floor(u) + ping, floor(u) + ping + 1).
    ``expected`` is the end of that second (the latest the ping comes), ``slack`` allows for
    the server's clock differing from ours by a fraction of a second."""

    ping: float
    expected: float
    slack: float = NAT_CLOCK_SLACK
    lo: float | None = None  # the longest idle time a binding was seen to survive
    hi: float | None = None  # an idle time after which the server's ping was lost
    fresh: bool = True  # the binding must be (re)made before the next round
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def server_sent(self, at: float) -> None:
        """The server sent a packet that reached us at ``at`` (trio time)."""
        unix = at + unix_offset()
        self.expected = at + self.ping + 1.0 - (unix - math.floor(unix))

    def next_gap(self) -> float | None:
        if not self.rounds:
            return self.ping
        if self.hi is None:
            # nothing lost yet: one round of complete silence between two server pings
            # decides whether the binding outlives the whole interval
            return self.ping if (self.lo or 0.0) < self.ping - 0.5 else None
        lo = self.lo or 0.0
        if self.hi - lo <= NAT_RESOLUTION:
            return None
        return round((lo + self.hi) / 2, 2)


class _PingProbe(SessionProbe):
    """A session probe that also keeps the size of every packet received (evidence: the
    server's keepalive pings are as long as our own) and sends pings on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rx_sizes: list[int] = []
        self.ping_size: int | None = None

    async def _receive(self) -> list[bytes]:
        packets = await super()._receive()
        self.rx_sizes += [len(p) for p in packets]
        return packets

    async def send_ping(self) -> bool:
        session = self.session
        assert session is not None
        wire = session.encrypt_data(PING_MAGIC, trio.current_time())  # OpenVPN's keepalive
        if wire is None:
            return False
        self.ping_size = len(wire)
        await self._send(wire)
        return True

    def last_activity(self, before: float | None = None) -> float:
        times = [t for t in (*self.tx_times, *self.rx_times) if before is None or t < before]
        return max(times, default=self.timeline.start)


async def _prepare(probe: _PingProbe, st: _Rounds, gateway: tuple[str, str] | None,
                   end: float) -> None:
    """Make the binding look like the one of a tunnel in use, and learn when the server
    pings next. An ICMP echo through the tunnel to the server's tunnel address makes the
    server answer (which restarts its ping timer: ``expected`` follows from the answer); pings
    of ours every 0.5 s for 2.2 s more give the flow traffic both ways for more than 2 s,
    after which Linux conntrack applies nf_conntrack_udp_timeout_stream instead of the shorter
    nf_conntrack_udp_timeout (other NATs also keep a flow with replies longer)."""
    start = trio.current_time()
    answered: float | None = None
    if gateway is not None:
        local, remote = gateway
        ident = int.from_bytes(os.urandom(2), "big")
        got: list[float] = []

        def echo_back() -> bool:
            for packet in probe.tun:
                echo = parse_echo_reply(packet)
                if echo is not None and echo.ident == ident:
                    got.append(trio.current_time())
            probe.tun.clear()
            return bool(got)

        sent = await probe.send_tun(echo_request(local, remote, ident, 1, b"netbeh"))
        if sent and await probe.run_until(echo_back, min(end, start + 3.0)):
            answered = got[0]
            st.server_sent(answered)
    warm_until = (answered or start) + 2.2
    while True:  # pings 0.5 s apart: the binding stays up even with a short one-way timeout
        await probe.send_ping()
        now = trio.current_time()
        if now >= warm_until:
            break
        await probe.run_until(lambda: False, min(now + 0.5, warm_until))
    if answered is not None and probe.rx_times and probe.rx_times[-1] > answered:
        st.server_sent(probe.rx_times[-1])  # a ping came meanwhile (ping shorter than 2.2 s)
    st.fresh = False
    probe.timeline.add("binding_prepared", echo_answered=answered is not None)


async def _nat_round(probe: _PingProbe, gap: float, *, st: _Rounds, end: float) -> None:
    """One round: stay silent, send one ping of ours ``gap`` seconds before the server's next
    ping is due, and see whether a packet from the server arrives (the binding survived that
    idle time) or not (it was forgotten within ``gap`` + the schedule's slack)."""
    if gap < st.ping - 0.05 and st.expected - gap > probe.last_activity():
        await probe.run_until(lambda: False, st.expected - gap)
        await probe.send_ping()
    first = len(probe.rx_times)
    await probe.run_until(lambda: len(probe.rx_times) > first,
                          min(end, st.expected + st.slack + NAT_MARGIN))
    arrived = len(probe.rx_times) > first
    if not arrived and trio.current_time() < st.expected + st.slack:
        return  # max wait reached before the ping was due: no conclusion
    row: dict[str, Any] = {"round": len(st.rounds) + 1, "planned_idle_s": gap,
                           "our_last_packet_s": probe.timeline.elapsed(probe.tx_times[-1])}
    if arrived:
        at = probe.rx_times[first]
        idle = round(at - probe.last_activity(before=at), 2)
        st.lo = max(st.lo or 0.0, idle)
        # the server pings N s after it last sent anything, whatever this packet was (OpenVPN
        # src/openvpn/forward.c, process_outgoing_link(): every packet sent restarts the timer)
        st.server_sent(at)
        row.update(server_packet=True, idle_s=idle, server_packet_s=probe.timeline.elapsed(at),
                   server_ping=probe.rx_sizes[first] == probe.ping_size)
    else:
        bound = round(st.expected + st.slack - probe.last_activity(), 2)
        st.hi = bound if st.hi is None else min(st.hi, bound)
        st.expected += st.ping
        st.fresh = True  # our next packet makes a new binding: prepare it again
        row.update(server_packet=False, idle_at_most_s=bound)
    st.rounds.append(row)


def _keepalive_fix(lo: float) -> str:
    every = max(1, math.floor(lo * 0.6))
    return f"keepalive {every} {max(60, every * 6)}"


async def run_nat_timeout(ctx: DoctorContext, max_wait: float = NAT_MAX_WAIT) -> CheckResult:
    inputs = await probe_inputs(ctx, NAT_ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o, target = inputs.options, open_target(ctx, inputs.targets)
    if target.transport != "udp":
        return skip(NAT_ID, "skipped: TCP remote; NAT binding timeouts of idle UDP flows do "
                    "not apply (TCP bindings last hours)")
    budget = handshake_budget(ctx.timeout)
    try:
        config = probe_config(o, hand_window=budget)
    except (ConfigError, ProtocolError) as exc:
        return skip(NAT_ID, f"skipped: cannot build the TLS setup from the config ({exc})")
    evidence: dict[str, Any] = {"sent_to": target.describe(), "max_wait_s": max_wait}
    probe = _PingProbe(config, target, ctx.netns)
    async with probe:
        probe.start()
        await probe.run_until(lambda: probe.saw(ev.DataChannelReady)
                              or probe.failure() is not None, trio.current_time() + budget)
        session = probe.session
        assert session is not None
        pushed = session.pushed
        if not probe.saw(ev.DataChannelReady) or pushed is None:
            return skip(NAT_ID, "skipped: the handshake did not complete (see tls.handshake)",
                        **evidence)
        probe.timers = False  # from now on the probe sends only what a round sends
        evidence.update(pushed_ping=pushed.ping, pushed_ping_restart=pushed.ping_restart)
        if pushed.ping is None:
            await probe.say_goodbye()
            return _no_server_ping(o, evidence)
        st = _Rounds(float(pushed.ping), 0.0)
        st.server_sent(probe.rx_times[-1] if probe.rx_times else trio.current_time())
        end = trio.current_time() + max_wait
        gateway = gateway_of(pushed)
        while (gap := st.next_gap()) is not None:
            if st.fresh:
                if trio.current_time() + st.ping + 2.0 + NAT_MARGIN > end:
                    evidence["stopped"] = "max wait reached"
                    break
                await _prepare(probe, st, gateway, end)
            if st.expected + st.slack + NAT_MARGIN > end:
                evidence["stopped"] = "max wait reached"
                break
            await _nat_round(probe, gap, st=st, end=end)
        await probe.say_goodbye()
    evidence.update(rounds=st.rounds, survived_idle_s=st.lo, lost_after_idle_s=st.hi,
                    timeline=probe.timeline.steps)
    return _judge_nat(o, st, evidence)


def _no_server_ping(o: Options, evidence: dict[str, Any]) -> CheckResult:
    own = ping_settings(o).ping
    if own is not None:
        return skip(NAT_ID, f"not measured: the server pushes no 'ping' (the client pings every "
                    f"{own} s itself), so it sends nothing the probe could wait for",
                    **evidence)
    return problem(
        NAT_ID, "warn", "no keepalive at all: the server pushes no 'ping' and the config has "
        "none", **evidence,
        explanation="Neither side sends anything while the tunnel is idle, so any NAT router or "
        "stateful firewall on the path forgets the UDP flow (often after 30 s) and the server's "
        "packets stop reaching the client until it sends again. The binding timeout cannot be "
        "measured without the server's pings.",
        fix="Add 'keepalive 10 60' to the server config (it is pushed to the clients as 'ping "
        f"10' and 'ping-restart 60'), or to {o.config_path.name}.")


def _judge_nat(o: Options, st: _Rounds, evidence: dict[str, Any]) -> CheckResult:
    ping = int(st.ping)
    if not st.rounds:
        return skip(NAT_ID, "not measured: " + str(evidence.get("stopped", "no round ran")),
                    **evidence)
    if st.hi is None:
        lo = st.lo or 0.0
        if lo < st.ping - 0.5:
            return skip(NAT_ID, f"not measured: the binding survived {lo:.1f} s idle, but the "
                        f"wait ended before a whole ping interval ({ping} s) was tried",
                        **evidence)
        return ok(NAT_ID, f"the UDP binding survived {lo:.1f} s idle, a whole ping interval "
                  f"of the server ({ping} s): its keepalives keep the binding", **evidence)
    lo = st.lo or 0.0
    if st.lo is None:
        estimate = f"less than {st.hi:.1f} s"
        fix_every = st.hi / 2
    else:
        estimate = f"between {lo:.1f} and {st.hi:.1f} s"
        fix_every = lo
    evidence["estimate_s"] = round((lo + st.hi) / 2, 1)
    fix = _keepalive_fix(fix_every)
    return problem(
        NAT_ID, "fail", f"the path forgets the idle UDP flow after {estimate}, but the server "
        f"pings only every {ping} s", **evidence,
        explanation=f"The server's keepalive pings ('ping {ping}', pushed by the server) "
        + (f"arrive while the flow was idle for {lo:.1f} s, and are lost after {st.hi:.1f} s"
           if st.lo is not None else f"are lost after {st.hi:.1f} s of idle flow")
        + ": a NAT router or stateful firewall between here and the server drops its UDP "
        "binding in between. Whenever the tunnel is idle longer than that, the server's "
        "packets no longer reach this client until it sends again; when they stop getting "
        "through for the ping-restart time, the client restarts ('Inactivity timeout "
        "(--ping-restart), restarting'): the 'drops every few minutes' pattern.",
        fix=f"In the server config use '{fix}' (ping more often than the binding timeout; it "
        "is pushed to every client as 'ping' and 'ping-restart'); or raise the UDP timeout on "
        "the NAT router (Linux: net.netfilter.nf_conntrack_udp_timeout and _stream).")


# ------------------------------------------------------------------ TCP first-packet probe


@dataclass
class FirstPacket:
    """What a TCP connection did after our first packet."""

    target: Target
    connect: str = "not_tried"  # connected, refused, timeout, unreachable
    outcome: str | None = None  # answered, reset, closed, silent, not_openvpn, error
    after_send_ms: float | None = None
    reply_kind: str | None = None

    def evidence(self) -> dict[str, Any]:
        return {"sent_to": self.target.describe(), "connect": self.connect,
                "outcome": self.outcome, "after_first_packet_ms": self.after_send_ms,
                "reply_kind": self.reply_kind}

    @property
    def reset_right_after(self) -> bool:
        return (self.outcome in ("reset", "closed") and self.after_send_ms is not None
                and self.after_send_ms <= RESET_WINDOW * 1000)


async def tcp_first_packet(target: Target, payload: bytes, wrap: ControlWrap, sid: bytes, *,
                           netns: str | None, wait: float = FIRST_PACKET_WAIT) -> FirstPacket:
    """Connect, send ``payload`` with OpenVPN's 2-byte framing, and see what comes back."""
    fp = FirstPacket(target)
    sock = trio.socket.from_stdlib_socket(make_socket(target.family, socket.SOCK_STREAM, netns))
    with sock:
        try:
            with trio.fail_after(TCP_CONNECT_TIMEOUT):
                await sock.connect(target.sockaddr)
        except trio.TooSlowError:
            fp.connect = "timeout"
            return fp
        except ConnectionRefusedError:
            fp.connect = "refused"
            return fp
        except OSError:
            fp.connect = "unreachable"
            return fp
        fp.connect = "connected"
        sent = trio.current_time()

        def done(outcome: str) -> FirstPacket:
            fp.outcome = outcome
            fp.after_send_ms = round((trio.current_time() - sent) * 1000, 1)
            return fp

        try:
            await sock.send(frame(payload))
        except ConnectionResetError:
            return done("reset")
        except OSError:
            return done("error")
        deframer = StreamDeframer()
        with trio.move_on_after(wait):
            while True:
                try:
                    data = await sock.recv(RECV_SIZE)
                except ConnectionResetError:
                    return done("reset")
                except OSError:
                    return done("error")
                if not data:
                    return done("closed")
                try:
                    packets = deframer.feed(data)
                except ProtocolError:
                    return done("not_openvpn")
                if packets:
                    fp.reply_kind = classify_reply(packets[0], wrap, sid)
                    return done("answered")
        fp.outcome = "silent"
        return fp


def control_payload(length: int) -> bytes:
    """``length`` bytes that look like no OpenVPN packet (first byte: opcode 0, invalid)."""
    return b"\x00" + os.urandom(max(0, length - 1))


async def first_packet_pair(target: Target, wrap: ControlWrap, netns: str | None,
                            ) -> tuple[FirstPacket, FirstPacket | None]:
    """The real reset; when it is reset right after, a control connection with non-OpenVPN
    bytes of the same length (None when not needed)."""
    sid = new_session_id()
    reset = client_reset(wrap, sid, 1)
    real = await tcp_first_packet(target, reset, wrap, sid, netns=netns)
    if not real.reset_right_after:
        return real, None
    control = await tcp_first_packet(target, control_payload(len(reset)), wrap, sid, netns=netns,
                                     wait=max(1.5, 3 * (real.after_send_ms or 0) / 1000))
    return real, control


def _dpi_text(o: Options, real: FirstPacket, control: FirstPacket | None,
              wrap: str) -> tuple[str, str, str]:
    """(summary, explanation, fix) for a connection reset right after our first packet."""
    t = real.target
    how = "reset (TCP RST)" if real.outcome == "reset" else "closed"
    summary = (f"{t.describe()} accepts the TCP connection but it is {how} "
               f"{real.after_send_ms:.0f} ms after the first OpenVPN packet")
    control_clean = (real.outcome == "reset" and control is not None
                     and control.outcome in ("silent", "answered", "closed"))
    if control_clean:
        assert control is not None
        stayed = {"silent": "stayed open", "answered": "was answered",
                  "closed": "was closed normally (FIN) by the server, which got the bytes"}
        why = (f"A second connection that sent the same number of bytes not looking like "
               f"OpenVPN was not reset (it {stayed[control.outcome or 'silent']}). Something "
               "between here and the server recognises OpenVPN's first packet (the 'hard "
               "reset' opcode at the start of the stream) and resets the connection: deep "
               "packet inspection in a corporate, hotel, school or national firewall.")
    else:
        seen = ("not tried" if control is None else "reset too" if control.outcome == "reset"
                else f"{control.outcome} (the OpenVPN one was {how})")
        why = (f"A connection whose first bytes do not look like OpenVPN was {seen}, so "
               "this may be a "
               "middlebox resetting OpenVPN-looking traffic, or the server closing the "
               "connection itself (a tls-auth/tls-crypt key that differs: see tls.keys).")
    hide = ("tls-crypt (or tls-crypt-v2) encrypts and authenticates every control packet, "
            "so the certificates and the TLS handshake are hidden; it does not hide the "
            "packet framing, the opcode byte at the start of each packet or the packet "
            "sizes and timing, which DPI can still match")
    already = (f" This config already uses {wrap}: the opcode byte it leaves in clear is "
               "enough for this middlebox." if wrap.startswith("tls-crypt") else "")
    fix = (f"Run the server on TCP port 443 with tls-crypt or tls-crypt-v2 ('remote "
           f"{t.host} 443 tcp' and 'tls-crypt ta.key' on both sides) — {hide}.{already} "
           "If it is still reset, use another network, or carry OpenVPN in a protocol the "
           "middlebox lets through (e.g. a TLS tunnel such as stunnel, with 'remote 127.0.0.1 "
           "PORT tcp').")
    explanation = (f"The TCP connection to {t.describe()} was accepted, then {how} "
                   f"{real.after_send_ms:.0f} ms after our first packet (a P_CONTROL_HARD_"
                   f"RESET_CLIENT_V2), before any OpenVPN answer. {why}"
                   + (" OpenVPN logs 'Connection reset, restarting' and tries again, with the "
                      "same result." if real.outcome == "reset" else ""))
    return summary, explanation, fix


async def run_first_packet_reset(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, RESET_ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o = inputs.options
    tcp = [t for t in inputs.targets if t.transport == "tcp"]
    if not tcp:
        return ok(RESET_ID, "no TCP remote (UDP: a path that drops OpenVPN packets looks "
                  "filtered, see port.reachable and netbeh.udp_blocked)")
    port = ctx.results.get("port.reachable")
    suspects: list[Target] = []
    rows = {e.get("sent_to"): e for e in (port.evidence.get("targets", ())
                                          if port is not None else ())}
    for t in tcp:
        row = rows.get(t.describe())
        if row is None or (row.get("tcp") == "connected" and not row.get("bytes_received")):
            suspects.append(t)
    if not suspects:
        return ok(RESET_ID, "every TCP remote answered the first OpenVPN packet (see "
                  "port.reachable)")
    results: list[tuple[FirstPacket, FirstPacket | None]] = [(FirstPacket(t), None)
                                                             for t in suspects]

    async def one(i: int) -> None:
        results[i] = await first_packet_pair(suspects[i], inputs.wrap, ctx.netns)

    async with trio.open_nursery() as nursery:
        for i in range(len(suspects)):
            nursery.start_soon(one, i)
    evidence = {"probes": [{"openvpn_reset": r.evidence(),
                            "control": c.evidence() if c is not None else None}
                           for r, c in results]}
    bad = next(((r, c) for r, c in results if r.reset_right_after), None)
    if bad is None:
        return ok(RESET_ID, "no TCP remote resets the connection right after the first "
                  "OpenVPN packet", **evidence)
    summary, explanation, fix = _dpi_text(o, bad[0], bad[1], wrap_name(o))
    return problem(RESET_ID, "fail", summary, explanation=explanation, fix=fix, **evidence)


# ------------------------------------------------------------------ netbeh.udp_blocked


async def _udp_states(ctx: DoctorContext, inputs: ProbeInputs) -> list[dict[str, Any]]:
    """port.reachable's per-target evidence, or (when it is not part of the run) the same
    UDP reset exchange made here."""
    port = ctx.results.get("port.reachable")
    if port is not None:
        return list(port.evidence.get("targets", ()))
    udp = [t for t in inputs.targets if t.transport == "udp"]
    rows: list[dict[str, Any]] = [{} for _ in udp]

    async def one(i: int) -> None:
        ex = await udp_reset_exchange(udp[i], inputs.wrap, wrap_label=wrap_name(inputs.options),
                                      netns=ctx.netns, connected=False,
                                      reprobe=REPROBE_ATTEMPTS)
        rows[i] = ex.evidence()

    async with trio.open_nursery() as nursery:
        for i in range(len(udp)):
            nursery.start_soon(one, i)
    return rows


async def run_udp_blocked(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(UDP_BLOCKED_ID, "skipped: the config did not parse")
    if all(r.proto != "udp" for r in o.remotes):
        return ok(UDP_BLOCKED_ID, "no UDP remote")
    inputs = await probe_inputs(ctx, UDP_BLOCKED_ID)
    if isinstance(inputs, CheckResult):
        return inputs
    # silence, or an ICMP "administratively prohibited": not a host or network that is down
    filtered = [e for e in await _udp_states(ctx, inputs)
                if e.get("target", {}).get("proto") == "udp" and e.get("state") == "filtered"
                and e.get("icmp") not in ("host_unreachable", "net_unreachable")]
    if not filtered:
        return ok(UDP_BLOCKED_ID, "no UDP remote is filtered")
    tries: list[Target] = []
    for e in filtered:
        t = e["target"]
        for p in dict.fromkeys((443, int(t["port"]))):
            tries.append(Target(t["host"], t["address"], p, "tcp", int(t["remote_line"])))
    found: list[tuple[FirstPacket, FirstPacket | None]] = [(FirstPacket(t), None) for t in tries]

    async def one(i: int) -> None:
        found[i] = await first_packet_pair(tries[i], inputs.wrap, ctx.netns)

    async with trio.open_nursery() as nursery:
        for i in range(len(tries)):
            nursery.start_soon(one, i)
    evidence: dict[str, Any] = {
        "udp_filtered": [e["sent_to"] for e in filtered],
        "tcp_probes": [{"openvpn_reset": r.evidence(),
                        "control": c.evidence() if c is not None else None} for r, c in found]}
    udp = filtered[0]["sent_to"]
    answering = [r for r, _ in found if r.outcome == "answered"
                 and r.reply_kind == "openvpn_reset"]
    if answering:
        best = next((r for r in answering if r.target.port == 443), answering[0])
        t = best.target
        return problem(
            UDP_BLOCKED_ID, "warn", f"UDP to {udp} is filtered, but an OpenVPN server answers "
            f"over TCP on {t.describe()} ({best.after_send_ms:.0f} ms)", **evidence,
            explanation=f"A real OpenVPN reset sent over TCP to {t.describe()} got the server's "
            f"reset back, while UDP resets to {udp} got no answer: UDP is blocked between here "
            "and the server (a firewall on this network, or in front of the server) while "
            "TCP passes. Networks that block UDP often allow TCP 443.",
            fix=f"In {o.config_path.name} use 'proto tcp-client' and 'remote {t.host} "
            f"{t.port} tcp' (or add that 'remote' line after the UDP one: OpenVPN moves to "
            "it when the UDP attempt fails after 'hand-window' seconds).")
    dpi = next(((r, c) for r, c in found if r.reset_right_after), None)
    if dpi is not None:
        summary, explanation, fix = _dpi_text(o, dpi[0], dpi[1], wrap_name(o))
        return problem(UDP_BLOCKED_ID, "warn", f"UDP to {udp} is filtered; over TCP, "
                       + summary, explanation=explanation, fix=fix, **evidence)
    return ok(UDP_BLOCKED_ID, f"UDP to {udp} is filtered (port.reachable), and no OpenVPN "
              "server answers over TCP 443 or the same port either", **evidence)


# ------------------------------------------------------------------ netbeh.remote_addresses


async def run_remote_addresses(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(ADDRESSES_ID, "skipped: the config did not parse")
    dns = ctx.results.get("dns.remote")
    rows = dns.evidence.get("remotes", []) if dns is not None else []
    multi = [(r, row) for r, row in zip(o.remotes, rows, strict=False)
             if isinstance(row, dict) and len(row.get("addresses") or ()) > 1]
    if not multi:
        return ok(ADDRESSES_ID, "no remote name has several addresses")
    inputs = await probe_inputs(ctx, ADDRESSES_ID)
    if isinstance(inputs, CheckResult):
        return inputs
    wrap, label = inputs.wrap, wrap_name(o)
    targets: list[Target] = []
    for remote, row in multi:
        transport = transport_of(remote)
        for addr in list(row["addresses"])[:MAX_ADDRESSES]:
            targets.append(Target(remote.host, str(addr), remote.port, transport, remote.line))
    states: list[dict[str, Any]] = [{} for _ in targets]

    async def one(i: int) -> None:
        ex = await reset_exchange(targets[i], wrap, wrap_label=label, netns=ctx.netns)
        states[i] = {"host": targets[i].host, "address": targets[i].address,
                     "sent_to": targets[i].describe(), "state": ex.state,
                     "reply_kind": ex.replies[0]["kind"] if ex.replies else None,
                     "icmp": ex.icmp, "remote_line": targets[i].line}

    async with trio.open_nursery() as nursery:
        for i in range(len(targets)):
            nursery.start_soon(one, i)
    evidence = {"addresses": states}
    failing = [s for s in states
               if not (s["state"] == "open" and s["reply_kind"] == "openvpn_reset")]
    # an address of a family this host has no route for (an IPv6 address on an IPv4-only
    # host), after one that works, is what a dual-stack name looks like from here
    first_of = {s["host"]: s for s in reversed(states)}
    no_route = [s for s in failing if s["icmp"] == "net_unreachable"
                and first_of[s["host"]] is not s]
    if no_route:
        evidence["no_route_from_here"] = [s["sent_to"] for s in no_route]
    failing = [s for s in failing if s not in no_route]
    if not failing:
        return ok(ADDRESSES_ID, f"all {len(states) - len(no_route)} reachable addresses of "
                  f"{', '.join(dict.fromkeys(r.host for r, _ in multi))} answer"
                  + (f" ({len(no_route)} more of a family this host has no route for)"
                     if no_route else ""), **evidence)
    host = failing[0]["host"]
    mine = [s for s in states if s["host"] == host]
    good = [s for s in mine if s not in failing]
    dead = [s for s in mine if s in failing]
    order = ", ".join(s["address"] for s in mine)
    line = failing[0]["remote_line"]
    first_dead = mine[0] in failing
    hw, ct = o.hand_window, o.server_poll_timeout or 120
    how = (f"UDP: after 'hand-window' ({hw} s) it logs 'TLS key negotiation failed to occur "
           f"within {hw} seconds' and 'SIGUSR1[soft,tls-error] received, process restarting'"
           if failing[0]["sent_to"].endswith("/udp") else
           f"TCP: a connection that is not answered fails after 'connect-timeout' ({ct} s) "
           "with 'TCP: connect to ... failed: Connection timed out' and 'SIGUSR1[connection "
           "failed(soft),connection-failed] received, process restarting'")
    explanation = (
        f"{host} resolves to {len(mine)} addresses ({order}, in the order the resolver "
        f"returns them) and {', '.join(s['address'] + ' is ' + s['state'] for s in dead)}. "
        "OpenVPN tries the addresses of a 'remote' name in that order: it connects to the "
        f"first, and when that attempt fails ({how}) it starts again with the next "
        "address.")
    if not good:
        explanation += " None of the addresses answers."
    elif first_dead:
        explanation += (" Here the first address fails, so every connection waits for that "
                        "timeout before reaching a working one.")
    else:
        explanation += (" Here a working address comes first; a failing one costs that "
                        "timeout whenever a connection attempt starts with it.")
    status: Status = "warn" if good else "fail"
    shorter = ("'hand-window' (e.g. 'hand-window 10')" if "UDP:" in how
               else "'connect-timeout' (e.g. 'connect-timeout 10')")
    if good:
        fix = (f"Remove {', '.join(s['address'] for s in dead)} from the DNS records of "
               f"{host}, or replace 'remote {host}' in {o.config_path.name} line {line} by "
               f"'remote' lines naming the working address(es) "
               f"({', '.join(s['address'] for s in good)}); a shorter {shorter} makes the "
               "fallback to the next address quicker.")
    else:
        fix = (f"No address of {host} answers: check the server and the path to it (see "
               "port.reachable); then keep only the addresses that work in DNS, or name them "
               f"in 'remote' lines in {o.config_path.name}.")
    return problem(ADDRESSES_ID, status,
                   f"{host}: {len(dead)} of {len(mine)} addresses do not answer "
                   f"({', '.join(s['sent_to'] + ' ' + s['state'] for s in dead)})",
                   explanation=explanation, fix=fix, **evidence)


CHECKS: tuple[Check, ...] = (
    Check(KEEPALIVE_ID, run_keepalive, roles=("client", "server"), timeout=3.0),
    Check(UDP_BLOCKED_ID, run_udp_blocked, roles=("client",), depends_on=("dns.remote",),
          after=("port.reachable",), needs_tls=True),
    Check(RESET_ID, run_first_packet_reset, roles=("client",), depends_on=("dns.remote",),
          after=("port.reachable",), needs_tls=True),
    Check(ADDRESSES_ID, run_remote_addresses, roles=("client",), depends_on=("dns.remote",),
          needs_tls=True),
    Check(NAT_ID, run_nat_timeout, roles=("client",), depends_on=("dns.remote",),
          timeout=NAT_MAX_WAIT + 30.0, opt_in=True, needs_tls=True),
)
