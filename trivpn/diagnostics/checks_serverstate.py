"""Server-state checks, for ``trivpn doctor server.conf`` on the server host while the server
runs:

- ``server.sockets``: the configured proto/port/``local`` is actually bound by an openvpn or
  trivpn process (``/proc/net/{udp,tcp}[6]`` in the doctor's namespace, socket inodes mapped
  to processes), and no other process shares the port;
- ``server.crl``: the ``crl-verify`` file parses, its nextUpdate has not passed (OpenVPN 2.6
  then refuses every client) nor comes within 30 days, and the user and group the server
  drops to (``user``/``group``) can read it again when it changes;
- ``server.pool``: the address pool against the clients connected (``status`` file, versions
  1 to 3), the fixed ``ifconfig-pool-persist`` entries and the log's "no ... address is
  available" lines;
- ``server.churn``: duplicate common names and clients that reconnect over and over, from the
  server's ``log``/``log-append`` file.

Everything is read; nothing is changed or sent.
"""

from __future__ import annotations

import grp
import ipaddress
import itertools
import os
import pwd
import stat
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from trivpn.config import Options
from trivpn.config.derive import address_pool
from trivpn.diagnostics.checks_server import _bind_address, _is_vpn_daemon, _proto, _where
from trivpn.diagnostics.hostinfo import in_netns_thread, read_proc_net, run_tool
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.serverlog import (
    LogEvent,
    ServerStatus,
    StatusFormatError,
    log_events,
    parse_status,
)
from trivpn.runtime.pool import read_persist_file

MAX_READ = 4 * 1024 * 1024  # bytes read from the end of a log or status file
CRL_WARN_DAYS = 30
CRL_URGENT_DAYS = 7
POOL_WARN_FRACTION = 0.9
CHURN_WINDOW = timedelta(hours=1)
CHURN_MIN_CONNECTS = 5
CHURN_MAX_INTERVAL_S = 600.0


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - MAX_READ))
        data = fh.read()
    text = data.decode("utf-8", "replace")
    return text if size <= MAX_READ else text.split("\n", 1)[-1]


# --- server.sockets ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BoundSocket:
    proto: str  # udp, tcp
    address: str
    port: int
    inode: int


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def bound_sockets(proc_net: Mapping[str, str], proto: str) -> list[BoundSocket]:
    """UDP sockets, or listening TCP sockets, in ``/proc/net/{proto}[6]`` texts (keyed by
    file name)."""
    found: list[BoundSocket] = []
    for name, text in proc_net.items():
        if name.rstrip("6") != proto:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or ":" not in fields[1]:
                continue
            if proto == "tcp" and fields[3] != "0A":
                continue
            addr_hex, port_hex = fields[1].rsplit(":", 1)
            try:
                address = _hex_address(addr_hex)
            except ValueError:
                continue
            inode = int(fields[9])
            if inode:
                found.append(BoundSocket(proto, address, int(port_hex, 16), inode))
    return found


