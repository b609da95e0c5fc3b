"""``port.reachable``: does an OpenVPN server answer a real reset on each configured remote?

UDP: a P_CONTROL_HARD_RESET_CLIENT_V2 (wrapped with tls-auth/tls-crypt as configured) is sent
three times about a second apart on an *unconnected* socket with IP_RECVERR: ICMP errors are
read from its error queue (type, code, sender, and the destination they are about), and a
reply from another address than the one sent to is seen too (multi-homing, NAT). States:
``open`` (an OpenVPN server reset came back), ``closed`` (ICMP port unreachable),
``filtered`` (silence), ``open_not_openvpn`` (something else answered). Silence is re-probed
(REPROBE_ATTEMPTS more resets, a second apart) before it counts as ``filtered``: a host that
rate-limits its ICMP errors answers a closed port only now and then.
TCP: connect (refused → closed, timeout → filtered), then the same reset with 2-byte framing.
"""

from __future__ import annotations

from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics import checks_static
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, Status, ok, problem
from trivpn.diagnostics.probe import (
    REPROBE_ATTEMPTS,
    Exchange,
    Target,
    probe_inputs,
    remote_where,
    reset_exchange,
    udp_reset_exchange,
    where,
    wrap_name,
)
from trivpn.protocol.wrap import ControlWrap

ID = "port.reachable"


async def probe_target(target: Target, wrap: ControlWrap, label: str,
                       netns: str | None) -> tuple[Exchange, Exchange | None]:
    """The reset exchange (UDP: on an unconnected socket, so that a reply from another address
    is seen too, and re-probed before silence counts; see udp_reset_exchange). The second item
    is kept for callers that look for a separate unconnected attempt; it is always None now."""
    if target.transport == "udp":
        main = await udp_reset_exchange(target, wrap, wrap_label=label, netns=netns,
                                        connected=False, reprobe=REPROBE_ATTEMPTS)
    else:
        main = await reset_exchange(target, wrap, wrap_label=label, netns=netns)
    return main, None


def _elsewhere(ex: Exchange | None, target: Target) -> dict[str, Any] | None:
    if ex is None:
        return None
    for reply in ex.replies:
        if reply["from"] != target.describe().rsplit("/", 1)[0]:
            return reply
    return None


def target_evidence(main: Exchange, loose: Exchange | None) -> dict[str, Any]:
    ev = main.evidence()
    sent_to = main.target.describe().rsplit("/", 1)[0]
    if main.target.transport != "udp" or any(
            r["from"] == sent_to and r["kind"] == "openvpn_reset" for r in main.replies):
        return ev
    source = loose if loose is not None and _elsewhere(loose, main.target) else main
    other = _elsewhere(source, main.target)
    if other is not None:
        ev["state"] = "open"
        ev["reply_from"] = other["from"]
        ev["reply_kind"] = other["kind"]
        ev["reply_from_other_address"] = True
        ev["bytes_received"] = [other["bytes"]]
        ev["unconnected_timeline"] = source.timeline.steps
    return ev


def judge(options: Options, entries: list[dict[str, Any]],
          unresolved: list[dict[str, Any]]) -> CheckResult:
    """Turn per-target evidence into the check result (first remote decides, as OpenVPN tries
    remotes in order; a later remote that works turns a failure into a warning)."""
    first = entries[0]
    verdicts = [_verdict(options, e) for e in entries]
    evidence = {**first, "targets": entries, "unresolved": unresolved}
    status, summary, explanation, fix = verdicts[0]
    if status == "ok":
        if all(v[0] == "ok" for v in verdicts[1:]):
            return ok(ID, summary, **evidence)
        bad = [(e, v) for e, v in zip(entries, verdicts, strict=True) if v[0] != "ok"]
        e, v = bad[0]
        return problem(ID, "warn", f"{summary}; but {e['sent_to']}: {v[1]}",
                       explanation=v[2], fix=v[3], **evidence)
    good = [e for e, v in zip(entries, verdicts, strict=True) if v[0] == "ok"]
    if good and status == "fail":
        return problem(ID, "warn", f"{summary}; {good[0]['sent_to']} answers, so OpenVPN "
                       "reaches the server after trying this remote", explanation=explanation,
                       fix=fix, **evidence)
    return problem(ID, status, summary, explanation=explanation, fix=fix, **evidence)


