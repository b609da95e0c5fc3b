"""Replay protection: OpenVPN's sliding packet-id window (``packet_id.c``; docs/protocol.md §7.5).

Used for data packets (short form: ``timestamp`` None) and for the tls-auth / tls-crypt replay
block (long form: ``packet_id`` plus the sender's ``timestamp``).
"""

from __future__ import annotations

from collections import deque

from trivpn.protocol.errors import ReplayError

MAX_SEQ_BACKTRACK = 65536
MAX_TIME_BACKTRACK = 600.0
_MAX_U32 = 0xFFFFFFFF


class ReplayWindow:
    """The receive side of OpenVPN's ``packet_id`` (``packet_id_test`` + ``packet_id_add``).

    State: the current sequence timestamp ``T`` (0 for short form), the highest id ``H`` seen in
    that sequence and, for the ``backtrack`` ids ``H, H-1, ...`` the local time each was received
    (or "not seen").

    A packet ``(id, ts)`` (``ts`` = 0 when ``timestamp`` is None) is accepted when:

    * ``id`` is never 0 (always rejected);
    * ``ts > T``: a new sequence - always accepted (it restarts the window when added);
    * ``ts < T``: rejected ("time backtrack");
    * ``ts == T``: accepted if ``id > H``; otherwise ``H - id`` must be inside the window (the
      window covers ``max(1, H - backtrack + 1) .. H``), that id must not have been seen, and
      (when ``time_backtrack`` is non-zero) **no higher id in the window may have been received
      more than ``time_backtrack`` seconds before ``now``** (strictly: ``t + time_backtrack <
      now``). This is OpenVPN's ``packet_id_reap()`` rule: once a received entry is older than
      ``time_backtrack``, it and every lower id are expired.

    Difference from OpenVPN: OpenVPN re-evaluates expiry at most every 5 s
    (``SEQ_REAP_INTERVAL``) with a 1-second clock; here expiry is evaluated exactly at every
    check with the float ``now`` given, so trivpn is at most 5 s stricter than OpenVPN.

    Adding: a newer timestamp, or an id more than ``backtrack`` above ``H``, restarts the window
    at that id; otherwise the window slides up to ``id`` and ``id`` is marked as received at
    ``now``.

    ``backtrack = 0`` is OpenVPN's non-backtrack (TCP without ``IV_TCPNL``) mode: ids must
    follow each other without gaps (the first one of a sequence is free, a new timestamp must
    start at id 1).
    """

    __slots__ = ("_backtrack", "_highest", "_seen", "_time", "_time_backtrack")

    def __init__(self, backtrack: int = 64, time_backtrack: float = 15.0) -> None:
        if not 0 <= backtrack <= MAX_SEQ_BACKTRACK:
            raise ValueError(f"backtrack must be 0..{MAX_SEQ_BACKTRACK}")
        if not 0 <= time_backtrack <= MAX_TIME_BACKTRACK:
            raise ValueError(f"time_backtrack must be 0..{MAX_TIME_BACKTRACK}")
        self._backtrack = backtrack
        self._time_backtrack = float(time_backtrack)
        self._time = 0
        self._highest = 0
        # index 0 = id H, index i = id H - i; value = local receive time or None (not seen)
        self._seen: deque[float | None] = deque(maxlen=backtrack or 1)

    @property
    def highest(self) -> int:
        """Highest packet id accepted in the current sequence (0 before the first)."""
        return self._highest

    @property
    def time(self) -> int:
        """Timestamp of the current sequence (0 before the first packet, or short form)."""
        return self._time

    def restore(self, timestamp: int, highest: int) -> None:
        """Start from a persisted state (replay-persist: OpenVPN packet_id.c,
        packet_id_persist_load_obj()): sequence ``timestamp`` up to id ``highest`` counts as
        received, so only newer sequences or higher ids are accepted."""
        self._time = timestamp
        self._highest = highest
        self._seen.clear()

    def check(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        """Raise ReplayError unless ``packet_id`` (with ``timestamp``) is acceptable now."""
        if not 0 < packet_id <= _MAX_U32:
            raise ReplayError(f"packet id {packet_id} is never valid", "packet id")
        ts = 0 if timestamp is None else timestamp
        if ts < self._time:
            raise ReplayError(f"timestamp {ts} older than current sequence {self._time}",
                              "packet id")
        if ts > self._time:
            if self._backtrack == 0 and packet_id != 1:
                raise ReplayError(f"new sequence must start at id 1, got {packet_id}",
                                  "packet id")
            return
        if self._backtrack == 0:
            if self._highest and packet_id != self._highest + 1:
                raise ReplayError(f"packet id {packet_id} is not {self._highest + 1}",
                                  "packet id")
            return
        if packet_id > self._highest:
            return
        diff = self._highest - packet_id
        seen = self._seen
        if diff >= len(seen):
            raise ReplayError(f"packet id {packet_id} is behind the replay window", "packet id")
        if seen[diff] is not None:
            raise ReplayError(f"packet id {packet_id} was already received", "packet id")
        if self._time_backtrack:
            limit = now - self._time_backtrack
            for i in range(diff):
                t = seen[i]
                if t is not None and t < limit:
                    raise ReplayError(
                        f"packet id {packet_id} arrived more than {self._time_backtrack:g} s "
                        "after a higher id", "packet id")

    def add(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        """Record ``packet_id`` as received at ``now`` (call only after :meth:`check`)."""
        ts = 0 if timestamp is None else timestamp
        bt = self._backtrack
        if bt == 0:
            self._time = ts
            self._highest = packet_id
            return
        seen = self._seen
        if not seen or ts > self._time or packet_id - bt > self._highest:
            self._time = ts
            self._highest = packet_id - bt if packet_id > bt else 0
            seen.clear()
        while self._highest < packet_id:
            seen.appendleft(None)
            self._highest += 1
        diff = self._highest - packet_id
        if diff < len(seen):
            seen[diff] = now

    def check_and_add(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        """:meth:`check`, then :meth:`add` when accepted."""
        ts = 0 if timestamp is None else timestamp
        if (ts == self._time and packet_id == self._highest + 1 and packet_id <= _MAX_U32
                and self._backtrack):
            # in-order fast path, same result as check() + add()
            self._seen.appendleft(now)
            self._highest = packet_id
            return
        self.check(packet_id, now, timestamp)
        self.add(packet_id, now, timestamp)

    def __repr__(self) -> str:
        return (f"ReplayWindow(backtrack={self._backtrack}, time={self._time}, "
                f"highest={self._highest})")


# --- client breadth b ---

class NoReplayCheck(ReplayWindow):
    """``no-replay``: every packet id is accepted, repeated or not (OpenVPN ssl.c,
    key_state_init(): the receive ``packet_id`` is only set up when ``opt->replay``). It still
    remembers the highest id, for the statistics that read :meth:`highest`."""

    def check(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        return

    def add(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        self._highest = max(self._highest, packet_id)

    def check_and_add(self, packet_id: int, now: float, timestamp: int | None = None) -> None:
        self._highest = max(self._highest, packet_id)
