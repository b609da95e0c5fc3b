"""Small host-inspection helpers shared by the local checks: run a synchronous lookup inside the
doctor's network namespace (``DoctorContext.netns``; None = the host's), run a read-only tool
(``nft``, ``iptables-save``) there, and read ``/proc`` files as the namespace sees them."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import trio

from trivpn.runtime.netns import enter_netns

T = TypeVar("T")


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` with this thread switched into ``netns`` (synchronous code only)."""
    with enter_netns(netns) if netns is not None else contextlib.nullcontext():
        return fn()


async def in_netns_thread(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread switched into ``netns``; an abandoned call (cancelled by
    the check's timeout) finishes in the background and switches its thread back itself."""
    return await trio.to_thread.run_sync(partial(in_netns, netns, fn), abandon_on_cancel=True)


@dataclass(frozen=True, slots=True)
class CommandOutput:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


async def run_tool(argv: Sequence[str], *, netns: str | None,
                   timeout: float = 5.0) -> CommandOutput | None:
    """Run a read-only tool (in ``netns`` via ``ip netns exec``). None when it is not
    installed or did not finish in time."""
    if shutil.which(argv[0]) is None:
        return None
    full = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
    with trio.move_on_after(timeout):
        done = await trio.run_process(full, capture_stdout=True, capture_stderr=True,
                                      check=False, stdin=subprocess.DEVNULL)
        return CommandOutput(tuple(argv), done.returncode,
                             done.stdout.decode("utf-8", "replace"),
                             done.stderr.decode("utf-8", "replace"))
    return None


def read_proc_net(name: str) -> str:
    """``/proc/thread-self/net/NAME`` (the calling thread's namespace), or "" if absent."""
    try:
        with open(f"/proc/thread-self/net/{name}", encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def read_sysctl(key: str) -> str | None:
    """A sysctl as the calling thread's network namespace sees it (``net.ipv4.ip_forward``)."""
    try:
        with open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None
