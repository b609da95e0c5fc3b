"""One persistent, level-triggered ``epoll`` over the data path's fds, and a cheap way to wait.

Why (docs/performance-notes.md, "idle RTT"): a lone packet wakes a process that has slept for
tens of milliseconds, with cold caches, and every line of Python run before the packet is
forwarded costs microseconds. trio's ``wait_readable`` registers an fd with ``EPOLLONESHOT``
and re-arms it on every wait (one ``epoll_ctl``), and each wake-up of a task is a full pass of
trio's scheduler (~75 µs of cold Python per wake-up, measured); with one task per direction a
ping crosses three such passes in the server alone.

So the data path keeps its fds (UDP socket, TUN device) in a private epoll registered once, and
one task serves both directions: after a wake-up it handles whatever is ready and asks the
private epoll again (timeout 0), so a reply that became ready while a request was handled is
picked up at once. When nothing is ready, :meth:`ReadySet.wait` has two ways to wait:

* **Directly**, when trio has nothing else to do: no other task runnable (counted exactly by
  a trio instrument, the rest of the scheduler's current batch included), no callbacks queued.
  Then the task blocks in ``epoll_wait`` on a second private epoll that holds the data fds
  *and trio's own epoll fd*, for at most the time to trio's next deadline. A packet wakes it
  with no scheduler pass and no re-arm; any I/O trio waits for (control sockets, signals,
  thread results, run_sync_soon) makes trio's epoll fd readable and the task yields to trio at
  once, and a deadline (a timer, a cancel scope) ends the wait in time for trio to run it. For
  trio this looks like a task that is busy for a while, never like a lost wake-up (only
  ``trio.testing.wait_all_tasks_blocked`` notices: it sees a busy task until the wait ends).
* **Through trio** (``wait_readable`` on the private epoll's fd) otherwise, or where the
  direct way is unavailable (another I/O backend, a test clock, trio internals not as expected).

Either way the task checks for cancellation on every call and yields to trio at least every
:data:`YIELD_EVERY` rounds of ready work, so timers and control traffic keep running under load.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable

import trio

YIELD_EVERY = 4
"""Rounds of ready work in a row after which :meth:`ReadySet.wait` lets other tasks run."""
MAX_DIRECT_WAIT = 1.0
"""Longest direct wait (seconds) before trio's scheduler gets a pass anyway."""
_MAX_EVENTS = 8


class _TrioLoop:
    """What the direct wait needs from the running trio loop: its epoll fd and the time to
    its next deadline. ``None`` (see :meth:`find`) when the direct wait cannot be used: not
    the epoll backend, not trio's system clock (a test clock has its own notion of time), or
    trio's internals are not what this module knows."""

    __slots__ = ("clock", "epoll_fd", "next_deadline")

    def __init__(self, epoll_fd: int, next_deadline: Callable[[], float],
                 clock: Callable[[], float]) -> None:
        self.epoll_fd = epoll_fd
        self.next_deadline = next_deadline
        self.clock = clock

    @classmethod
    def find(cls) -> _TrioLoop | None:
        try:
            from trio._core._run import GLOBAL_RUN_CONTEXT  # noqa: PLC0415

            runner = GLOBAL_RUN_CONTEXT.runner
            clock = runner.clock
            if type(clock).__name__ != "SystemClock":
                return None
            epoll = getattr(runner.io_manager, "_epoll", None)
            if not isinstance(epoll, select.epoll):
                return None
            next_deadline = runner.deadlines.next_deadline
            if not isinstance(next_deadline(), float):
                return None
            return cls(epoll.fileno(), next_deadline, clock.current_time)
        except (ImportError, AttributeError, TypeError):
            return None


class _Runnable(trio.abc.Instrument):
    """Counts tasks that are scheduled but not yet stepped, the rest of the scheduler's
    current batch included (``current_statistics().tasks_runnable`` sees only the next
    batch). Exact once synced at a moment the current batch is done (trio about to wait)."""

    def __init__(self) -> None:
        self.pending = 1  # unknown until synced
        self.synced = False

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.pending += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.pending -= 1

    def before_io_wait(self, timeout: float) -> None:
        if not self.synced:
            self.pending = trio.lowlevel.current_statistics().tasks_runnable
            self.synced = True


