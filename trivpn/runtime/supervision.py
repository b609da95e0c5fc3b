"""A bug in the runtime itself: one ``internal_error`` log event, then a clean exit (status 1).

An exception nobody expected (a programming error, an exception type a handler did not plan
for) is never left to Python's last-resort traceback on stderr, which a ``log``/``--log-file``
or ``daemon`` run never shows. The server and the client catch it at their top (an
``ExceptionGroup`` from a failed task as well as a plain exception from a setup step), log
:func:`log_internal_error`'s event, tear down as on SIGTERM (device, routes, DNS, ``down``)
and return 1. A bug while serving one peer of a server costs that peer only
(:meth:`trivpn.runtime.serverpeers.PeerLifecycle.peer_task`).

Failures the runtime plans for (:class:`~trivpn.config.ConfigError`, setup errors, a peer's
bad packet) keep their own events; they are not internal errors.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from types import CodeType
from typing import Any, Protocol

import trio

ERROR_TEXT_LIMIT = 200
"""The exception's message is cut to this many characters (a bug's message is for a
developer; it must not carry a whole packet or a buffer into the log)."""


_TRIO = str(Path(trio.__file__).parent)  # trio's own frames (trio.run, nurseries) are no task


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: the one that failed a task."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def task_name(exc: BaseException, runners: Collection[CodeType] = ()) -> str:
    """The task (or setup step) ``exc`` came from: the qualified name of the first function in
    its first leaf's traceback that is not one of ``runners`` (the top-level ``run`` methods
    that only started it) nor trio's. A failed child task's traceback starts at the task's
    function."""
    leaf = first_leaf(exc)
    names = [frame.f_code for frame, _ in traceback.walk_tb(leaf.__traceback__)]
    for code in names:
        if code not in runners and not code.co_filename.startswith(_TRIO):
            return code.co_qualname
    return names[-1].co_qualname if names else "unknown"


def origin(exc: BaseException) -> str:
    """``file:line`` where the first leaf of ``exc`` was raised."""
    frames = list(traceback.walk_tb(first_leaf(exc).__traceback__))
    if not frames:
        return ""
    frame, line = frames[-1]
    return f"{frame.f_code.co_filename}:{line}"


def log_internal_error(log: Any, exc: BaseException, task: str, **fields: Any) -> None:
    """One ``internal_error`` event (level error) with the exception's type, its message (cut
    to :data:`ERROR_TEXT_LIMIT`), the task, where it was raised, and the traceback (code
    lines, never local variables)."""
    leaf = first_leaf(exc)
    text = str(leaf)
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + "..."
    log.error("internal_error", task=task, error_type=type(leaf).__name__, error=text,
              origin=origin(exc), exc_info=leaf, **fields)


class TaskNursery(Protocol):
    """Where tasks are started (a :class:`trio.Nursery` or a :class:`GuardedNursery`)."""

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any,
                   name: object = None) -> None: ...


class GuardedNursery:
    """A nursery for tasks that each serve one peer (its timers, its scripts, its
    authentication): an unexpected exception in one of them is handed to ``on_failure`` with
    the task's function and arguments (to find the peer it served and drop that peer only)
    instead of failing the nursery, which would stop every other peer with it. Cancellation
    passes through untouched."""

    def __init__(self, nursery: trio.Nursery,
                 on_failure: Callable[[Callable[..., Awaitable[object]], tuple[Any, ...],
                                       Exception], None]) -> None:
        self.nursery = nursery
        self.on_failure = on_failure

    @property
    def cancel_scope(self) -> trio.CancelScope:
        return self.nursery.cancel_scope

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any,
                   name: object = None) -> None:
        self.nursery.start_soon(self._guarded, async_fn, args, name=name or async_fn)

    async def _guarded(self, async_fn: Callable[..., Awaitable[object]],
                       args: tuple[Any, ...]) -> None:
        try:
            await async_fn(*args)
        except Exception as exc:
            self.on_failure(async_fn, args, exc)


def task_arguments(async_fn: Callable[..., Awaitable[object]],
                   args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A task's arguments, those bound by :func:`functools.partial` included."""
    if isinstance(async_fn, functools.partial):
        return (*async_fn.args, *args, *async_fn.keywords.values())
    return args
