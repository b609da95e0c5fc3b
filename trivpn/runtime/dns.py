"""Applying a client's :class:`~trivpn.protocol.dns.DnsPlan` to the host, and undoing it
(docs/dns.md).

Backends (:class:`DnsBackend`): systemd-resolved over D-Bus (per-link servers, domains,
default route, DNSSEC, DNS over TLS; ``RevertLink`` undoes it), ``resolvconf`` (a resolv.conf
fragment under the record ``<dev>.openvpn``, as Debian's update-resolv-conf writes it;
``resolvconf -d`` undoes it), and :class:`MemoryDnsBackend` for tests. ``--dns-mode auto``
picks resolved when it owns its bus name, else resolvconf when the program exists, else
nothing (``dns_not_applied``): trivpn never writes /etc/resolv.conf itself (OpenVPN does not
either).

:class:`DnsManager` records what it applied in ``<state_dir>/dns-<dev>.json`` (with its PID)
before it returns, so the next start can undo the changes of a client that was killed
(:meth:`DnsManager.recover`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from trivpn.config import Options
from trivpn.protocol.dns import DnsOptions, DnsPlan, plan_dns
from trivpn.protocol.push import PushedOptions
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.files import write_atomically

__all__ = [
    "DNS_MODES", "DEFAULT_STATE_DIR", "DnsBackend", "DnsManager", "DnsMode", "MemoryDnsBackend",
    "ResolvconfBackend", "ResolvedBackend", "choose_backend", "client_dns_options",
    "plan_client_dns",
]

DnsMode = Literal["auto", "resolved", "resolvconf", "off"]
DNS_MODES: tuple[DnsMode, ...] = ("auto", "resolved", "resolvconf", "off")
DEFAULT_STATE_DIR = Path("/run/trivpn")
Record = dict[str, Any]
Log = structlog.stdlib.BoundLogger


def client_dns_options(options: Options, pushed: PushedOptions | None
                       ) -> tuple[DnsOptions, list[tuple[str, str | None]]]:
    """A client's effective ``dns`` options and ``dhcp-option`` lines: its config file's
    overlaid with the push (pushed ``dns`` servers replace config ones of the same priority;
    ``dhcp-option`` lines accumulate, config first). For the plan, and for the scripts'
    environment (:meth:`DnsOptions.script_env`, :func:`foreign_options`)."""
    dns = options.dns
    dhcp = [(a[0], a[1] if len(a) > 1 else None) for a in options.dhcp_options]
    if pushed is not None:
        dns = dns.merged_with_pulled(pushed.dns)
        dhcp += [(o.kind, o.value) for o in pushed.dhcp_options]
    return dns, dhcp


def plan_client_dns(options: Options, pushed: PushedOptions | None) -> DnsPlan:
    """The client's plan (:func:`client_dns_options`) under the effective
    ``redirect-gateway``."""
    dns, dhcp = client_dns_options(options, pushed)
    redirect = options.redirect_gateway
    if pushed is not None and pushed.redirect_gateway is not None:
        redirect = pushed.redirect_gateway
    return plan_dns(dns, dhcp, redirect)


class DnsBackend(Protocol):
    """One way to apply a plan: ``apply`` returns what ``revert`` needs (JSON-able)."""

    name: str

    def apply(self, device: str, ifindex: int, plan: DnsPlan) -> Record: ...

    def revert(self, record: Mapping[str, Any]) -> None: ...


# --- systemd-resolved over D-Bus --------------------------------------------------------------

_RESOLVED = "org.freedesktop.resolve1"
_BUS_DAEMON = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                          interface="org.freedesktop.DBus")
_AF_INET, _AF_INET6 = 2, 10
_DNSSEC = {"yes": "yes", "optional": "allow-downgrade", "no": "no"}
_DOT = {"DoT": "yes", "plain": "no"}


class ResolvedBackend:
    """systemd-resolved's per-link settings through org.freedesktop.resolve1.Manager on the
    system bus (or ``bus``: a D-Bus address, for tests)."""

    name = "resolved"

    def __init__(self, bus: str = "SYSTEM", timeout: float = 5.0) -> None:
        self.bus = bus
        self.timeout = timeout

    def _calls(self, calls: list[tuple[str, str, tuple[Any, ...]]]) -> None:

        manager = DBusAddress("/org/freedesktop/resolve1", bus_name=_RESOLVED,
                              interface=f"{_RESOLVED}.Manager")
        try:
            with open_dbus_connection(bus=self.bus) as conn:
                self._same_netns(conn)
                for method, signature, args in calls:
                    try:
                        unwrap_msg(conn.send_and_get_reply(
                            new_method_call(manager, method, signature, args),
                            timeout=self.timeout))
                    except DBusErrorResponse as exc:
                        raise RuntimeSetupError(f"systemd-resolved refused {method}",
                                                f"{exc.name}: {' '.join(map(str, exc.data))}"
                                                ) from None
        except (OSError, TimeoutError, KeyError) as exc:
            raise RuntimeSetupError("cannot reach systemd-resolved over D-Bus",
                                    str(exc) or type(exc).__name__) from None

    def _same_netns(self, conn: Any) -> None:
        """Refuse when resolved runs in another network namespace: its link indexes are not
        ours (``ip netns exec``), so SetLink* would configure some other link."""
        bus = _BUS_DAEMON
        try:
            pid = conn.send_and_get_reply(new_method_call(
                bus, "GetConnectionUnixProcessID", "s", (_RESOLVED,)),
                timeout=self.timeout).body[0]
            theirs = os.stat(f"/proc/{int(pid)}/ns/net").st_ino
            ours = os.stat("/proc/self/ns/net").st_ino
        except (OSError, IndexError, ValueError, TypeError):
            return  # cannot tell (no /proc, another PID namespace): trust the index
        if theirs != ours:
            raise RuntimeSetupError("systemd-resolved runs in another network namespace than "
                                    "trivpn; its links are not trivpn's", f"pid {pid}")

    def available(self) -> bool:
        """Whether resolved owns its bus name (or the bus can start it)."""
        bus = _BUS_DAEMON
        try:
            with open_dbus_connection(bus=self.bus) as conn:
                owned = conn.send_and_get_reply(
                    new_method_call(bus, "NameHasOwner", "s", (_RESOLVED,)),
                    timeout=self.timeout).body[0]
                if owned:
                    return True
                names = conn.send_and_get_reply(
                    new_method_call(bus, "ListActivatableNames"), timeout=self.timeout).body[0]
                return _RESOLVED in names
        except (OSError, TimeoutError, KeyError, IndexError):
            return False

    def apply(self, device: str, ifindex: int, plan: DnsPlan) -> Record:
        calls: list[tuple[str, str, tuple[Any, ...]]] = []
        if any(a.port is not None for a in plan.servers) or plan.sni:
            calls.append(("SetLinkDNSEx", "ia(iayqs)", (ifindex, [
                (_AF_INET if a.ip.version == 4 else _AF_INET6, a.ip.packed, a.port or 0,
                 plan.sni or "") for a in plan.servers])))
        else:
            calls.append(("SetLinkDNS", "ia(iay)", (ifindex, [
                (_AF_INET if a.ip.version == 4 else _AF_INET6, a.ip.packed)
                for a in plan.servers])))
        domains = [(d, False) for d in plan.search_domains]
        domains += [(d, True) for d in plan.routing_domains if d not in plan.search_domains]
        calls.append(("SetLinkDomains", "ia(sb)", (ifindex, domains)))
        calls.append(("SetLinkDefaultRoute", "ib", (ifindex, plan.default_route)))
        if plan.dnssec is not None:
            calls.append(("SetLinkDNSSEC", "is", (ifindex, _DNSSEC[plan.dnssec])))
        if plan.transport in _DOT:
            calls.append(("SetLinkDNSOverTLS", "is", (ifindex, _DOT[plan.transport])))
        try:
            self._calls(calls)
        except RuntimeSetupError:
            with contextlib.suppress(RuntimeSetupError):
                self._calls([("RevertLink", "i", (ifindex,))])
            raise
        return {"ifindex": ifindex, "device": device}

    def revert(self, record: Mapping[str, Any]) -> None:
        ifindex, device = int(record["ifindex"]), str(record["device"])
        try:
            if socket.if_indextoname(ifindex) != device:
                return  # the link is gone (resolved forgot it with it); the index was reused
        except OSError:
            return
        self._calls([("RevertLink", "i", (ifindex,))])


# --- resolvconf -----------------------------------------------------------------------------

class ResolvconfBackend:
    """``resolvconf -a <dev>.openvpn`` with a resolv.conf fragment on stdin, ``-d`` to undo
    (Debian's resolvconf and openresolv both take this)."""

    name = "resolvconf"

    def __init__(self, program: str = "resolvconf", timeout: float = 10.0) -> None:
        self.program = program
        self.timeout = timeout

    def available(self) -> bool:
        return shutil.which(self.program) is not None

    def _run(self, args: list[str], data: str) -> None:
        try:
            done = subprocess.run([self.program, *args], input=data.encode(), capture_output=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeSetupError(f"cannot run {self.program}", str(exc)) from None
        if done.returncode != 0:
            raise RuntimeSetupError(
                f"{self.program} {' '.join(args)} failed (exit {done.returncode})",
                done.stderr.decode(errors="replace").strip()[:200])

    def apply(self, device: str, ifindex: int, plan: DnsPlan) -> Record:
        record = f"{device}.openvpn"
        self._run(["-a", record], plan.resolv_conf())
        return {"record": record}

    def revert(self, record: Mapping[str, Any]) -> None:
        self._run(["-d", str(record["record"])], "")


# --- in memory (tests) ----------------------------------------------------------------------

@dataclass
class MemoryDnsBackend:
    """Keeps the applied plans per device: :attr:`applied` now, :attr:`history` of calls."""

    name: str = "memory"
    applied: dict[str, DnsPlan] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)
    fail: str | None = None

    def apply(self, device: str, ifindex: int, plan: DnsPlan) -> Record:
        if self.fail is not None:
            raise RuntimeSetupError(self.fail, device)
        self.applied[device] = plan
        self.history.append(("apply", device))
        return {"device": device}

    def revert(self, record: Mapping[str, Any]) -> None:
        device = str(record["device"])
        self.applied.pop(device, None)
        self.history.append(("revert", device))


# --- the manager ----------------------------------------------------------------------------

def choose_backend(mode: DnsMode) -> tuple[DnsBackend | None, str]:
    """The backend ``--dns-mode`` asks for (``auto``: resolved when it runs, else resolvconf),
    or None and why not."""
    if mode == "off":
        return None, "--dns-mode off"
    resolved, resolvconf = ResolvedBackend(), ResolvconfBackend()
    if mode == "resolved":
        return resolved, ""
    if mode == "resolvconf":
        return resolvconf, ""
    if resolved.available():
        return resolved, ""
    if resolvconf.available():
        return resolvconf, ""
    return None, ("neither systemd-resolved (on the system D-Bus) nor a resolvconf program "
                  "was found; trivpn does not write /etc/resolv.conf itself")


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22) and None
    when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _alive(pid: int, started: str | None) -> bool:
    """Whether the process that wrote a record still runs (the same PID and start time)."""
    if pid == os.getpid():
        return False  # a record of ours from before this start: an earlier process's
    now = _process_start(pid)
    if now is None:
        return False
    return started is None or now == started


