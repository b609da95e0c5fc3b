"""``env.tun`` and ``env.privileges``: can this machine create the tunnel device, and does the
process hold what bringing a tunnel up needs (CAP_NET_ADMIN; the ``user``/``group`` to drop to).
Both run without a parsed config."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from typing import Any

from trivpn.diagnostics.hostinfo import in_netns_thread
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.tun import TUN_PATH, open_tun

CAP_NET_ADMIN = 12
TUN_MAJOR, TUN_MINOR = 10, 200
PROBE_NAME = "tvdoc%d"


# --- env.tun ----------------------------------------------------------------------------------

def probe_tun(kind: str) -> dict[str, Any]:
    """Open a throwaway, non-persistent TUN/TAP device (gone when closed); what happened."""
    result: dict[str, Any] = {"path": TUN_PATH}
    try:
        st = os.stat(TUN_PATH)
    except OSError as exc:
        result["error"] = f"{TUN_PATH}: {exc.strerror}"
        result["errno"] = exc.errno
        return result
    result["device"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if not stat.S_ISCHR(st.st_mode):
        result["error"] = f"{TUN_PATH} is not a character device"
        return result
    try:
        dev = open_tun(PROBE_NAME, "tap" if kind == "tap" else "tun")
    except RuntimeSetupError as exc:
        result["error"] = str(exc)
        result["errno"] = exc.errno
        return result
    with dev:
        result["created"] = dev.name
    return result


async def check_tun(ctx: DoctorContext) -> CheckResult:
    cid = "env.tun"
    kind = ctx.options.dev_type if ctx.options is not None else "tun"
    seen = await in_netns_thread(ctx.netns, lambda: probe_tun(kind))
    if "created" in seen:
        return ok(cid, f"{TUN_PATH} works (created and removed a test {kind} device "
                       f"{seen['created']})", **seen)
    code = seen.get("errno")
    if code == errno.ENOENT:
        return problem(cid, "fail", f"{TUN_PATH} does not exist", **seen,
                       explanation="Without the TUN device node neither OpenVPN nor trivpn can "
                                   "create the tunnel interface.",
                       fix="Load the module with 'modprobe tun'; in a container, pass the "
                           "device in (docker: '--device /dev/net/tun --cap-add NET_ADMIN').")
    if code in (errno.EPERM, errno.EACCES):
        return problem(cid, "fail", f"not allowed to create a {kind} device: {seen['error']}",
                       **seen,
                       explanation="Creating a tunnel interface needs CAP_NET_ADMIN (normally: "
                                   "running as root).",
                       fix="Run 'trivpn run' (and this doctor) as root, or grant the "
                           "capability with 'setcap cap_net_admin+ep' on the interpreter.")
    return problem(cid, "fail", f"cannot create a {kind} device: {seen.get('error')}", **seen,
                   explanation="The kernel refused to create the tunnel interface, so the "
                               "tunnel cannot come up.",
                   fix=f"Check that {TUN_PATH} is the TUN character device (10:200, "
                       "'ls -l /dev/net/tun') and that the 'tun' module is loaded "
                       "('modprobe tun').")


# --- env.privileges ---------------------------------------------------------------------------

def effective_caps(status_text: str) -> int | None:
    """The ``CapEff`` mask from ``/proc/PID/status`` text."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def has_net_admin(status_text: str) -> bool:
    caps = effective_caps(status_text)
    return caps is not None and bool(caps >> CAP_NET_ADMIN & 1)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


async def check_privileges(ctx: DoctorContext) -> CheckResult:
    cid = "env.privileges"
    with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
        status_text = fh.read()
    caps = effective_caps(status_text)
    net_admin = has_net_admin(status_text)
    evidence: dict[str, Any] = {"euid": os.geteuid(),
                                "cap_eff": f"{caps:016x}" if caps is not None else None,
                                "cap_net_admin": net_admin}
    o = ctx.options
    missing: list[tuple[str, str]] = []
    if o is not None:
        if o.user is not None:
            evidence["user"] = o.user
            if not _user_exists(o.user):
                missing.append(("user", o.user))
        if o.group is not None:
            evidence["group"] = o.group
            if not _group_exists(o.group):
                missing.append(("group", o.group))
    if missing and o is not None:
        what, name = missing[0]
        loc = o.location(what)
        place = f"{loc[0]}:{loc[1]}" if loc else str(o.config_path)
        return problem(cid, "fail", f"{what} '{name}' does not exist on this machine",
                       **evidence,
                       explanation=f"OpenVPN drops privileges to this {what} after start-up and "
                                   "exits with an error when it does not exist.",
                       fix=f"Create it ('{'useradd --system' if what == 'user' else 'groupadd'}"
                           f" {name}') or change '{what}' at {place} to an existing one "
                           "(e.g. 'nobody' / 'nogroup').")
    if not net_admin:
        return problem(cid, "fail", "this process lacks CAP_NET_ADMIN", **evidence,
                       explanation="Bringing a tunnel up creates a tun device and changes "
                                   "addresses and routes, which needs CAP_NET_ADMIN.",
                       fix="Run trivpn as root (e.g. with sudo), or as a systemd service with "
                           "'AmbientCapabilities=CAP_NET_ADMIN'.")
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return ok(cid, f"running as {who} with CAP_NET_ADMIN", **evidence)


CHECKS: tuple[Check, ...] = (
    Check("env.tun", check_tun),
    Check("env.privileges", check_privileges),
)