def socket_owners(inodes: set[int], proc: str = "/proc") -> dict[int, list[dict[str, Any]]]:
    """inode → the processes (pid, command) holding it, from ``/proc/PID/fd``."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    owners: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        seen: set[int] = set()
        for fd in fds:
            try:
                target = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in seen:
                seen.add(inode)
                owners[inode].append({"pid": int(pid), "command": _cmdline(proc, pid)})
    return dict(owners)


def _cmdline(proc: str, pid: str) -> str:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return "?"
    return " ".join(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p) or "?"


def _read_sockets(proto: str) -> list[BoundSocket]:
    return bound_sockets({n: read_proc_net(n) for n in (proto, proto + "6")}, proto)


def _covers(bound: str, wanted: str) -> bool:
    """A socket bound to ``bound`` receives what is sent to ``wanted``."""
    if bound in (wanted, "::"):
        return True
    return bound == "0.0.0.0" and ":" not in wanted


async def check_sockets(ctx: DoctorContext) -> CheckResult:
    cid = "server.sockets"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    proto = _proto(o)
    port = o.lport
    address = _bind_address(o)
    place = _where(o, "local", "port", "lport", "proto")
    sockets = await in_netns_thread(ctx.netns, lambda: _read_sockets(proto))
    owners = await in_netns_thread(None, lambda: socket_owners({s.inode for s in sockets}))

    def describe(s: BoundSocket) -> dict[str, Any]:
        return {"proto": s.proto, "address": s.address, "port": s.port,
                "processes": owners.get(s.inode, [])}

    def holders(held: list[BoundSocket]) -> str:
        return ", ".join(f"pid {w['pid']} ({w['command']})"
                         for s in held for w in owners.get(s.inode, [])) or "another process"

    on_port = [s for s in sockets if s.port == port]
    vpn = [s for s in on_port if any(_is_vpn_daemon(w) for w in owners.get(s.inode, []))]
    others = [s for s in on_port if s not in vpn]
    evidence: dict[str, Any] = {"proto": proto, "port": port, "local": address,
                                "on_port": [describe(s) for s in on_port]}
    # Another socket on the port takes packets the server should get when it is bound to the
    # same address, or to one the server's wildcard covers (the more specific socket wins);
    # on another address it is only a neighbour.
    clash = [s for s in others if any(_covers(v.address, s.address) for v in vpn)]
    if clash:
        who = holders(clash)
        evidence["state"] = "conflict"
        return problem(
            cid, "fail", f"{proto} port {port} is shared by the VPN server and {who}",
            explanation=("Two programs hold the server port on overlapping addresses "
                         "(SO_REUSEPORT, or a wildcard and a specific address with "
                         "SO_REUSEADDR): the kernel hands some client packets to the other "
                         "program, so those clients time out while others connect."),
            fix=(f"Stop the other program (see 'ss -{proto[0]}anp sport = :{port}') or move "
                 f"the server to another 'port' at {place}."), **evidence)
    if vpn:
        if address is None or any(_covers(s.address, address) for s in vpn):
            pids = sorted({w["pid"] for s in vpn for w in owners.get(s.inode, [])})
            evidence["state"] = "listening"
            evidence["pids"] = pids
            return ok(cid, f"{proto} {address}:{port} is bound by the VPN server (pid "
                           f"{', '.join(map(str, pids))})", **evidence)
        evidence["state"] = "other_address"
        bound = ", ".join(f"{s.address}:{s.port}" for s in vpn)
        return problem(
            cid, "warn", f"the running server listens on {bound}, not on {address}:{port}",
            explanation=("The process holding the port was started with another 'local' "
                         "than this config says (an older config, or another instance): "
                         "clients sent to the configured address get no answer."),
            fix=(f"Restart the server so it reads this config, or correct 'local' at "
                 f"{place}."), **evidence)
    vpn_elsewhere = [s for s in sockets
                     if any(_is_vpn_daemon(w) for w in owners.get(s.inode, []))]
    if others:
        who = holders(others)
        evidence["state"] = "held_by_other"
        return problem(
            cid, "fail", f"{proto} port {port} is bound by {who}, not by the VPN server",
            explanation=("Client packets to the server port reach that program instead of "
                         "OpenVPN; a server started now fails with 'Address already in use'."),
            fix=(f"Stop that program (see 'ss -{proto[0]}anp sport = :{port}') or choose "
                 f"another 'port' at {place} and update the clients' 'remote' lines."),
            **evidence)
    evidence["vpn_sockets_elsewhere"] = [describe(s) for s in vpn_elsewhere]
    evidence["state"] = "not_running"
    if vpn_elsewhere:
        bound = ", ".join(f"{s.proto} {s.address}:{s.port}" for s in vpn_elsewhere)
        return problem(
            cid, "warn", f"no VPN server listens on {proto} port {port}; one listens on "
                         f"{bound}",
            explanation=("A running openvpn/trivpn holds another port or protocol than this "
                         "config: it was started with another config, or this one changed "
                         "since. Clients using this config's port get no answer."),
            fix=(f"Restart the server with this config, or make 'proto'/'port' at {place} "
                 "match what the clients use."), **evidence)
    return problem(
        cid, "warn", f"no openvpn or trivpn process listens on {proto} port {port}",
        explanation="The server is not running (or runs in another network namespace): "
                    "clients get no answer.",
        fix=("Start it (e.g. 'systemctl start openvpn-server@NAME' or 'trivpn run "
             f"{o.config_path}') and read its log if it exits."), **evidence)


# --- server.crl -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Identity:
    """Who the server is after its privilege drop (OpenVPN platform.c: ``user`` only calls
    setuid(); ``group`` calls setgid() and setgroups() with that one group)."""

    user: str
    uid: int
    gid: int
    groups: frozenset[int]


def dropped_identity(o: Options) -> Identity | None:
    """None when the server keeps running as root (no ``user``/``group``)."""
    if o.user is None and o.group is None:
        return None
    uid = pwd.getpwnam(o.user).pw_uid if o.user is not None else os.geteuid()
    if o.group is not None:
        gid = grp.getgrnam(o.group).gr_gid
        return Identity(o.user or "root", uid, gid, frozenset({gid}))
    gid = os.getegid()
    return Identity(o.user or "root", uid, gid, frozenset({gid, *os.getgroups()}))


def can_read(path: Path, who: Identity) -> str | None:
    """None if ``who`` can read ``path`` (search permission on every directory above it, read
    permission on the file), else the first path that stops it."""
    if who.uid == 0:
        return None

    def allowed(st: os.stat_result, bit_user: int, bit_group: int, bit_other: int) -> bool:
        if st.st_uid == who.uid:
            return bool(st.st_mode & bit_user)
        if st.st_gid in who.groups:
            return bool(st.st_mode & bit_group)
        return bool(st.st_mode & bit_other)

    resolved = path.resolve()
    for parent in reversed(resolved.parents):
        if not allowed(parent.stat(), stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return str(parent)
    if not allowed(resolved.stat(), stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH):
        return str(resolved)
    return None


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    if b"-----BEGIN X509 CRL-----" not in data:
        return [x509.load_der_x509_crl(data)]
    crls = []
    for block in data.split(b"-----END X509 CRL-----")[:-1]:
        start = block.find(b"-----BEGIN X509 CRL-----")
        crls.append(x509.load_pem_x509_crl(block[start:] + b"-----END X509 CRL-----\n"))
    return crls


_REGEN = ("'easyrsa gen-crl' (easy-rsa), 'openssl ca -gencrl -out crl.pem' (OpenSSL CA) or "
          "'trivpn pki crl' (trivpn's CA)")


async def check_crl(ctx: DoctorContext, now: datetime | None = None) -> CheckResult:
    cid = "server.crl"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    if o.crl_verify_dir is not None:
        return skip(cid, "crl-verify DIR dir: one file per revoked serial, nothing expires")
    src = o.crl_verify
    if src is None:
        return skip(cid, "no crl-verify")
    where = _where(o, "crl-verify")
    now = now or datetime.now(UTC)
    evidence: dict[str, Any] = {"crl": src.describe()}
    try:
        data = (src.inline.encode() if src.inline is not None
                else src.path.read_bytes() if src.path is not None else b"")
        crls = load_crls(data)
    except OSError as exc:
        evidence["state"] = "unreadable"
        return problem(cid, "fail", f"cannot read the CRL {src.describe()}: {exc.strerror}",
                       explanation=("OpenVPN refuses to start without its crl-verify file "
                                    "('Options error: --crl-verify fails with ...')."),
                       fix=f"Create the CRL with {_REGEN}, or correct 'crl-verify' at {where}.",
                       **evidence)
    except ValueError as exc:
        evidence["state"] = "unparsable"
        evidence["error"] = str(exc)
        return problem(cid, "fail", f"{src.describe()} is not a CRL",
                       explanation=("OpenVPN starts ('CRL: cannot read CRL from file', "
                                    "'CRL: loaded 0 CRLs'), then refuses every client: "
                                    "'VERIFY ERROR: CRL not loaded'."),
                       fix=f"Generate it again with {_REGEN}.", **evidence)
    updates = [c.next_update_utc for c in crls if c.next_update_utc is not None]
    evidence["crls"] = len(crls)
    evidence["revoked"] = sum(len(list(c)) for c in crls)
    if updates:
        nxt = min(updates)
        evidence["next_update"] = nxt.isoformat()
        days = (nxt - now).total_seconds() / 86400
        evidence["days_left"] = round(days, 1)
        if days <= 0:
            evidence["state"] = "expired"
            return problem(
                cid, "fail", f"the CRL expired on {nxt:%Y-%m-%d %H:%M} UTC (nextUpdate)",
                explanation=("OpenVPN 2.6 verifies client certificates against the CRL, and "
                             "an expired CRL fails that verification ('VERIFY ERROR: depth=0, "
                             "error=CRL has expired'): every client is refused, revoked or "
                             "not."),
                fix=(f"Issue a fresh CRL with {_REGEN}, copy it to {src.describe()} "
                     "(readable by the server's user); the server reloads it at the next "
                     "client connect. Renew it before nextUpdate from then on (cron)."),
                **evidence)
        if days <= CRL_WARN_DAYS:
            urgent = days <= CRL_URGENT_DAYS
            evidence["state"] = "expires_soon"
            return problem(
                cid, "warn", f"the CRL expires in {days:.0f} day(s), on {nxt:%Y-%m-%d} "
                             + ("— soon" if urgent else ""),
                explanation=("When the CRL's nextUpdate passes, OpenVPN refuses every "
                             "client until a fresh CRL is in place."),
                fix=f"Issue a fresh CRL now with {_REGEN} and schedule its renewal.",
                **evidence)
    try:
        who = dropped_identity(o) if src.path is not None else None
    except KeyError:  # an unknown user or group: the permission test cannot be made
        who = None
        evidence["runs_as"] = {"user": o.user, "group": o.group, "known": False}
    if who is not None and src.path is not None:
        blocked = can_read(src.path, who)
        evidence["runs_as"] = {"user": who.user, "uid": who.uid, "gid": who.gid}
        if blocked is not None:
            st = Path(blocked).stat()
            evidence["state"] = "unreadable_after_drop"
            evidence["blocked_at"] = blocked
            evidence["mode"] = oct(stat.S_IMODE(st.st_mode))
            evidence["owner"] = {"uid": st.st_uid, "gid": st.st_gid}
            grp_name = o.group or "its group"
            return problem(
                cid, "fail",
                f"the server, once running as '{who.user}', cannot read {blocked}",
                explanation=("OpenVPN reads the CRL as root at start, then re-reads it after "
                             "dropping privileges ('user'/'group') whenever the file changes. "
                             "After the next CRL update it logs 'CRL: cannot read' and keeps "
                             "no CRL at all: every client fails verification ('VERIFY ERROR: "
                             "CRL not loaded')."),
                fix=(f"Make it readable: 'chmod 644 {src.path}' (or 'chgrp {grp_name} "
                     f"{src.path}' with mode 640), and 'chmod o+x' on every directory "
                     "above it; easy-rsa writes crl.pem as 0600, so copy it after each "
                     "'easyrsa gen-crl'."), **evidence)
    evidence["state"] = "fresh"
    if not updates:
        return ok(cid, "CRL read (no nextUpdate: it never expires)", **evidence)
    return ok(cid, f"CRL valid until {min(updates):%Y-%m-%d}", **evidence)


async def _check_crl(ctx: DoctorContext) -> CheckResult:
    return await check_crl(ctx)


# --- server.pool ------------------------------------------------------------------------------

def _read_status(o: Options) -> tuple[ServerStatus | None, str | None]:
    if o.status is None:
        return None, None
    try:
        return parse_status(_tail(o.status.path) if o.status.path.stat().st_size > MAX_READ
                            else o.status.path.read_text(errors="replace")), None
    except OSError as exc:
        return None, f"cannot read {o.status.path}: {exc.strerror}"
    except StatusFormatError as exc:
        return None, f"{o.status.path}: {exc}"


def _read_log(o: Options) -> tuple[list[LogEvent], str | None]:
    if o.log is None:
        return [], None
    try:
        text = _tail(o.log)
    except OSError as exc:
        return [], f"cannot read {o.log}: {exc.strerror}"
    return log_events(text.splitlines(), year=datetime.now().year), None


def _recent(events: Sequence[LogEvent], window: timedelta) -> list[LogEvent]:
    """Events in ``window`` before the last timestamped one (all when none has a time)."""
    times = [e.time for e in events if e.time is not None]
    if not times:
        return list(events)
    end = max(times)
    return [e for e in events if e.time is None or e.time >= end - window]


async def check_pool(ctx: DoctorContext) -> CheckResult:
    cid = "server.pool"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    pool = address_pool(o)
    if pool is None:
        return skip(cid, "no IPv4 address pool (no 'server', 'server-bridge' or "
                         "'ifconfig-pool')")
    where = _where(o, "ifconfig-pool", "server", "server-bridge")
    status, status_error = await in_netns_thread(None, lambda: _read_status(o))
    events, log_error = await in_netns_thread(None, lambda: _read_log(o))
    evidence: dict[str, Any] = {"pool": f"{pool.start}-{pool.end}", "size": pool.size,
                                "status_file": str(o.status.path) if o.status else None}
    for err in (status_error, log_error):
        if err is not None:
            evidence.setdefault("unreadable", []).append(err)
    fixed = 0
    if o.ifconfig_pool_persist is not None and o.ifconfig_pool_persist.seconds == 0:
        try:
            entries = read_persist_file(o.ifconfig_pool_persist.path)
        except OSError:
            entries = []
        fixed = len({cn for cn, address in entries if pool.index_of(address) is not None})
        evidence["fixed_persist_entries"] = fixed
    connected = len(status.clients) if status is not None else None
    if status is not None and o.status is not None:
        evidence["status_version"] = status.version
        written = status.updated_unix()
        age = None if written is None else time.time() - written
        if age is not None and age > 10 * max(o.status.seconds, 1) + 60:
            evidence["status_stale_s"] = round(age)
            connected = None  # an old snapshot: the server is not writing it any more
    evidence["connected"] = connected
    refused = [e for e in _recent(events, timedelta(days=1)) if e.kind == "pool_exhausted"]
    if refused:
        evidence["refused_in_log"] = [{"line": e.line, "client": e.common_name,
                                       "time": e.time.isoformat() if e.time else None}
                                      for e in refused[-5:]]
    in_use = (connected or 0) + fixed
    grow = (f"Make the pool larger: a wider 'server' network at {where} (e.g. a /24 gives "
            "253 addresses with topology subnet), or a wider 'ifconfig-pool' range; with "
            "'topology net30' every client takes 4 addresses, 'topology subnet' only one.")
    if in_use >= pool.size or refused:
        evidence["state"] = "exhausted"
        cause = (f"{connected} client(s) connected" if connected is not None else "")
        if fixed:
            cause += f"{' and ' if cause else ''}{fixed} address(es) fixed by ifconfig-pool-persist"
        summary = (f"the address pool is full: {cause} for {pool.size} address(es)" if cause
                   else f"the log shows {len(refused)} client(s) refused for lack of an "
                        "address")
        return problem(
            cid, "fail", summary,
            explanation=("A client that connects while every pool address is taken is "
                         "refused: OpenVPN logs 'MULTI: no dynamic or static remote "
                         "--ifconfig address is available for CN/ADDR' and the client "
                         "retries forever."),
            fix=grow + (f" With 'ifconfig-pool-persist FILE 0' every name in the file "
                        "keeps its address forever: remove names that no longer connect "
                        f"from {o.ifconfig_pool_persist.path}, or give a period instead of 0."
                        if fixed and o.ifconfig_pool_persist is not None else "")
            + (" With 'duplicate-cn' every connection of a shared certificate takes an "
               "address." if o.duplicate_cn else ""),
            **evidence)
    if in_use >= POOL_WARN_FRACTION * pool.size and pool.size >= 10:
        evidence["state"] = "nearly_full"
        return problem(cid, "warn", f"{in_use} of {pool.size} pool addresses are taken",
                       explanation="A few more clients and new connections are refused.",
                       fix=grow, **evidence)
    evidence["state"] = "ok"
    if connected is None:
        why = ("the status file was last written "
               f"{evidence['status_stale_s']} s ago (is the server running?)"
               if "status_stale_s" in evidence else "no status file to count clients "
               "(set 'status FILE')")
        return ok(cid, f"pool of {pool.size} address(es); {why}", **evidence)
    return ok(cid, f"{in_use} of {pool.size} pool address(es) taken", **evidence)


# --- server.churn -----------------------------------------------------------------------------

def churn_findings(events: Sequence[LogEvent], *, duplicate_cn: bool,
                   window: timedelta = CHURN_WINDOW) -> dict[str, Any]:
    """Per common name: duplicate-CN drops (and from how many hosts) and reconnect rates in
    the last ``window`` of the log."""
    recent = _recent(events, window)
    connects: dict[str, list[LogEvent]] = defaultdict(list)
    dups: dict[str, list[LogEvent]] = defaultdict(list)
    for e in recent:
        if e.kind == "connect":
            connects[e.common_name].append(e)
        elif e.kind == "duplicate_cn":
            dups[e.common_name].append(e)
    shared: list[dict[str, Any]] = []
    if not duplicate_cn:
        for cn, drops in dups.items():
            hosts = sorted({h for e in connects[cn] + drops if (h := e.host) is not None})
            shared.append({"common_name": cn, "drops": len(drops), "hosts": hosts,
                           "first_line": drops[0].line})
    restarting: list[dict[str, Any]] = []
    for cn, conns in connects.items():
        if len(conns) < CHURN_MIN_CONNECTS:
            continue
        times = [e.time for e in conns if e.time is not None]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        interval = statistics.median(gaps) if gaps else None
        if interval is not None and interval > CHURN_MAX_INTERVAL_S:
            continue
        restarting.append({"common_name": cn, "connects": len(conns),
                           "median_interval_s": interval,
                           "hosts": sorted({h for e in conns if (h := e.host) is not None})})
    return {"duplicate_cn": shared, "restarting": restarting}


def journal_units(config: Path) -> list[str]:
    """The systemd units that run ``config`` as packaged: OpenVPN's ``openvpn-server@NAME``
    (/etc/openvpn/server/NAME.conf) and ``openvpn@NAME`` (/etc/openvpn/NAME.conf), and
    trivpn's ``trivpn@NAME`` (/etc/trivpn/NAME.conf, docs/systemd/README.md)."""
    name = config.stem
    if config.parent.name == "server" and config.parent.parent.name == "openvpn":
        return [f"openvpn-server@{name}"]
    if config.parent.name == "openvpn":
        return [f"openvpn@{name}"]
    if config.parent.name == "trivpn":
        return [f"trivpn@{name}"]
    return [f"openvpn-server@{name}", f"openvpn@{name}", f"trivpn@{name}"]


