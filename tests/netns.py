"""Network-namespace test harness shared by runtime, interop and diagnostics tests.

A :class:`NetnsLab` creates uniquely named namespaces (``tvpn-<pid>-<random>-<label>``, loopback
up), veth links between them with 198.18.0.0/15 addresses, and processes inside them. On exit
it kills every process it spawned (SIGTERM, then SIGKILL, by PID) and deletes every namespace
it created, also when the test failed. Namespaces left behind by a test process that died
(``tvpn-<pid>-`` of a PID that no longer exists) are reaped when a new lab starts.

Fixtures (``netns_lab``, ``netns_pair``) live here. Until ``tests/conftest.py`` registers this
module as a plugin (``pytest_plugins = ["tests.netns"]``), re-export them from the test
directory's ``conftest.py`` (as tests/runtime/conftest.py does)::

    from tests.netns import netns_lab, netns_pair
    __all__ = ["netns_lab", "netns_pair"]

Importing them into a test module works too, but trips ruff's F811 on every test argument.

Every fixture calls :func:`tests.conftest.require_netns` first (skip outside CI, fail in CI).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

from tests.conftest import require_netns
from trivpn.netlab import LAB_SPACE, in_lab_space, reap_stale_namespaces
from trivpn.runtime.netns import enter_netns

PREFIX = "tvpn-"

Cmd = Sequence[str]
FileArg = int | IO[Any] | None


def _check_test_address(cidr: str) -> None:
    """Enforce the network rule: every address a test assigns is inside 198.18.0.0/15."""
    if not in_lab_space(cidr):
        raise ValueError(f"{cidr} is outside the test address space {LAB_SPACE}")


def _capture(args: list[str], timeout: float = 10.0,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout,
                          input=input)


def _ip(*args: str, timeout: float = 10.0) -> None:
    done = _capture(["ip", *args], timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass(eq=False)
class Netns:
    """One namespace of a lab. Commands run through ``ip netns exec``."""

    name: str
    lab: NetnsLab = field(repr=False)
    _ifcount: int = field(default=0, repr=False)

    def run(self, cmd: Cmd, *, check: bool = True, timeout: float = 10.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace to completion; output captured as text."""
        done = _capture(["ip", "netns", "exec", self.name, *cmd], timeout, input)
        if check and done.returncode != 0:
            raise AssertionError(
                f"[{self.name}] {' '.join(cmd)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}")
        return done

    def spawn(self, cmd: Cmd, *, stdout: FileArg = subprocess.DEVNULL,
              stderr: FileArg = subprocess.STDOUT, stdin: FileArg = subprocess.DEVNULL,
              env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in the namespace; the lab kills it at teardown (by PID).

        ``ip netns exec`` execs the command in place, so the Popen's PID is the command's.
        """
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], stdout=stdout,
                                stderr=stderr, stdin=stdin, env=env, cwd=cwd)
        self.lab.processes.append(proc)
        return proc

    def enter(self) -> contextlib.AbstractContextManager[None]:
        """Switch this thread into the namespace (for synchronous socket/TUN creation only)."""
        return enter_netns(self.name)

    def ip(self, *args: str) -> None:
        """``ip -n NAME ARGS...``; raises on failure."""
        _ip("-n", self.name, *args)

    def next_ifname(self, base: str = "veth") -> str:
        name = f"{base}{self._ifcount}"
        self._ifcount += 1
        return name

    def add_address(self, ifname: str, cidr: str) -> None:
        _check_test_address(cidr)
        self.ip("addr", "add", cidr, "dev", ifname)

    def add_route(self, dst: str, via: str | None = None, dev: str | None = None) -> None:
        args = ["route", "add", dst]
        if via is not None:
            args += ["via", via]
        if dev is not None:
            args += ["dev", dev]
        self.ip(*args)

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def enable_forwarding(self) -> None:
        self.sysctl("net.ipv4.ip_forward", "1")

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset (``nft -f -``) inside the namespace."""
        self.run(["nft", "-f", "-"], input=ruleset)


@dataclass(frozen=True)
class Veth:
    """A veth pair: ``a_ifname`` in namespace ``a`` with ``a_addr``, and the same for ``b``."""

    a: Netns
    b: Netns
    a_ifname: str
    b_ifname: str
    a_cidr: str
    b_cidr: str

    @property
    def a_ip(self) -> str:
        return str(ipaddress.ip_interface(self.a_cidr).ip)

    @property
    def b_ip(self) -> str:
        return str(ipaddress.ip_interface(self.b_cidr).ip)


class NetnsLab:
    """Owns namespaces and processes; tears everything down on exit."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.namespaces: list[Netns] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> NetnsLab:
        reap_stale_namespaces(PREFIX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, label: str = "ns") -> Netns:
        """Create a namespace with loopback up."""
        if not re.fullmatch(r"[a-z0-9]{1,16}", label):
            raise ValueError(f"bad namespace label {label!r}")
        name = f"{self.tag}-{label}{len(self.namespaces)}"
        _ip("netns", "add", name)
        ns = Netns(name, self)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, b: Netns, a_cidr: str = "198.18.0.1/24",
             b_cidr: str = "198.18.0.2/24", *, a_ifname: str | None = None,
             b_ifname: str | None = None, mtu: int | None = None) -> Veth:
        """Join ``a`` and ``b`` with a veth pair, address both ends and bring them up.

        Created directly inside the namespaces, so names never clash with the host's.
        """
        _check_test_address(a_cidr)
        _check_test_address(b_cidr)
        a_if = a_ifname or a.next_ifname()
        b_if = b_ifname or b.next_ifname()
        args = ["link", "add", a_if]
        if mtu is not None:
            args += ["mtu", str(mtu)]
        args += ["type", "veth", "peer", "name", b_if, "netns", b.name]
        if mtu is not None:
            args += ["mtu", str(mtu)]
        a.ip(*args)
        a.add_address(a_if, a_cidr)
        b.add_address(b_if, b_cidr)
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")
        return Veth(a, b, a_if, b_if, a_cidr, b_cidr)

    def kill_processes(self, grace: float = 3.0) -> None:
        """SIGTERM every spawned process still running, then SIGKILL the stragglers."""
        alive = [p for p in self.processes if p.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()

    def close(self) -> None:
        """Kill processes, then delete namespaces (all of them, even if one step fails)."""
        errors: list[str] = []
        try:
            self.kill_processes()
        except Exception as exc:  # keep going: the namespaces must still go
            errors.append(f"killing processes: {exc}")
        for ns in reversed(self.namespaces):
            done = _capture(["ip", "netns", "del", ns.name])
            if done.returncode != 0:
                errors.append(f"deleting {ns.name}: {done.stderr.strip()}")
        self.namespaces.clear()
        if errors:
            raise RuntimeError("netns teardown: " + "; ".join(errors))


@dataclass(frozen=True)
class NetnsPair:
    """Two namespaces joined by one veth: ``a`` has 198.18.0.1/24, ``b`` 198.18.0.2/24."""

    lab: NetnsLab
    a: Netns
    b: Netns
    veth: Veth


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    """An empty lab; add namespaces with ``netns_lab.add()``."""
    require_netns()
    with NetnsLab() as lab:
        yield lab


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two namespaces ``a`` (198.18.0.1/24) and ``b`` (198.18.0.2/24) joined by a veth."""
    require_netns()
    with NetnsLab() as lab:
        a = lab.add("a")
        b = lab.add("b")
        yield NetnsPair(lab, a, b, lab.veth(a, b))
