"""``nat.reply_source``: does the server answer from the address and port the client sent to?

Client role: the configured reset goes out on an *unconnected* UDP socket, which (unlike a
connected one) receives replies from any source, so the reply's real source is visible. A
multi-homed server answering from its other address, or NAT rewriting the reply, shows up as a
``reply_from`` different from ``sent_to``. OpenVPN clients drop such replies unless ``float``.

Server role (modest, no traffic): a UDP server without ``local`` on a host with several
addresses may answer from an address the client did not send to; a ``local`` address the host
does not have cannot be bound. The address clients are told to use (their profile's ``remote``)
is not in a server config, so a server behind NAT is only described, not judged.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import (
    RESET_ATTEMPTS,
    probe_inputs,
    remote_where,
    udp_reset_exchange,
    where,
    wrap_name,
)
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.netconf import NetConfig

ID = "nat.reply_source"


async def run_client(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o, wrap, targets = inputs.options, inputs.wrap, inputs.targets
    if o.secret is not None:  # a static-key peer ignores a TLS reset (checks_static.py)
        return skip(ID, "static-key mode: port.reachable's OCC probe compares the reply's "
                    "source with the address sent to", mode="static-key")
    udp = [t for t in targets if t.transport == "udp"]
    if not udp:
        return skip(ID, "skipped: TCP remotes only; a TCP reply cannot come from another "
                    "address (the connection would fail instead: see port.reachable)")
    target = udp[0]
    port = ctx.results.get("port.reachable")
    if port is not None and any(e.get("sent_to") == target.describe()
                                and e.get("state") == "closed"
                                for e in port.evidence.get("targets", ())):
        return skip(ID, f"not run: nothing answered on the port ({target.describe()} is "
                    "closed, see port.reachable)")
    ex = await udp_reset_exchange(target, wrap, wrap_label=wrap_name(o), netns=ctx.netns,
                                  connected=False, attempts=RESET_ATTEMPTS)
    expected = target.describe().rsplit("/", 1)[0]
    evidence: dict[str, Any] = {"sent_to": expected, "reply_from": None,
                                "attempts": ex.attempts, "timeline": ex.timeline.steps,
                                "replies": ex.replies}
    if not ex.replies:
        return skip(ID, f"skipped: no reply from {expected} to compare (see port.reachable)",
                    **evidence)
    reply = ex.replies[0]
    evidence["reply_from"] = reply["from"]
    evidence["reply_kind"] = reply["kind"]
    if reply["from"] == expected:
        return ok(ID, f"replies come from {expected}, the address and port sent to",
                  **evidence)
    host = reply["from"].rpartition(":")[0]
    same_host = host == expected.rpartition(":")[0]
    what = "port" if same_host else "address"
    return problem(
        ID, "fail", f"the reply to {expected} came from {reply['from']} (different {what})",
        **evidence,
        explanation=f"A reset sent to {expected} was answered from {reply['from']}. OpenVPN "
        "clients accept packets only from the address and port they sent to; everything else "
        "is dropped ('TCP/UDP: Incoming packet rejected from [AF_INET]"
        f"{reply['from']}, expected peer address: [AF_INET]{expected}') and the client ends "
        "with 'TLS key negotiation failed to occur within 60 seconds'. Typical causes: the "
        "server has several addresses and answers from the one its routing table prefers "
        "(no 'local' / 'multihome'), or a NAT or load balancer in front of it rewrites the "
        "reply's source" + (" port" if same_host else "") + ".",
        fix=f"On the server, add 'local {target.address}' (the address clients use) to its "
        "config or start OpenVPN with 'multihome', or fix the NAT rule that rewrites the "
        f"replies; if {reply['from']} is the right address, put it in "
        f"{remote_where(o, target)}. 'float' in {o.config_path.name} makes the client accept "
        "it, but only hides the problem.")


def _host_addresses(netns: str | None) -> list[dict[str, Any]]:
    with NetConfig(netns) as nc:
        infos = nc.addresses()
    out = []
    for info in infos:
        ip = ipaddress.ip_address(info.address)
        if ip.is_loopback or ip.is_link_local:
            continue
        out.append({"ifname": info.ifname, "address": info.address,
                    "private": ip.is_private})
    return out


async def run_server(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    assert o is not None
    try:
        addresses = _host_addresses(ctx.netns)
    except RuntimeSetupError as exc:
        return skip(ID, f"skipped: cannot list the host's addresses ({exc})")
    evidence: dict[str, Any] = {"local": o.local, "proto": o.proto, "port": o.lport,
                                "host_addresses": addresses}
    known = {a["address"] for a in addresses}
    if o.local is not None:
        try:
            local_ip = str(ipaddress.ip_address(o.local))
        except ValueError:
            local_ip = None
        if local_ip is not None and local_ip not in known:
            return problem(
                ID, "fail", f"'local {o.local}' is not an address of this host", **evidence,
                explanation=f"The server is told to listen on {o.local} ({where(o, 'local')}), "
                "but no interface has that address, so it cannot bind and no client reaches "
                "it.",
                fix=f"Change 'local' in {where(o, 'local')} to one of: "
                f"{', '.join(sorted(known)) or 'the host addresses'}, or remove it.")
        return ok(ID, f"the server listens on {o.local} only, so it answers from the address "
                  "clients send to", **evidence)
    private = [a["address"] for a in addresses if a["private"]]
    note = (" If clients reach this server through NAT or a port forward, their profile's "
            "'remote' must name the public address, not " + ", ".join(private) + "."
            if private else "")
    if o.proto == "udp" and o.multihome and len(addresses) > 1:
        return ok(ID, "multihome: the server answers each client from the address it sent to",
                  **evidence)
    if o.proto == "udp" and len(addresses) > 1:
        return problem(
            ID, "warn", f"UDP server without 'local' on a host with {len(addresses)} addresses",
            **evidence,
            explanation="Without 'local', a UDP server answers from whichever address the "
            "routing table prefers, which is not always the one the client sent to; clients "
            "then drop the reply ('Incoming packet rejected from ...') and time out after 60 "
            "seconds." + note,
            fix=f"Add 'local ADDRESS' with the address clients use to {o.config_path.name} "
            "(or run OpenVPN with 'multihome').")
    return ok(ID, "single listening address: replies leave from the address clients use"
              + (" (a private address: clients behind NAT must use the public one)"
                 if private else ""), **evidence)


async def run(ctx: DoctorContext) -> CheckResult:
    if ctx.options is None:
        return skip(ID, "skipped: the config did not parse")
    if ctx.role == "server":
        return await run_server(ctx)
    return await run_client(ctx)


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client", "server"), depends_on=("dns.remote",),
          after=("port.reachable",)),
)
