"""Debian's real systemd-resolved, run without systemd: inside a private network and mount
namespace (``unshare --net --mount``) with a tmpfs on /run, its own ``dbus-daemon`` as the
system bus at /run/dbus/system_bus_socket, the ``systemd-resolve`` user it drops to added to
bind-mounted copies of /etc/passwd and /etc/group, and no stub listener. Nothing of it is
visible outside the namespaces; it dies with them. scripts/test unpacks the package (matching
the installed libsystemd-shared) into ``.cache/systemd-resolved``, never installs it (the
package would take over the machine's /etc/resolv.conf).

``python -m tests.runtime.resolvedkit WORKDIR`` (run by the test under ``unshare --net
--mount``) starts the bus and resolved, creates ``tun7``, applies plans through trivpn's
resolved backend, reads back what resolved holds for the link (D-Bus properties and its
/run/systemd/resolve/resolv.conf), reverts, reads again, and prints it all as one JSON object.
``python -m tests.runtime.resolvedkit serve WORKDIR CMD...`` (under ``unshare --mount`` in a
client's namespace) runs resolved for a ``trivpn run`` CMD (:func:`serve`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from trivpn.protocol.dns import DnsOptions, plan_dns

ROOT = Path(__file__).resolve().parents[2]
RESOLVED = Path(os.environ.get("TRIVPN_TEST_RESOLVED",
                               ROOT / ".cache" / "systemd-resolved" / "lib" / "systemd" /
                               "systemd-resolved"))
BUS = "unix:path=/run/dbus/system_bus_socket"


def _dns(*lines: str) -> DnsOptions:
    opts = DnsOptions()
    for line in lines:
        opts = opts.with_line(line.split())
    return opts


PLANS = (
    # pushed dhcp-options under redirect-gateway def1
    plan_dns(DnsOptions(), [("DNS", "198.18.8.53"), ("DNS", "2001:2::53"),
                            ("DOMAIN", "example.test")], ("def1",)),
    # a dns server with a port, SNI, DNSSEC, DoT and split domains
    plan_dns(_dns("server 0 address 198.18.8.54:5353", "server 0 sni dns.corp.test",
                  "server 0 dnssec optional", "server 0 transport DoT",
                  "server 0 resolve-domains corp.test", "search-domains lab.test"), [], None),
)
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={socket}</listen>
<auth>EXTERNAL</auth><policy context="default"><allow user="*"/><allow own="*"/>
<allow send_destination="*"/><allow receive_sender="*"/></policy></busconfig>
"""


