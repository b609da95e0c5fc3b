"""The one loop that drives a :class:`~trivpn.protocol.session.Session`.

A session is sans-IO: packets and the time go in, datagrams to send, packets for the TUN and
events come out, and :meth:`~trivpn.protocol.session.Session.next_timer` says when it wants to
be woken. :class:`SessionPump` is the glue every runtime user of a session needs, written once:

* :meth:`SessionPump.flush` hands the session's output to the owner's three callbacks — send
  datagrams (over whatever link), deliver decrypted packets (to whatever device), act on
  events — in that order, and re-arms the timer;
* :meth:`SessionPump.run_timers` is the timer task: it sleeps until the session's next
  deadline (woken early by every flush, since input may have moved the deadline) and runs the
  session's timers;
* :meth:`SessionPump.step_timers` does the same for owners that drive the session from one
  loop of their own (the doctor's handshake probe).

Data packets do not pass through the pump: the runtime decrypts them on its hot path with
``Session.decrypt_data`` and only feeds control packets in (:meth:`SessionPump.receive`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import trio

from trivpn.protocol import events as ev
from trivpn.protocol.session import Session

MIN_TIMER_STEP = 0.01
"""Guard against a deadline that stays in the past (a timer the session cannot act on yet)."""

SendDatagrams = Callable[[list[bytes]], Awaitable[None]]
DeliverPackets = Callable[[list[bytes]], None]
OnEvent = Callable[[ev.Event], None]


class SessionPump:
    """Drives one session: its output to the owner's callbacks, its timers on time."""

    __slots__ = ("_deliver", "_on_event", "_rearm", "_send", "session")

    def __init__(self, session: Session, *, send: SendDatagrams, deliver: DeliverPackets,
                 on_event: OnEvent) -> None:
        self.session = session
        self._send = send
        self._deliver = deliver
        self._on_event = on_event
        self._rearm = trio.Event()

    def receive(self, packets: Iterable[bytes], now: float) -> None:
        """Control (or any) packets from the link into the session; :meth:`flush` is due."""
        receive = self.session.receive_datagram
        for packet in packets:
            receive(packet, now)

    async def flush(self) -> None:
        """Send what the session produced, deliver its TUN packets, act on its events."""
        session = self.session
        out = session.take_datagrams()
        if out:
            await self._send(out)
        packets = session.take_tun_packets()
        if packets:
            self._deliver(packets)
        for event in session.take_events():
            self._on_event(event)
        self._rearm.set()

    def step_timers(self, now: float) -> bool:
        """Run the session's timers if one is due at ``now``; True if one was (then
        :meth:`flush` is due)."""
        deadline = self.session.next_timer()
        if deadline is not None and deadline <= now:
            self.session.handle_timer(now)
            return True
        return False

    async def run_timers(self) -> None:
        """The timer task: runs until cancelled."""
        session = self.session
        last = -1.0
        while True:
            rearm = self._rearm = trio.Event()
            deadline = session.next_timer()
            if deadline is None:
                await rearm.wait()
                continue
            deadline = max(deadline, last + MIN_TIMER_STEP)
            with trio.move_on_at(deadline):
                await rearm.wait()
            if rearm.is_set() and trio.current_time() < deadline:
                continue
            last = trio.current_time()
            session.handle_timer(last)
            await self.flush()