async def _journal(units: Sequence[str]) -> str:
    """The last hour of these units' journal (short-iso lines; trivpn's are JSON), or ""."""
    argv = ["journalctl", "-q", "--no-pager", "-o", "short-iso", "--since", "-1h",
            "-n", "20000"]
    for unit in units:
        argv += ["-u", unit]
    out = await run_tool(argv, netns=None)
    return out.stdout if out is not None and out.returncode == 0 else ""


async def check_churn(ctx: DoctorContext) -> CheckResult:
    cid = "server.churn"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    if o.log is None:
        units = journal_units(o.config_path)
        text = await _journal(units)
        if not text.strip():
            return skip(cid, "no 'log'/'log-append' file, and nothing from the units "
                             f"{', '.join(units)} in the journal in the last hour")
        source = "journal (" + ", ".join(units) + ")"
        events = log_events(text.splitlines(), year=datetime.now().year)
    else:
        source = str(o.log)
        events, error = await in_netns_thread(None, lambda: _read_log(o))
        if error is not None:
            return skip(cid, error)
    found = churn_findings(events, duplicate_cn=o.duplicate_cn)
    evidence: dict[str, Any] = {"log": source, "events": len(events), **found}
    shared = [s for s in found["duplicate_cn"] if len(s["hosts"]) > 1]
    if shared:
        s = shared[0]
        evidence["state"] = "duplicate_cn"
        return problem(
            cid, "fail",
            f"clients with common name '{s['common_name']}' from {len(s['hosts'])} addresses "
            f"({', '.join(s['hosts'])}) keep dropping each other",
            explanation=("Without 'duplicate-cn' the server allows one session per common "
                         "name: each new connection drops the other one ('MULTI: new "
                         "connection by client ... will cause previous active sessions by "
                         "this client to be dropped'), which then reconnects and drops the "
                         "first — both devices see the tunnel go down again and again."),
            fix=("Give each device its own certificate (e.g. 'easyrsa build-client-full "
                 "NAME2 nopass'); or, if sharing one is intended, add 'duplicate-cn' to "
                 f"{o.config_path} (then no per-client ccd file or fixed address applies)."),
            **evidence)
    if found["restarting"] or found["duplicate_cn"]:
        r = (found["restarting"] or found["duplicate_cn"])[0]
        interval = r.get("median_interval_s")
        every = f" about every {interval:.0f} s" if interval else ""
        evidence["state"] = "restarting"
        return problem(
            cid, "warn",
            f"client '{r['common_name']}' reconnects over and over"
            + (f" ({r['connects']} connects in the last hour{every})" if "connects" in r
               else " (a new session while its previous one was still active)"),
            explanation=("One client keeps restarting its tunnel: typically a keepalive / "
                         "ping-restart timeout on its side (a NAT or firewall forgetting the "
                         "UDP binding), a client process restarted by its service manager, "
                         "or a TLS renegotiation that fails. The client's own log tells "
                         "which: look for 'Inactivity timeout (--ping-restart)' or its exit "
                         "reason."),
            fix=("Read that client's log; for idle NAT timeouts use 'keepalive 10 60' "
                 f"in {o.config_path} (pushed to clients), and 'explicit-exit-notify' on "
                 "UDP clients so the server sees them leave."), **evidence)
    evidence["state"] = "ok"
    return ok(cid, f"no duplicate common names or reconnect loops in {source}", **evidence)


_SERVER: tuple[Literal["server"]] = ("server",)
CHECKS: tuple[Check, ...] = (
    Check("server.sockets", check_sockets, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.crl", _check_crl, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.pool", check_pool, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.churn", check_churn, roles=_SERVER, depends_on=("config.syntax",)),
)
