"""``server.ccd``: the server's ``client-config-dir`` read the way the server reads it at each
client's connect (docs/server-ccd.md), so that what would refuse a client, or silently not
route, shows before a client connects:

- a missing or unreadable directory (the server does not start), files that do not parse
  (their client is refused; file and line named), directives trivpn does not support yet;
- an ``iroute`` no ``route`` of the server config covers: the kernel never sends that network
  into the tunnel, so the network behind the client is unreachable from the server's side;
- one fixed ``ifconfig-push`` address in two files (the second client is refused while the
  first is connected), or, with topology subnet, outside the server's subnet;
- the reverse of the first: a ``route`` into the tunnel for which no client file has an
  ``iroute`` (the server receives those packets and has no client to hand them to), and an
  ``iroute`` that overlaps the VPN pool.

Only files are read; nothing is sent.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from trivpn.config import ConfigError, Options
from trivpn.config.ccd import (
    ClientConfig,
    check_fixed_address,
    check_fixed_address6,
    load_client_config,
)
from trivpn.config.derive import server_tun_ifconfig, server_tun_ifconfig6
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip

MAX_FILES = 10000  # a bound on what one doctor run reads


def read_directory(directory: Path, base_dir: Path) -> dict[str, ClientConfig | ConfigError]:
    """Every regular file of ``directory`` (hidden ones left out), parsed."""
    out: dict[str, ClientConfig | ConfigError] = {}
    for path in sorted(directory.iterdir())[:MAX_FILES]:
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            out[path.name] = load_client_config(path, base_dir)
        except ConfigError as exc:
            out[path.name] = exc
    return out


def _routes(o: Options) -> list[ipaddress.IPv4Network]:
    nets = []
    for r in o.routes:
        try:
            nets.append(ipaddress.IPv4Network(f"{r.network}/{r.netmask}", strict=False))
        except ValueError:  # a name, resolved at run time
            continue
    return nets


def _tunnel_routes(o: Options) -> list[tuple[ipaddress.IPv4Network, int]]:
    """``route`` lines that send a network into the tunnel (no gateway, ``vpn_gateway``, or a
    gateway inside the VPN subnet), with their lines."""
    own = o.server.network if o.server is not None else None
    out = []
    for r in o.routes:
        try:
            net = ipaddress.IPv4Network(f"{r.network}/{r.netmask}", strict=False)
        except ValueError:
            continue
        gw = r.gateway
        if gw not in (None, "vpn_gateway"):
            try:
                inside = own is not None and ipaddress.IPv4Address(gw) in own
            except ValueError:
                inside = False
            if not inside:
                continue
        out.append((net, r.line))
    return out


def route_findings(o: Options, files: Mapping[str, ClientConfig | ConfigError]) -> list[str]:
    """Tunnel routes no client file claims with an ``iroute``, and iroutes inside the pool."""
    iroutes = [(c.path, net) for c in files.values() if not isinstance(c, ConfigError)
               for net in c.iroutes]
    warnings: list[str] = []
    pool = o.server.network if o.server is not None else None
    for net, line in _tunnel_routes(o):
        if pool is not None and net.overlaps(pool):
            continue  # the pool's own route (or part of it), served without iroute
        if not any(net.overlaps(i) for _, i in iroutes):
            warnings.append(f"{o.config_path}:{line}: 'route {net.network_address} "
                            f"{net.netmask}' has no 'iroute' in any client file: no client "
                            "owns that network")
    if pool is not None:
        for path, net in iroutes:
            if net.overlaps(pool):
                warnings.append(f"{path}: 'iroute {net.network_address} {net.netmask}' "
                                f"overlaps the VPN pool {pool}")
    return warnings


def findings(o: Options, files: Mapping[str, ClientConfig | ConfigError]) -> dict[str, list[str]]:
    """What is wrong with the parsed files: ``errors`` (a client would be refused) and
    ``warnings`` (a client is served but something it needs will not work)."""
    errors: list[str] = []
    warnings: list[str] = []
    routes = _routes(o)
    own = server_tun_ifconfig(o)
    own6 = server_tun_ifconfig6(o)
    network = o.server.network if o.server is not None else None
    fixed: dict[ipaddress.IPv4Address, str] = {}
    for name, c in files.items():
        if isinstance(c, ConfigError):
            errors.append(str(c))
            continue
        for net6 in c.iroutes_ipv6:
            if not any(net6.subnet_of(r.network) for r in o.routes_ipv6):
                warnings.append(f"{c.path}: 'iroute-ipv6 {net6}' has no matching "
                                f"'route-ipv6 {net6}' in the server config")
        if c.ifconfig_ipv6_push is not None:
            reason6 = check_fixed_address6(
                c.ifconfig_ipv6_push,
                None if own6 is None else ipaddress.IPv6Network((own6.address, own6.bits),
                                                                strict=False),
                None if own6 is None else own6.address)
            if reason6 is not None:
                errors.append(f"{c.path}: {reason6}")
        for net in c.iroutes:
            if not any(net.subnet_of(r) for r in routes):
                warnings.append(
                    f"{c.path}: 'iroute {net.network_address} {net.netmask}' has no matching "
                    f"'route {net.network_address} {net.netmask}' in the server config")
        if c.ifconfig_push is not None:
            local = c.ifconfig_push.local
            reason = check_fixed_address(
                c.ifconfig_push, tap=o.dev_type == "tap", topology=o.topology,
                server_network=network, server_address=own.local if own is not None else None)
            if reason is not None:
                errors.append(f"{c.path}: {reason}")
            if local in fixed:
                warnings.append(f"{c.path}: 'ifconfig-push {local}' is also in "
                                f"{fixed[local]}; only one of the two can be connected")
            fixed.setdefault(local, name)
    warnings += route_findings(o, files)
    return {"errors": errors, "warnings": warnings}


async def check_ccd(ctx: DoctorContext) -> CheckResult:
    cid = "server.ccd"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    directory = o.client_config_dir
    if directory is None:
        orphans = route_findings(o, {})
        if orphans and o.client_connect is None and not o.management_client_auth:
            return problem(
                cid, "warn", f"{len(orphans)} route(s) into the tunnel, but no "
                             f"client-config-dir to say which client owns them: {orphans[0]}",
                explanation=("A 'route' sends the network into the tunnel, but the server "
                             "hands a packet to a client only for its address or an 'iroute' "
                             "(from a client-config-dir file, a client-connect script or a "
                             "plugin); without one it drops them."),
                fix=("Add 'client-config-dir ccd' and put 'iroute NET MASK' in ccd/COMMON_NAME "
                     "of the client the network sits behind."), warnings=orphans)
        return skip(cid, "no client-config-dir")
    loc = o.location("client-config-dir")
    where = f"{loc[0]}:{loc[1]}" if loc is not None else str(o.config_path)
    if not directory.is_dir() or not os.access(directory, os.R_OK | os.X_OK):
        return problem(
            cid, "fail", f"client-config-dir {directory} is not a readable directory",
            explanation=(f"{where} names {directory}, which does not exist or cannot be read: "
                         "the server refuses to start (OpenVPN too)."),
            fix=f"Create it ('mkdir -p {directory}') or correct the path at {where}.",
            directory=str(directory))
    files = read_directory(directory, o.base_dir)
    found = findings(o, files)
    evidence: dict[str, Any] = {"directory": str(directory), "files": len(files), **found}
    status: Literal["fail", "warn"] | None = (
        "fail" if found["errors"] else "warn" if found["warnings"] else None)
    if status is None:
        return ok(cid, f"{len(files)} client file(s) in {directory} read cleanly", **evidence)
    first = (found["errors"] or found["warnings"])[0]
    count = len(found["errors"]) + len(found["warnings"])
    if found["errors"]:
        explanation = ("The server reads a client's file when that client connects; a file "
                       "it cannot apply refuses the client (AUTH_FAILED), while every other "
                       "client is served.")
        fix = "Correct the named lines (docs/server-ccd.md lists what a client file may say)."
    else:
        explanation = ("An 'iroute' tells the server which client owns a network, but the "
                       "kernel only sends the network into the tunnel when the server config "
                       "routes it there ('route'); the reverse, a 'route' no client file "
                       "claims with an 'iroute', brings packets into the server that it "
                       "drops (unless a client-connect script or plugin adds the iroute); "
                       "an iroute inside the pool steals addresses of other clients; a fixed "
                       "address in two files serves only one of the two clients at a time.")
        fix = ("For each warning: add the matching 'route NET MASK' to the server config, "
               "or 'iroute NET MASK' to the file of the client the network sits behind "
               "(ccd/COMMON_NAME); move an iroute out of the pool; give each client its own "
               "address.")
    return problem(cid, status, f"{count} problem(s) in {directory}: {first}",
                   explanation=explanation, fix=fix, **evidence)


_SERVER: tuple[Literal["server"]] = ("server",)
CHECKS: tuple[Check, ...] = (
    Check("server.ccd", check_ccd, roles=_SERVER, depends_on=("config.syntax",)),
)
