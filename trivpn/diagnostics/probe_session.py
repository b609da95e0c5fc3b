"""Drive a real :class:`~trivpn.protocol.session.Session` against a configured remote, for the
``tls.handshake`` and ``tunnel.traffic`` probes.

The session is built exactly as ``trivpn run`` builds it (:func:`session_config`), with a short
hand-window so that a stalled handshake ends within the doctor's time budget. Every
:class:`~trivpn.protocol.events.PhaseReached` is kept with its time since the probe started.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics.probe import RECV_SIZE, Target, Timeline, unix_offset
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.session import Session, SessionConfig
from trivpn.runtime.link import FramedLink, LinkClosed, make_socket
from trivpn.runtime.pump import SessionPump
from trivpn.sessionsetup import session_config

PHASE_LABELS = {
    ev.PHASE_RESET_SENT: "reset sent",
    ev.PHASE_RESET_RECEIVED: "reset answered",
    ev.PHASE_TLS_STARTED: "TLS started (ClientHello sent)",
    ev.PHASE_TLS_COMPLETE: "server certificate verified, TLS complete",
    ev.PHASE_KEY_METHOD_SENT: "key method 2 sent",
    ev.PHASE_KEY_METHOD_RECEIVED: "key method 2 received",
    ev.PHASE_PUSH_REQUEST_SENT: "PUSH_REQUEST sent",
    ev.PHASE_PUSH_REPLY_RECEIVED: "PUSH_REPLY received",
    ev.PHASE_DATA_CHANNEL_READY: "data channel keys installed",
}
PHASE_ORDER = tuple(PHASE_LABELS)
CHECK_EVERY = 0.5
RX_KEEP = 4


def probe_config(options: Options, *, hand_window: float, tls_timeout: float = 1.0,
                 offset: float | None = None) -> SessionConfig:
    """The client's SessionConfig with a doctor-sized hand-window and retransmit timeout; no
    renegotiation and no keepalive during the probe."""
    base = session_config(options, unix_time_offset=unix_offset() if offset is None else offset)
    return dataclasses.replace(base, hand_window=hand_window,
                               tls_timeout=min(base.tls_timeout, tls_timeout),
                               reneg_seconds=None, ping_interval=None, ping_restart=None)


class SessionProbe:
    """One session over one socket (connected UDP, or TCP with 2-byte framing)."""

    def __init__(self, config: SessionConfig, target: Target, netns: str | None) -> None:
        self.config = config
        self.target = target
        self.netns = netns
        self.timeline = Timeline()
        self.events: list[ev.Event] = []
        self.tun: list[bytes] = []
        self.link_error: str | None = None
        self.sent_packets = 0
        self.received_packets = 0
        self.rx_times: list[float] = []
        # the first few datagrams as received, with their times: their tls-auth/tls-crypt
        # timestamps show the server's clock
        self.rx_first: list[tuple[float, bytes]] = []
        self.tx_times: list[float] = []
        self._sock: trio.socket.SocketType | None = None
        self._stream: FramedLink | None = None  # TCP: the runtime's framing
        self.session: Session | None = None
        self.pump: SessionPump | None = None
        # Called with the decrypted inner packets instead of collecting them in ``tun``
        # (the doctor's shared tunnel session, tunnel_session.py).
        self.on_tun: Callable[[list[bytes]], None] | None = None
        self._send_lock = trio.Lock()  # a lease holder and the driving loop both send
        # Errors recv() reported on the UDP socket (ICMP errors, IP_RECVERR's queue), timed.
        self.socket_errors: list[tuple[float, OSError]] = []
        # False: run_until only receives; the session's timers (its pings, ping-restart,
        # retransmits) are not run, so nothing is sent unless the caller sends it.
        self.timers = True

    async def __aenter__(self) -> SessionProbe:
        kind = socket.SOCK_DGRAM if self.target.transport == "udp" else socket.SOCK_STREAM
        sock = trio.socket.from_stdlib_socket(make_socket(self.target.family, kind, self.netns))
        try:
            await sock.connect(self.target.sockaddr)
        except BaseException:
            sock.close()
            raise
        if kind == socket.SOCK_STREAM:
            self._stream = FramedLink(trio.SocketStream(sock))
            self.timeline.add("tcp_connected")
        self._sock = sock
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._sock is not None:
            self._sock.close()

    # -------------------------------------------------------------- driving

    def start(self) -> None:
        now = trio.current_time()
        self.session = Session(self.config, now)
        self.pump = SessionPump(self.session, send=self._send_all, deliver=self._deliver,
                                on_event=self.events.append)
        self.session.start(now)

    def _deliver(self, packets: list[bytes]) -> None:
        if self.on_tun is not None:
            self.on_tun(packets)
        else:
            self.tun.extend(packets)

    @property
    def socket(self) -> trio.socket.SocketType:
        """The outer socket (connected UDP, or the TCP connection)."""
        assert self._sock is not None
        return self._sock

    @property
    def phases(self) -> list[dict[str, Any]]:
        """PhaseReached events of key 0, in order, with their times."""
        out = []
        for e in self.events:
            if isinstance(e, ev.PhaseReached) and e.key_id == 0:
                out.append({"phase": e.phase, "label": PHASE_LABELS.get(e.phase, e.phase),
                            "t": self.timeline.elapsed(e.at)})
        return out

    def silence(self) -> dict[str, Any]:
        """How the server's side of the conversation ended: packets received after TLS
        started, seconds since the last one, and how many we sent after it."""
        now = trio.current_time()
        tls_at = next((e.at for e in self.events if isinstance(e, ev.PhaseReached)
                       and e.key_id == 0 and e.phase == ev.PHASE_TLS_STARTED), None)
        last_rx = self.rx_times[-1] if self.rx_times else None
        return {
            "received_after_tls_started": (sum(1 for t in self.rx_times if t > tls_at)
                                           if tls_at is not None else 0),
            "server_silent_s": round(now - (last_rx if last_rx is not None
                                            else self.timeline.start), 2),
            "sent_after_last_reply": sum(1 for t in self.tx_times
                                         if last_rx is None or t > last_rx),
        }

    def failure(self) -> ev.HandshakeFailed | None:
        return next((e for e in self.events if isinstance(e, ev.HandshakeFailed)), None)

    def saw(self, kind: type[ev.Event]) -> bool:
        return any(isinstance(e, kind) for e in self.events)

    async def run_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Feed packets and timers until ``done()`` or ``deadline`` (trio time)."""
        session, pump = self.session, self.pump
        assert session is not None and pump is not None
        await pump.flush()
        while not done():
            now = trio.current_time()
            if now >= deadline or session.failed or (
                    self.link_error is not None and self._stream is not None):
                return done()
            wake = min(deadline, now + CHECK_EVERY)  # re-evaluate done() while silent
            timer = session.next_timer() if self.timers else None
            if timer is not None:
                wake = min(wake, max(timer, now))
            packets: list[bytes] = []
            with trio.move_on_at(wake):
                packets = await self._receive()
            now = trio.current_time()
            self.received_packets += len(packets)
            self.rx_times += [now] * len(packets)
            self.rx_first += [(now, p) for p in packets[:RX_KEEP - len(self.rx_first)]]
            pump.receive(packets, now)
            if self.timers:
                pump.step_timers(now)
            await pump.flush()
            if self.link_error is not None and not packets:
                await trio.sleep(min(0.2, max(0.0, deadline - trio.current_time())))
        return True

    async def send_tun(self, packet: bytes) -> bool:
        session = self.session
        assert session is not None
        wire = session.encrypt_data(packet, trio.current_time())
        if wire is None:
            return False
        await self._send(wire)
        return True

    async def say_goodbye(self) -> None:
        """Tell the server we are leaving (EXIT or OCC_EXIT), best effort, without waiting."""
        session, pump = self.session, self.pump
        if session is None or pump is None or not session.established:
            return
        try:
            session.exit_notify(trio.current_time())
        except ProtocolError:
            return
        with trio.move_on_after(0.5):
            await pump.flush()

    # -------------------------------------------------------------- I/O

    async def _send_all(self, datagrams: list[bytes]) -> None:
        for data in datagrams:
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            await self.send_wire(data)
        except (OSError, trio.BrokenResourceError, ProtocolError) as exc:
            self._link_failed(exc)

    async def send_wire(self, data: bytes) -> None:
        """Send one datagram (UDP) or framed packet (TCP); errors propagate."""
        async with self._send_lock:
            if self._stream is not None:
                await self._stream.send_packets((data,))
            else:
                assert self._sock is not None
                await self._sock.send(data)
        self.sent_packets += 1
        self.tx_times.append(trio.current_time())

    async def _receive(self) -> list[bytes]:
        if self._stream is not None:
            try:
                return await self._stream.recv_packets()
            except LinkClosed:
                self._link_failed(ConnectionResetError("the server closed the connection"))
            except (OSError, trio.BrokenResourceError, ProtocolError) as exc:
                self._link_failed(exc)
            await trio.sleep_forever()
        assert self._sock is not None
        try:
            return [await self._sock.recv(RECV_SIZE)]
        except OSError as exc:
            self.socket_errors.append((trio.current_time(), exc))
            self._link_failed(exc)
            return []

    def _link_failed(self, exc: BaseException) -> None:
        if self.link_error is None:
            self.link_error = str(exc) or type(exc).__name__
            self.timeline.add("link_error", error=self.link_error)