class ReadySet:
    """Level-triggered readability of a few fds. Create inside ``trio.run``; one waiter.

    Each :meth:`wait` returns one *round* of ready fds. :meth:`burst` tells whether an fd was
    also ready in the round before, with no wait in between: then a burst is under way and
    the caller should drain the fd (for batching); otherwise reading once saves the confirming
    ``EAGAIN`` read, since the next round's readiness check tells whether more is queued.
    """

    __slots__ = ("_direct", "_epoll", "_last", "_loop", "_runnable", "_streak", "_trio_fd",
                 "again")

    def __init__(self, fds: tuple[int, ...] = (), *, direct: bool = True) -> None:
        self._epoll = select.epoll()
        self._loop = _TrioLoop.find() if direct else None
        self._trio_fd = -1
        self._runnable = _Runnable()
        if self._loop is not None:
            self._trio_fd = self._loop.epoll_fd
            self._direct = select.epoll()
            self._direct.register(self._trio_fd, select.EPOLLIN)
            trio.lowlevel.add_instrument(self._runnable)
        else:
            self._direct = self._epoll  # polled the same way, never waited on directly
        self._streak = 0
        self._last: list[int] = []
        self.again: list[int] = []
        """The fds of this round that were also ready in the round before (read-only):
        ``fd in ready.again`` is :meth:`burst` without a call, for the per-packet path."""
        for fd in fds:
            self.add(fd)

    @property
    def direct(self) -> bool:
        """Whether :meth:`wait` can wait without trio's scheduler."""
        return self._loop is not None

    def add(self, fd: int) -> None:
        """Watch ``fd`` for readability (already watched: nothing happens)."""
        for epoll in (self._epoll, self._direct):
            with contextlib.suppress(FileExistsError):
                epoll.register(fd, select.EPOLLIN)

    def discard(self, fd: int) -> None:
        """Stop watching ``fd`` (not watched, or already closed: nothing happens)."""
        for epoll in (self._epoll, self._direct):
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(fd)

    def ready(self) -> list[int]:
        """The watched fds that are readable now (never waits)."""
        return [fd for fd, _ in self._epoll.poll(0, _MAX_EVENTS)]

    def burst(self, fd: int) -> bool:
        """``fd`` was ready in this round and the one before, with no wait in between."""
        return fd in self.again

    def _ours(self, events: list[tuple[int, int]]) -> list[int] | None:
        """The data fds among ``events``; None when trio's own epoll is among them."""
        trio_fd = self._trio_fd
        ready = []
        for fd, _ in events:
            if fd == trio_fd:
                return None
            ready.append(fd)
        return ready

    async def wait(self) -> list[int]:
        """The next round: the watched fds that are readable, waiting for at least one.

        Raises :class:`trio.Cancelled` when cancelled (checked before any wait and at least
        every :data:`YIELD_EVERY` rounds). Yields to other tasks when trio has work, and at
        least every :data:`YIELD_EVERY` rounds.
        """
        waited = False
        if self._streak < YIELD_EVERY:
            # the hot path: as little Python as possible between a packet and its handling
            events = self._direct.poll(0, _MAX_EVENTS)
            if not events:
                loop, runnable = self._loop, self._runnable
                if loop is not None and not runnable.pending:
                    timeout = min(loop.next_deadline() - loop.clock(), MAX_DIRECT_WAIT)
                    if timeout > 0:
                        await trio.lowlevel.checkpoint_if_cancelled()
                        events = self._direct.poll(timeout, _MAX_EVENTS)
                        self._streak = 0  # trio had nothing to do meanwhile
                        waited = True
            if events:
                if len(events) == 1:  # the usual case, without a call
                    fd = events[0][0]
                    ready = None if fd == self._trio_fd else [fd]
                else:
                    ready = self._ours(events)
                if ready is not None:
                    self._streak += 1
                    self.again = [] if waited else self._last
                    self._last = ready
                    return ready
        # through trio: it has work, or nothing is ready, or this task ran long enough
        self._streak = 1
        ready = self.ready()
        if ready:
            await trio.lowlevel.checkpoint()
            ready = self.ready()
        epoll_fd = self._epoll.fileno()
        while not ready:
            await trio.lowlevel.wait_readable(epoll_fd)
            ready = self.ready()
            waited = True
        self.again = [] if waited else self._last
        self._last = ready
        return ready

    def close(self) -> None:
        """Close the private epolls (idempotent)."""
        if self._loop is not None:
            self._loop = None
            with contextlib.suppress(KeyError, RuntimeError):
                trio.lowlevel.remove_instrument(self._runnable)
            self._direct.close()
        if not self._epoll.closed:
            with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
                trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()
