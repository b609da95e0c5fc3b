"""Namespaces, a veth and processes for one benchmark run; everything torn down by PID/name.

Namespaces are named ``tvbench-<pid>-<hex>-<label>``; ones left by a bench process that died
(its PID no longer exists) are deleted when a new lab starts. Every address assigned here must be
inside 198.18.0.0/15. Processes start in their own session (a terminal's Ctrl-C reaches only the
bench, which then stops them itself: SIGTERM, then SIGKILL, by PID).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any

from trivpn.netlab import LAB_SPACE, in_lab_space, reap_stale_namespaces

PREFIX = "tvbench-"

FileArg = int | IO[Any] | None


class LabError(Exception):
    """A namespace or process of the benchmark could not be set up."""


def check_address(cidr: str) -> None:
    if not in_lab_space(cidr):
        raise LabError(f"{cidr} is outside the benchmark address space {LAB_SPACE}")


def _run(args: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=False, capture_output=True, text=True,
                          timeout=timeout)


class Lab:
    """Owns the namespaces and processes of one run. Use as a context manager."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Lab:
        reap_stale_namespaces(PREFIX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ip(self, *args: str) -> None:
        done = _run(["ip", *args])
        if done.returncode != 0:
            raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def add(self, label: str) -> str:
        name = f"{self.tag}-{label}"
        self.ip("netns", "add", name)
        self.namespaces.append(name)
        self.ip("-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, a: str, b: str, a_cidr: str, b_cidr: str, ifname: str = "bench0") -> None:
        """One veth pair named ``ifname`` on both sides, addressed and up."""
        check_address(a_cidr)
        check_address(b_cidr)
        self.ip("-n", a, "link", "add", ifname, "type", "veth", "peer", "name", ifname,
                "netns", b)
        for ns, cidr in ((a, a_cidr), (b, b_cidr)):
            self.ip("-n", ns, "addr", "add", cidr, "dev", ifname)
            self.ip("-n", ns, "link", "set", ifname, "up")

    def run(self, ns: str, cmd: Sequence[str], *,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in ``ns`` to completion (bounded by ``timeout``), output captured."""
        return _run(["ip", "netns", "exec", ns, *cmd], timeout)

    def spawn(self, ns: str, cmd: Sequence[str], *, stdout: FileArg = subprocess.DEVNULL,
              stderr: FileArg = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in ``ns`` (``ip netns exec`` execs in place: the PID is the
        command's); stopped by :meth:`stop` or at :meth:`close`."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM ``proc`` by PID, SIGKILL after ``grace`` seconds; wait for it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        with contextlib.suppress(ValueError):
            self.processes.remove(proc)

    def close(self) -> None:
        """Stop every process still running, then delete every namespace (each step tried
        even if an earlier one failed)."""
        errors: list[str] = []
        deadline = time.monotonic() + 5.0
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in list(self.processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    errors.append(f"process {proc.pid} did not exit")
        self.processes.clear()
        for ns in reversed(self.namespaces):
            done = _run(["ip", "netns", "del", ns])
            if done.returncode != 0:
                errors.append(f"netns {ns}: {done.stderr.strip()}")
        self.namespaces.clear()
        if errors:
            raise LabError("cleanup: " + "; ".join(errors))
