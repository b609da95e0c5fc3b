"""Connection rate limits of a UDP server, as OpenVPN 2.6 counts them.

``connect-freq-initial N S`` bounds the stateless replies to client hard resets (a reflection
attack gets at most N replies per S seconds); a client that then completes the three-way
handshake (proves the cookie) gives its reply back, so only resets that go nowhere use up the
budget. ``connect-freq N S`` bounds how many client instances those proven handshakes create.

Both are fixed windows, not token buckets: a window opens at the first event after the previous
window ended and admits ``limit`` events. Time is passed in.
"""

from __future__ import annotations


class WindowLimiter:
    """At most ``limit`` events per window of ``seconds`` (``seconds`` > 0)."""

    __slots__ = ("_count", "_start", "limit", "seconds")

    def __init__(self, limit: int, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a window limiter needs a period > 0")
        self.limit = limit
        self.seconds = seconds
        self._start: float | None = None
        self._count = 0

    def allow(self, now: float) -> bool:
        """Count one event at ``now``; True if it is within the limit. Refused events count
        too, so a flood keeps the window full however many events are given back."""
        if self._start is None or now >= self._start + self.seconds:
            self._start = now
            self._count = 0
        self._count += 1
        return self._count <= self.limit

    def give_back(self) -> None:
        """Uncount one earlier event of the current window (a reset whose client went on to
        complete the handshake)."""
        if self._count > 0:
            self._count -= 1