@dataclass
class _Applied:
    device: str
    ifindex: int
    plan: DnsPlan
    backend: DnsBackend
    record: Record
    state: Path | None


class DnsManager:
    """Applies plans through ``backend`` (None: DNS is left alone, with ``why``), records them
    in ``state_dir``, and reverts them at teardown or, after a crash, at the next start."""

    def __init__(self, backend: DnsBackend | None, log: Log, *,
                 state_dir: Path = DEFAULT_STATE_DIR, why: str = "",
                 revert_backends: Mapping[str, DnsBackend] | None = None) -> None:
        self.backend = backend
        self.log = log
        self.state_dir = state_dir
        self.why = why
        self._revert_backends = dict(revert_backends or {})
        if backend is not None:
            self._revert_backends.setdefault(backend.name, backend)
        self.current: _Applied | None = None

    @classmethod
    def for_mode(cls, mode: DnsMode, log: Log, *,
                 state_dir: Path = DEFAULT_STATE_DIR) -> DnsManager:
        """The manager ``--dns-mode`` asks for (:func:`choose_backend`)."""
        backend, why = choose_backend(mode)
        undo: dict[str, DnsBackend] = {"resolved": ResolvedBackend(),
                                       "resolvconf": ResolvconfBackend()}
        return cls(backend, log, state_dir=state_dir, why=why, revert_backends=undo)

    # -- crash recovery ------------------------------------------------------------------------

    def recover(self) -> None:
        """Undo what a dead trivpn process recorded in the state directory."""
        try:
            paths = sorted(self.state_dir.glob("dns-*.json"))
        except OSError:
            return
        for path in paths:
            try:
                state = json.loads(path.read_text())
                pid, name = int(state["pid"]), str(state["backend"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.log.warning("dns_state_unreadable", path=str(path), detail=str(exc))
                continue
            if _alive(pid, state.get("started")):
                continue
            backend = self._revert_backends.get(name)
            if backend is None:
                self.log.warning("dns_revert_failed", device=state.get("device"), backend=name,
                                 detail=f"no {name} backend here", path=str(path))
                continue
            try:
                backend.revert(state["record"])
            except (RuntimeSetupError, KeyError, TypeError, ValueError) as exc:
                self.log.warning("dns_revert_failed", device=state.get("device"), backend=name,
                                 detail=str(exc), path=str(path))
                continue
            with contextlib.suppress(OSError):
                path.unlink()
            self.log.info("dns_stale_reverted", device=state.get("device"), backend=name, pid=pid)

    # -- apply and revert ----------------------------------------------------------------------

    def apply(self, device: str, ifindex: int, plan: DnsPlan) -> None:
        """Apply ``plan`` to the device (again only when it or the device changed)."""
        for note in plan.notes:
            self.log.info("dns_option_ignored", detail=note)
        now = self.current
        if now is not None and (now.device, now.ifindex, now.plan) == (device, ifindex, plan):
            return
        if now is not None:
            self.revert()
        if plan.empty:
            return
        if self.backend is None:
            log: Callable[..., None] = (self.log.info if self.why == "--dns-mode off"
                                        else self.log.warning)
            log("dns_not_applied", device=device, reason=self.why, **plan.summary())
            return
        try:
            record = self.backend.apply(device, ifindex, plan)
        except RuntimeSetupError as exc:
            self.log.warning("dns_not_applied", device=device, backend=self.backend.name,
                             reason=str(exc), **plan.summary())
            return
        state = self._record(device, record)
        self.current = _Applied(device, ifindex, plan, self.backend, record, state)
        self.log.info("dns_applied", device=device, backend=self.backend.name,
                      **plan.summary())

    def _record(self, device: str, record: Record) -> Path | None:
        assert self.backend is not None
        path = self.state_dir / f"dns-{device}.json"
        data = {"pid": os.getpid(), "started": _process_start(os.getpid()),
                "backend": self.backend.name, "device": device, "record": record}
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(path, json.dumps(data).encode() + b"\n")
        except OSError as exc:
            self.log.warning("dns_state_unwritable", path=str(path), detail=str(exc))
            return None
        return path

    def revert(self) -> None:
        """Undo the applied plan, if any; on failure the state file stays for the next
        start."""
        now, self.current = self.current, None
        if now is None:
            return
        try:
            now.backend.revert(now.record)
        except RuntimeSetupError as exc:
            self.log.warning("dns_revert_failed", device=now.device, backend=now.backend.name,
                             detail=str(exc), path=str(now.state))
            return
        if now.state is not None:
            with contextlib.suppress(OSError):
                now.state.unlink()
        self.log.info("dns_reverted", device=now.device, backend=now.backend.name)
