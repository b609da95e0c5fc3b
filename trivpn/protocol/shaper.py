"""``shaper N``: at most N bytes a second to the peer (OpenVPN shaper.h/shaper.c).

OpenVPN's rule: after writing a datagram of B bytes (payload plus the IP and UDP/TCP headers,
socket.h datagram_overhead(); at least 100), the next write waits until B/N seconds after
this one (at most 10 s, SHAPER_MAX_TIMEOUT); a wait under a millisecond is not waited
(forward.c, io_wait_dowork()). Time is passed in.
"""

from __future__ import annotations

SHAPER_MIN, SHAPER_MAX = 100, 100_000_000  # bytes per second (OpenVPN shaper.h)
_MAX_DELAY = 10.0
_MIN_WAIT = 0.001


def datagram_overhead(ipv6: bool, tcp: bool) -> int:
    """IP plus UDP or TCP header bytes (OpenVPN socket.h, datagram_overhead())."""
    return (40 if ipv6 else 20) + (20 if tcp else 8)


class Shaper:
    __slots__ = ("_factor", "_overhead", "_wakeup")

    def __init__(self, bytes_per_second: int, overhead: int) -> None:
        if not SHAPER_MIN <= bytes_per_second <= SHAPER_MAX:
            raise ValueError(f"shaper must be {SHAPER_MIN}..{SHAPER_MAX} bytes a second")
        self._factor = 1.0 / bytes_per_second
        self._overhead = overhead
        self._wakeup = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next datagram may go (0: now)."""
        wait = self._wakeup - now
        return wait if wait >= _MIN_WAIT else 0.0

    def wrote(self, payload: int, now: float) -> None:
        """A datagram of ``payload`` bytes went out at ``now``."""
        self._wakeup = now + min(max(payload + self._overhead, 100) * self._factor, _MAX_DELAY)
