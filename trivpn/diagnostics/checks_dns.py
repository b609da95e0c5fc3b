"""``dns.remote`` (client): does every ``remote`` host resolve, and to which addresses.

Literal addresses are taken as they are. Names go through the system resolver
(``getaddrinfo``, as OpenVPN does), inside the doctor's namespace, bounded in time. Nothing
else is sent anywhere. The evidence's ``remotes`` list is what ``route.to_server`` and the
network probes use.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Literal

import trio

from trivpn.config import Options, Remote
from trivpn.diagnostics.hostinfo import in_netns_thread
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip

RESOLVE_TIMEOUT = 5.0


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _family(remote: Remote) -> int:
    return {4: socket.AF_INET, 6: socket.AF_INET6}.get(remote.family or 0, socket.AF_UNSPEC)


def _resolve(host: str, port: int, family: int, sock_type: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, family, sock_type)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_remote(remote: Remote, *, netns: str | None,
                         timeout: float) -> dict[str, Any]:
    row: dict[str, Any] = {"host": remote.host, "port": remote.port, "proto": remote.proto,
                           "line": remote.line}
    literal = _literal(remote.host)
    if literal is not None:
        row["addresses"] = [literal]
        row["literal"] = True
        return row
    sock_type = socket.SOCK_DGRAM if remote.proto == "udp" else socket.SOCK_STREAM
    start = trio.current_time()
    with trio.move_on_after(timeout):
        try:
            row["addresses"] = await in_netns_thread(
                netns, lambda: _resolve(remote.host, remote.port, _family(remote), sock_type))
        except socket.gaierror as exc:
            row["addresses"] = []
            row["error"] = exc.strerror or str(exc)
        except OSError as exc:
            row["addresses"] = []
            row["error"] = str(exc)
        row["resolve_s"] = round(trio.current_time() - start, 3)
        return row
    row["addresses"] = []
    row["error"] = f"no answer within {timeout:g} s"
    return row


def _remote_place(o: Options, remote: Remote) -> str:
    loc = o.location("remote")
    path = loc[0] if loc is not None else o.config_path
    return f"{path}:{remote.line}"


async def check_remote(ctx: DoctorContext) -> CheckResult:
    cid = "dns.remote"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    if not o.remotes:
        return skip(cid, "no 'remote' in the config")
    timeout = min(RESOLVE_TIMEOUT, ctx.timeout)
    rows: list[dict[str, Any]] = [{} for _ in o.remotes]

    async def one(i: int, remote: Remote) -> None:
        rows[i] = await resolve_remote(remote, netns=ctx.netns, timeout=timeout)

    async with trio.open_nursery() as nursery:
        for i, remote in enumerate(o.remotes):
            nursery.start_soon(one, i, remote)
    evidence = {"remotes": rows}
    failed = [(r, row) for r, row in zip(o.remotes, rows, strict=True) if not row["addresses"]]
    total = sum(len(row["addresses"]) for row in rows)
    if not failed:
        return ok(cid, f"{len(rows)} remote(s) resolve to {total} address(es): "
                       + ", ".join(a for row in rows for a in row["addresses"]), **evidence)
    remote, row = failed[0]
    place = _remote_place(o, remote)
    status: Literal["warn", "fail"] = "fail" if len(failed) == len(rows) else "warn"
    names = ", ".join(r.host for r, _ in failed)
    explanation = (f"OpenVPN cannot resolve {names} ('RESOLVE: Cannot resolve host address: "
                   f"{remote.host}:{remote.port}') and "
                   + ("never reaches the server." if status == "fail" else
                      "skips to the next 'remote', which delays every connection."))
    return problem(cid, status, f"{remote.host} does not resolve ({row.get('error')})",
                   explanation=explanation,
                   fix=(f"Check the name in 'remote' at {place} (try 'getent ahosts "
                        f"{remote.host}'), fix DNS in /etc/resolv.conf, or use the server's "
                        "IP address there."),
                   **evidence)


CHECKS: tuple[Check, ...] = (
    # Not after config.syntax: with lines in error the remotes that parsed are still probed.
    Check("dns.remote", check_remote, roles=("client",)),
)