def _sandbox(work: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    for name, line in (("passwd", "systemd-resolve:x:990:990::/:/usr/sbin/nologin\n"),
                       ("group", "systemd-resolve:x:990:\n")):
        copy = work / name
        text = Path(f"/etc/{name}").read_text()
        if not any(row.startswith("systemd-resolve:") for row in text.splitlines()):
            text += line
        copy.write_text(text)
        subprocess.run(["mount", "--bind", str(copy), f"/etc/{name}"], check=True)
    Path("/run/dbus").mkdir()
    conf_d = Path("/run/systemd/resolved.conf.d")
    conf_d.mkdir(parents=True)
    (conf_d / "test.conf").write_text("[Resolve]\nDNSStubListener=no\nLLMNR=no\n"
                                      "MulticastDNS=no\nDNS=\nFallbackDNS=\n")


def link_state(ifindex: int, bus: str = BUS) -> dict[str, Any] | None:
    """What resolved holds for the link: DNSEx, Domains, DefaultRoute, DNSSEC, DNSOverTLS (D-Bus
    properties), and the lines of the resolv.conf it writes (when visible from here); None
    when resolved knows no such link."""
    from jeepney import DBusAddress, MessageType, Properties
    from jeepney.io.blocking import open_dbus_connection

    path = "/org/freedesktop/resolve1/link/_3" + "_3".join(str(ifindex))
    link = DBusAddress(path, bus_name="org.freedesktop.resolve1",
                       interface="org.freedesktop.resolve1.Link")
    out: dict[str, Any] = {}
    with open_dbus_connection(bus=bus) as conn:
        for prop in ("DNSEx", "Domains", "DefaultRoute", "DNSSEC", "DNSOverTLS"):
            reply = conn.send_and_get_reply(Properties(link).get(prop), timeout=5)
            if reply.header.message_type == MessageType.error:
                return None
            value = reply.body[0][1]
            if prop == "DNSEx":
                value = [[family, str(ip_address(bytes(addr))), port, name]
                         for family, addr, port, name in value]
            elif prop == "Domains":
                value = [list(d) for d in value]
            out[prop] = value
    out["resolv_conf"] = _resolv_conf()
    return out


def _resolv_conf() -> list[str]:
    """The lines (no comments) of the resolv.conf resolved writes from its links."""
    resolv = Path("/run/systemd/resolve/resolv.conf")
    if not resolv.exists():
        return []
    return [line for line in resolv.read_text().splitlines()
            if line and not line.startswith("#")]


def _settle(line: str, *, present: bool, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while (line in _resolv_conf()) != present and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_for_resolved(bus: str, deadline: float) -> None:
    from trivpn.runtime.dns import ResolvedBackend

    while not ResolvedBackend(bus).available():
        if time.monotonic() > deadline:
            raise SystemExit("systemd-resolved did not appear on the bus")
        time.sleep(0.05)


@contextmanager
def running_resolved(work: Path, socket_path: Path, level: str = "info") -> Iterator[str]:
    """The sandbox, a dbus-daemon listening at ``socket_path`` and resolved on it; yields the
    bus address; kills both by PID after."""
    _sandbox(work)
    config = work / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=socket_path))
    address = f"unix:path={socket_path}"
    bus = subprocess.Popen(["dbus-daemon", "--config-file", str(config), "--nofork"])
    resolved = None
    try:
        while not socket_path.exists():
            time.sleep(0.02)
        with open(work / "resolved.log", "wb") as log:
            resolved = subprocess.Popen(
                [str(RESOLVED)], stdout=log, stderr=log,
                env={**os.environ, "SYSTEMD_LOG_LEVEL": level,
                     "DBUS_SYSTEM_BUS_ADDRESS": address})
        _wait_for_resolved(address, time.monotonic() + 10)
        yield address
    finally:
        for proc in (resolved, bus):
            if proc is not None:
                proc.kill()
                proc.wait(5)


def check_backend(work: Path) -> None:
    """Apply and revert :data:`PLANS` on ``tun7``; print what resolved held each time."""
    from trivpn.runtime.dns import ResolvedBackend

    with running_resolved(work, Path("/run/dbus/system_bus_socket")) as bus:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "tuntap", "add", "dev", "tun7", "mode", "tun"], check=True)
        subprocess.run(["ip", "link", "set", "tun7", "up"], check=True)
        ifindex = socket.if_nametoindex("tun7")
        backend = ResolvedBackend(bus)
        result: dict[str, Any] = {"ifindex": ifindex, "plans": []}
        for plan in PLANS:
            search = "search " + " ".join(plan.search_domains)
            record = backend.apply("tun7", ifindex, plan)
            _settle(search, present=True)  # resolved writes its resolv.conf a bit later
            applied = link_state(ifindex, bus)
            backend.revert(record)
            _settle(search, present=False)
            result["plans"].append({"applied": applied, "reverted": link_state(ifindex, bus)})
        print(json.dumps(result), flush=True)


def serve(work: Path, command: list[str]) -> int:
    """Run resolved with its bus at ``work``/bus (reachable from outside the mount namespace;
    ``work`` must be open to the ``systemd-resolve`` user), and ``command`` (a ``trivpn run``)
    with that bus as its system bus; SIGTERM goes to the command. After the command exits,
    resolved stays until ``work``/done exists (at most 30 s)."""
    with running_resolved(work, work / "bus", level="debug") as bus:  # logs every call
        child = subprocess.Popen(command, env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus})
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        code = child.wait()
        deadline = time.monotonic() + 30
        while not (work / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return code


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2]), sys.argv[3:]))
    check_backend(Path(sys.argv[1]))