def _verdict(o: Options, e: dict[str, Any]) -> tuple[Status, str, str, str]:
    t = e["target"]
    sent_to, proto, port = e["sent_to"], t["proto"], t["port"]
    remote_line = f"{o.config_path.name} line {t['remote_line']} (remote {t['host']} {port})"
    wrap = e["wrap"]
    key_dir = "tls-crypt" if wrap == "tls-crypt" else "tls-auth"
    state, kind = e["state"], e["reply_kind"]
    tries = f"{e['attempts']} reset(s)"
    if e.get("reply_from_other_address"):
        return ("fail", f"the server answers from {e['reply_from']}, not from {sent_to}",
                f"A reset sent to {sent_to} got its answer from {e['reply_from']}. OpenVPN "
                "clients drop replies from an address they did not send to ('TCP/UDP: Incoming "
                "packet rejected from ..., expected peer address') and retry until 'TLS key "
                "negotiation failed to occur within 60 seconds'. This happens when a server "
                "with several addresses answers from its other address, or NAT rewrites the "
                "reply (see nat.reply_source).",
                f"On the server, bind to the address clients use with 'local "
                f"{t['address']}' (or run OpenVPN with 'multihome'); or, if the other address "
                f"is the right one, put it in {remote_line}. 'float' in the client config "
                "also accepts the reply, but hides the problem.")
    if state == "open" and kind == "openvpn_reset":
        when = f" in {e['first_reply_s'] * 1000:.0f} ms" if e["first_reply_s"] is not None else ""
        return ("ok", f"{sent_to} answers with an OpenVPN reset{when}"
                f"{'' if wrap == 'none' else f' ({wrap})'}", "", "")
    if state == "open":
        reason = {
            "hmac_mismatch": f"but its reply fails {key_dir} authentication with our key",
            "unwrapped_reset": f"but without {key_dir}, which this config uses",
            "openvpn_other": "but not with the expected reset",
        }.get(kind or "", "")
        fix_dir = "tls-crypt" if wrap == "tls-crypt" else "tls-auth"
        return ("warn", f"an OpenVPN server answers on {sent_to}, {reason}".rstrip(", "),
                "The port is open and an OpenVPN server is listening, but its answer does not "
                "fit this config's control-channel key, so the handshake cannot succeed. "
                "tls.keys and tls.handshake show which side differs.",
                f"Make '{fix_dir}' in {where(o, fix_dir)} use the same key file as the "
                "server (and the opposite key-direction for tls-auth).")
    if state == "open_not_openvpn":
        got = (f"{len(e['bytes_received'])} reply packet(s) of "
               f"{', '.join(str(b) for b in e['bytes_received'])} bytes"
               if e["bytes_received"] else "an accepted connection but no OpenVPN reply")
        return ("fail", f"something on {sent_to} answers, but it is not an OpenVPN server",
                f"The reset to {sent_to} got {got} that is not an OpenVPN server reset. "
                "Another service owns this port, the port in the remote line is wrong, or "
                "(TCP) a proxy or load balancer accepts the connection without passing it "
                "on. A server whose tls-auth/tls-crypt key differs may also stay silent "
                "after accepting a TCP connection (see tls.keys).",
                f"Check the port in {remote_line} against the server's 'port' and 'proto'; "
                f"on the server, 'ss -lnp sport = :{port}' shows which program owns it.")
    if state == "closed":
        how = ("the host answered with ICMP port unreachable" if proto == "udp"
               else "the connection was refused (TCP RST)")
        return ("fail", f"nothing listens on {sent_to} ({how})",
                f"{how.capitalize()}: the packets reach the host, but no program listens on "
                f"{proto.upper()} port {port} there. OpenVPN is not running on the server, "
                "listens on another port, address or protocol, or the remote line names the "
                "wrong port. OpenVPN itself only reports 'TLS key negotiation failed to occur "
                "within 60 seconds' for this.",
                f"Start the OpenVPN server (e.g. 'systemctl status openvpn-server@server'), "
                f"and make {remote_line} and 'proto' ({where(o, 'proto')}) match the "
                f"server's 'port' and 'proto'; on the server, 'ss -lnp sport = :{port}' "
                "shows whether anything listens.")
    # filtered
    icmp = e.get("icmp")
    if icmp in ("host_unreachable", "net_unreachable"):
        return ("fail", f"{sent_to} is unreachable ({icmp.replace('_', ' ')})",
                f"The network reported {icmp.replace('_', ' ')} for {t['address']}: there is "
                "no route to the server, or a router rejects it. OpenVPN would retry until "
                "'TLS key negotiation failed to occur within 60 seconds'.",
                f"Check the address in {remote_line} and the client's route to it "
                f"('ip route get {t['address']}', see route.to_server).")
    silence = (f"no answer after {tries} over {e['timeline'][-1]['t']:.1f} s and no ICMP "
               "error" if proto == "udp" else "the TCP connection attempt timed out")
    keys = ""
    if wrap != "none":
        keys = (f" An OpenVPN server whose {key_dir} key differs from this config's also drops "
                "our reset silently, which looks exactly the same from here: tls.keys "
                "checks that.")
    firewall = (f"nft add rule inet filter input {proto} dport {port} accept"
                if proto == "udp" else f"nft add rule inet filter input tcp dport {port} accept")
    return ("fail", f"{sent_to} is filtered ({silence})",
            f"The reset to {sent_to} got {silence}: something between here and the server "
            "silently drops the packets — a firewall on the server or in front of it (cloud "
            f"security group, router), or a host that is down.{keys} OpenVPN would keep "
            "retransmitting and finally report 'TLS key negotiation failed to occur within 60 "
            "seconds (check your network connectivity)'.",
            f"Allow {proto.upper()} port {port} in the server's firewall (e.g. '{firewall}' or "
            f"'iptables -I INPUT -p {proto} --dport {port} -j ACCEPT') and in any cloud "
            f"security group, and check the address in {remote_line}.")


async def run(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, ID)
    if isinstance(inputs, CheckResult):
        return inputs
    if checks_static.is_static(inputs.options):  # a static-key peer ignores a TLS reset
        return await checks_static.run_port(ctx, inputs)
    o, wrap, targets, unresolved = inputs.options, inputs.wrap, inputs.targets, inputs.unresolved
    label = wrap_name(o)
    results: dict[int, tuple[Exchange, Exchange | None]] = {}

    async def one(i: int, target: Target) -> None:
        results[i] = await probe_target(target, wrap, label, ctx.netns)

    async with trio.open_nursery() as nursery:
        for i, target in enumerate(targets):
            nursery.start_soon(one, i, target)
    entries = [target_evidence(*results[i]) for i in range(len(targets))]
    return judge(o, entries, unresolved)


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client",), depends_on=("dns.remote",)),
)

__all__ = ["CHECKS", "judge", "probe_target", "remote_where", "target_evidence"]
