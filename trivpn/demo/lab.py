"""Two network namespaces joined by a veth pair, and the processes running inside them.

Names start with ``tvpn-demo-<pid>`` (the demo process's PID), so they never collide with the
test harness's ``tvpn-<pid>-`` namespaces or with another demo. Every address is checked to lie
inside 198.18.0.0/15 (RFC 2544 benchmarking space), which never reaches real networks.

Processes are started through ``ip netns exec NAME CMD`` (which execs ``CMD`` in place, so the
PID is the command's) in a session of their own, so a Ctrl-C on the terminal reaches only the
demo, which then stops them itself: SIGTERM by PID, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trivpn.netlab import LAB_SPACE, NETNS_DIR, in_lab_space, pid_alive

PREFIX = "tvpn-demo-"
COMMAND_TIMEOUT = 10.0


class LabError(Exception):
    """A namespace, link or process could not be set up; the message says which command."""


def check_demo_address(cidr: str) -> None:
    """Raise unless ``cidr`` is an IPv4 interface address inside 198.18.0.0/15."""
    if not in_lab_space(cidr):
        raise LabError(f"{cidr} is outside the demo address space {LAB_SPACE}")


def run_command(args: Sequence[str], *, timeout: float = COMMAND_TIMEOUT,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to completion with output captured; :class:`LabError` if it fails and
    ``check`` is set."""
    try:
        done = subprocess.run(list(args), check=False, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"command not found: {args[0]}") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(args)} did not finish within {timeout:g} s") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise LabError(f"{' '.join(args)} failed (exit {done.returncode}): {detail}")
    return done


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def demo_namespaces() -> list[str]:
    """Every ``tvpn-demo-*`` namespace on this host."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def namespace_pids(name: str) -> list[int]:
    """PIDs of the processes inside namespace ``name`` (``ip netns pids``)."""
    done = run_command(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def delete_namespace(name: str) -> None:
    if namespace_exists(name):
        run_command(["ip", "netns", "del", name])


def stop_pids(pids: Sequence[int], grace: float = 3.0) -> None:
    """SIGTERM each PID, wait up to ``grace`` seconds for all to go, SIGKILL the rest.

    Works for processes that are not our children (a ``--keep`` demo's, stopped later)."""
    alive = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        _reap(alive)
        alive = [pid for pid in alive if pid_alive(pid)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    _reap(alive)


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _reap(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


@dataclass
class DemoLab:
    """The demo's namespaces and processes; :meth:`close` removes all of them."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add_namespace(self, label: str) -> str:
        """Create ``<tag>-<label>`` with loopback up; returns its name."""
        name = f"{self.tag}-{label}"
        run_command(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run_command(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def add_veth(self, a: str, a_cidr: str, b: str, b_cidr: str) -> None:
        """Join namespaces ``a`` and ``b`` with a veth pair, addressed and up."""
        check_demo_address(a_cidr)
        check_demo_address(b_cidr)
        run_command(["ip", "-n", a, "link", "add", "veth0", "type", "veth",
                     "peer", "name", "veth0", "netns", b])
        for ns, cidr in ((a, a_cidr), (b, b_cidr)):
            run_command(["ip", "-n", ns, "addr", "add", cidr, "dev", "veth0"])
            run_command(["ip", "-n", ns, "link", "set", "veth0", "up"])

    def spawn(self, namespace: str, args: Sequence[str], *, log: Path) -> int:
        """Start ``args`` inside ``namespace``, stdout and stderr appended to ``log``;
        returns its PID."""
        with log.open("ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", namespace, *args],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc.pid

    def exec_in(self, namespace: str, args: Sequence[str], *, timeout: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside ``namespace`` to completion, output captured."""
        try:
            return subprocess.run(["ip", "netns", "exec", namespace, *args], check=False,
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{' '.join(args)} did not finish within {timeout:g} s") from exc

    def running(self, pid: int) -> bool:
        for proc in self.processes:
            if proc.pid == pid:
                return proc.poll() is None
        return False

    def detach(self) -> None:
        """Forget everything without stopping it (``--keep``)."""
        self.processes.clear()
        self.namespaces.clear()

    def close(self) -> list[str]:
        """Stop every process by PID, then delete every namespace; returns the errors (each
        step is attempted even when an earlier one failed)."""
        errors: list[str] = []
        try:
            stop_pids([p.pid for p in self.processes if p.poll() is None])
            for proc in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
        except OSError as exc:
            errors.append(f"stopping processes: {exc}")
        self.processes.clear()
        for name in reversed(self.namespaces):
            try:
                stop_pids(namespace_pids(name))  # anything else still inside it
                delete_namespace(name)
            except LabError as exc:
                errors.append(str(exc))
        self.namespaces.clear()
        return errors
