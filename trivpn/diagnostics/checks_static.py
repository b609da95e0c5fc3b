"""The doctor on static-key configs (``secret FILE [direction]``, no TLS).

* Checks that need TLS (``needs_tls`` on the Check: tls.*, pki.*, compat.occ, the probes
  that send TLS resets) are skipped by the runner with :func:`mode_skip`'s reason.
* ``port.reachable`` probes a static config with an encrypted OCC request instead of a TLS
  reset (:func:`run_port`, probe_static.py): open / closed / filtered as for TLS.
* ``static.peer`` reads that probe: key, key direction, cipher and auth right when the OCC
  reply decrypts under the configured form; which of them differs when it decrypts only
  under another form; another key when nothing decrypts; and the peer's options string
  compared with ours by compat.occ's comparison (checks_compat.compare()).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics.checks_compat import (
    Mismatch,
    compare,
    expected_remote,
    parse_options_string,
)
from trivpn.diagnostics.model import (
    Check,
    CheckResult,
    DoctorContext,
    Status,
    ok,
    problem,
    skip,
)
from trivpn.diagnostics.probe import ProbeInputs, Target, remote_where, where
from trivpn.diagnostics.probe_static import StaticExchange, static_exchange, usable_inputs

PEER_ID = "static.peer"
PORT_ID = "port.reachable"


def is_static(o: Options | None) -> bool:
    return o is not None and o.secret is not None


def mode_words(o: Options) -> str:
    return f"static-key mode ('secret' at {where(o, 'secret')}, no TLS)"


def mode_skip(check_id: str, o: Options) -> CheckResult:
    """The result of a check that needs TLS on a static-key config."""
    instead = ("static.peer probes the peer instead" if o.remotes else
               "this side waits for its peer: run the doctor on the peer's config, whose "
               "static.peer probes this side")
    return skip(check_id, f"skipped: {mode_words(o)}: this check needs TLS ({instead})",
                mode="static-key")


# ------------------------------------------------------------------ port.reachable (static)

async def run_port(ctx: DoctorContext, inputs: ProbeInputs) -> CheckResult:
    """port.reachable for a static-key config: an OCC request per remote."""
    o = inputs.options
    prepared = usable_inputs(o)
    if isinstance(prepared, str):
        return skip(PORT_ID, f"skipped: the static key cannot be used ({prepared})",
                    mode="static-key")
    found: dict[int, StaticExchange] = {}

    async def one(i: int, target: Target) -> None:
        found[i] = await static_exchange(target, prepared, netns=ctx.netns)

    async with trio.open_nursery() as nursery:
        for i, target in enumerate(inputs.targets):
            nursery.start_soon(one, i, target)
    entries = [found[i].evidence() for i in range(len(inputs.targets))]
    first = entries[0]
    evidence = {**first, "targets": entries, "unresolved": inputs.unresolved}
    return _port_verdict(o, first, evidence)


def _port_verdict(o: Options, e: dict[str, Any], evidence: dict[str, Any]) -> CheckResult:
    t = e["target"]
    sent_to, proto, port = e["sent_to"], t["proto"], t["port"]
    remote_line = f"{o.config_path.name} line {t['remote_line']} (remote {t['host']} {port})"
    state, kind = e["state"], e["reply_kind"]
    sent_addr = sent_to.rsplit("/", 1)[0]
    if proto == "udp" and not o.float_ and e["reply_from"] not in (None, sent_addr):
        return problem(
            PORT_ID, "fail", f"the peer answers from {e['reply_from']}, not from {sent_addr}",
            explanation=f"Our OCC request to {sent_addr} was answered from "
            f"{e['reply_from']}. Without 'float' the side with 'remote' takes packets only "
            "from the address it sends to (OpenVPN src/openvpn/socket.h, "
            "link_socket_verify_incoming_addr()), so none of the peer's packets are accepted. This "
            "happens when the peer has several addresses and answers from another one, or "
            "NAT rewrites its replies.",
            fix=f"On the peer, bind to the address this side uses with 'local "
            f"{t['address']}' (or 'multihome'); or, if {e['reply_from']} is right, put it in "
            f"{remote_line}; 'float' in {o.config_path.name} accepts the reply too.",
            **evidence)
    if state == "open" and kind == "occ_reply":
        return ok(PORT_ID, f"{sent_to}: the static-key peer answers an OCC request in "
                  f"{e['first_reply_s'] * 1000:.0f} ms", **evidence)
    if state == "open":
        what = {
            "occ_reply_other": "but only to a request under another key direction, cipher "
                               "or auth",
            "undecryptable": "but its packets decrypt under no form of this config's key",
            "other": "but sends no OCC reply",
        }.get(kind or "", "(the TCP connection is accepted) but nothing answers any form of "
              "this config's key")
        return problem(
            PORT_ID, "warn", f"something answers on {sent_to}, {what}",
            explanation="The port is open, but the peer and this config do not use the "
            "static key the same way, so no packet gets through; static.peer says which "
            "setting differs.",
            fix=f"See static.peer; compare 'secret', 'cipher' and 'auth' in "
            f"{o.config_path.name} with the peer's config.", **evidence)
    if state == "closed":
        how = ("the host answered with ICMP port unreachable" if proto == "udp"
               else "the connection was refused (TCP RST)")
        return problem(
            PORT_ID, "fail", f"nothing listens on {sent_to} ({how})",
            explanation=f"{how.capitalize()}: the packets reach the host, but no program "
            f"listens on {proto.upper()} port {port} there. The static-key peer is not "
            "running, or listens on another port or protocol.",
            fix=f"Start OpenVPN on the peer, and make {remote_line} and 'proto' "
            f"({where(o, 'proto')}) match the peer's 'lport'/'port' and 'proto'; on the peer, "
            f"'ss -lnp sport = :{port}' shows whether anything listens.", **evidence)
    if e.get("icmp") in ("host_unreachable", "net_unreachable"):
        word = str(e["icmp"]).replace("_", " ")
        return problem(
            PORT_ID, "fail", f"{sent_to} is unreachable ({word})",
            explanation=f"The network reported {word} for {t['address']}: there is no route "
            "to the peer, or a router rejects it.",
            fix=f"Check the address in {remote_line} and the route to it "
            f"('ip route get {t['address']}', see route.to_server).", **evidence)
    firewall = f"nft add rule inet filter input {proto} dport {port} accept"
    silence = (f"no answer to {e['attempts']} OCC request(s) under {e['forms_tried']} forms "
               "of the key and no ICMP error" if proto == "udp"
               else "the TCP connection attempt timed out")
    keys = (" A static-key peer drops every packet it cannot authenticate without a word, "
            "so a peer whose key file differs from this config's looks exactly the same from "
            "here. The peer's log tells them apart: 'Authenticate/Decrypt packet error: "
            "packet HMAC authentication failed' for each of our packets means they arrive "
            "under another key; nothing in the log means they never arrive."
            if proto == "udp" else "")
    return problem(
        PORT_ID, "fail", f"{sent_to}: no answer ({silence})"
        + (": filtered, or a peer with another static key" if proto == "udp" else ""),
        explanation=f"Our OCC requests to {sent_to} got {silence}: a firewall on the peer or "
        f"in front of it drops them, or the host is down.{keys}",
        fix=f"Allow {proto.upper()} port {port} in the peer's firewall (e.g. '{firewall}'), "
        f"check the address in {remote_line}"
        + (", and make sure both sides use the same key file ('sha256sum' of the 'secret' "
           "file on both hosts)" if proto == "udp" else "") + ".", **evidence)


# ------------------------------------------------------------------ TLS peer-to-peer mode

def is_p2p_client(o: Options | None) -> bool:
    """A TLS peer-to-peer client config: tls-client without pull (and without 'client')."""
    return o is not None and o.secret is None and o.tls_role == "client" and not o.pull


def p2p_keys_result(ctx: DoctorContext, check_id: str) -> CheckResult | None:
    """tls.keys for a peer-to-peer TLS client whose configured reset port.reachable saw
    answered: the key works, and no variant is probed. A peer-to-peer tls-server serves one
    peer at a time (it has one TLS session slot), so resets from more source ports beside the
    handshake's would be answered for another session ('openvpn_other') or not at all."""
    port = ctx.results.get(PORT_ID)
    o = ctx.options
    if port is None or o is None or not is_p2p_client(o):
        return None
    targets = port.evidence.get("targets") or ()
    if not targets or targets[0].get("reply_kind") != "openvpn_reset":
        return None
    wrap = targets[0].get("wrap", "none")
    return ok(check_id, "the peer-to-peer server answered port.reachable's reset "
              + ("without tls-auth/tls-crypt, as configured" if wrap == "none" else
                 f"protected with this config's {wrap} key")
              + " (no other key variant probed: a peer-to-peer server serves one peer at a "
              "time)", sent_to=targets[0].get("sent_to"), configured_wrap=wrap,
              mode="p2p", reply_kind="openvpn_reset")


# ------------------------------------------------------------------------------ static.peer

def _peer_entry(port: CheckResult) -> dict[str, Any] | None:
    for entry in port.evidence.get("targets", ()):
        if entry.get("state") == "open":
            return dict(entry)
    return None


def _direction_words(d: Any) -> str:
    return "no direction (bidirectional)" if d == "bidirectional" else f"direction {d}"


def _differences(o: Options, configured: dict[str, Any],
                 answered: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(setting, meaning, fix) for each setting the answering form changes."""
    out: list[tuple[str, str, str]] = []
    secret_at = where(o, "secret")
    if answered["direction"] != configured["direction"]:
        ours = answered["direction"]
        peer = "none" if ours == "bidirectional" else str(1 - int(ours))
        setting = ("'secret FILE' without a direction (and no 'key-direction')"
                   if ours == "bidirectional" else f"'secret FILE {ours}' (or "
                   f"'key-direction {ours}' with an inline <secret>)")
        out.append((
            "direction",
            f"the peer answered only when we used key {_direction_words(ours)}, not this "
            f"config's {_direction_words(configured['direction'])}: the peer's key direction "
            f"is {peer} (OpenVPN crypto.c, key_direction_state_init(): direction 0 sends with "
            "the key file's first half and receives with its second, 1 the reverse, none "
            "uses the first half both ways), so each side rejects the other's packets",
            f"Use {setting} at {secret_at}: the two sides need opposite directions (0 and 1), "
            "or both none."))
    if answered["cipher"] != configured["cipher"]:
        out.append((
            "cipher",
            f"the peer encrypts with {answered['cipher']}, this config with "
            f"{configured['cipher']}; static-key mode negotiates nothing, so each side "
            "decrypts the other's packets to garbage and drops them",
            f"Set 'cipher {answered['cipher']}' at {where(o, 'cipher')} (or change the "
            "peer's 'cipher')."))
    if answered["auth"] != configured["auth"]:
        out.append((
            "auth",
            f"the peer authenticates packets with HMAC-{answered['auth']}, this config with "
            f"HMAC-{configured['auth']}; each side rejects the other's packets ('packet HMAC "
            "authentication failed' in OpenVPN's log)",
            f"Set 'auth {answered['auth']}' in {where(o, 'auth')} (or change the peer's "
            "'auth')."))
    return out


async def run_peer(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None or not is_static(o):
        return skip(PEER_ID, "skipped: not a static-key config (no 'secret'): the TLS "
                    "checks probe the peer")
    port = ctx.results.get(PORT_ID)
    entry = _peer_entry(port) if port is not None else None
    if entry is None:
        return skip(PEER_ID, "skipped: no static-key peer answered (see port.reachable)")
    kind = entry["reply_kind"]
    sent_to = entry["sent_to"]
    evidence = {k: entry[k] for k in ("sent_to", "reply_from", "reply_kind", "configured",
                                      "answered_by", "candidates", "forms_tried",
                                      "peer_options",
                                      "local_options", "timeline")}
    answered = entry["answered_by"] or (entry["candidates"] or [None])[0]
    if kind in ("occ_reply_other", "other") and answered != entry["configured"]:
        diffs = _differences(o, entry["configured"], answered)
        evidence["differs"] = [d[0] for d in diffs]
        return problem(
            PEER_ID, "fail", f"the peer on {sent_to} uses another "
            + " and ".join(d[0] for d in diffs) + ": "
            + "; ".join(f"{d[0]} {_value(answered[d[0]])}" for d in diffs),
            explanation="Our OCC request under this config's settings got no answer; the "
            "same request sent under other settings of the same key file got one, so the key "
            "file is the same and " + "; ".join(d[1] for d in diffs) + ".",
            fix=" ".join(d[2] for d in diffs), **evidence)
    if kind == "undecryptable":
        return problem(
            PEER_ID, "fail", f"the peer on {sent_to} uses another static key",
            explanation=f"Packets came back from {entry['reply_from']}, but none of them "
            f"authenticates under this config's key file with any key direction, CBC cipher or "
            "auth digest: the peer's 'secret' is a different key.",
            fix=f"Copy the peer's key file to {where(o, 'secret')} (or both from one "
            "'openvpn --genkey secret FILE'); 'sha256sum' of the file on both hosts must "
            "match.", **evidence)
    if kind is None:
        return problem(
            PEER_ID, "fail", f"{sent_to} accepts the connection but answers no form of this "
            "config's key",
            explanation=f"Our OCC request under this config's key, and the same request under "
            f"{entry['forms_tried']} forms in all (every key direction, CBC cipher and auth "
            "digest), got no answer on an accepted connection: the peer uses another static "
            "key, or it is not an OpenVPN static-key peer.",
            fix=f"Make {where(o, 'secret')} the same key file as the peer's ('sha256sum' on "
            "both hosts), and check the port against the peer's config.", **evidence)
    if kind == "other":
        return ok(PEER_ID, f"the peer on {sent_to} authenticates with this config's key, "
                  "direction, cipher and auth, but sent no options string (its OCC is "
                  "disabled?)", **evidence)
    return _compare_options(o, sent_to, entry, evidence)


def _static_meaning(m: Mismatch, o: Options) -> Mismatch:
    """compat.occ's reading of a difference, where static-key mode differs from TLS."""
    if m.item == "link-mtu":
        return replace(m, meaning=f"peer 'link-mtu {m.server}', this config's string "
                       f"'link-mtu {m.ours}' (computed by trivpn from cipher, auth, "
                       "compression and fragment); packets pass anyway: the OCC reply "
                       "decrypted under this config's settings")
    if m.item == "ifconfig":
        ours = (f"'ifconfig {o.ifconfig.local} {o.ifconfig.remote}'" if o.ifconfig is not None
                else "no 'ifconfig'")
        return replace(
            m, severity="warn",
            meaning=f"the peer's tunnel addresses do not mirror this config's: seen from "
            f"here the peer expects 'ifconfig {m.server}' (its own 'ifconfig' with the two "
            f"addresses swapped), this config has {ours}; packets to the peer's tunnel "
            "address then go nowhere" if m.server else
            f"this config has {ours} and the peer none",
            fix=f"Make {where(o, 'ifconfig')} the peer's 'ifconfig' with its two addresses "
            "swapped (local first, then the peer's)." if m.server else
            "Give both sides an 'ifconfig' (each: its own address, then the peer's).")
    return m


def _value(v: Any) -> str:
    return "none (bidirectional)" if v == "bidirectional" else str(v)


def _compare_options(o: Options, sent_to: str, entry: dict[str, Any],
                     evidence: dict[str, Any]) -> CheckResult:
    name = o.config_path.name
    local = entry["local_options"]
    if o.ifconfig is not None and ",ifconfig " not in local:
        # OpenVPN's string has 'ifconfig' (the peer's, written from our side: its remote
        # first); trivpn's static string has none, so add what this config says
        local += f",ifconfig {o.ifconfig.local} {o.ifconfig.remote}"
    occ = {"local": local, "server": entry["peer_options"]}
    found = [_static_meaning(m, o) for m in compare(occ, traffic=None, config_name=name)]
    evidence["expected_peer_options"] = ",".join(
        k if not v else f"{k} {v}"
        for k, v in expected_remote(parse_options_string(occ["local"])).items())
    evidence["mismatches"] = [m.as_evidence() for m in found]
    bad = [m for m in found if m.severity in ("fail", "warn")]
    if not bad:
        return ok(PEER_ID, f"the peer on {sent_to} answers under this config's key, "
                  "direction, cipher and auth; its options string agrees with this config"
                  + (f" ({len(found)} difference(s) OpenVPN 2.6 does not act on)"
                     if found else ""), **evidence)
    status: Status = "fail" if any(m.severity == "fail" for m in bad) else "warn"
    return problem(
        PEER_ID, status, "key, direction, cipher and auth are right, but options differ "
        "from the peer's: " + ", ".join(f"{m.item} (peer {m.server}, ours {m.ours})"
                                         for m in bad),
        explanation=" ".join(m.meaning.rstrip(".") + "." for m in bad)
        + " (Where this says 'server', read 'the peer'.)",
        fix=" ".join(m.fix for m in bad), **evidence)


CHECKS: tuple[Check, ...] = (
    Check(PEER_ID, run_peer, roles=("client",), depends_on=(PORT_ID,), static_only=True),
)

__all__ = ["CHECKS", "is_static", "mode_skip", "mode_words", "remote_where", "run_port"]
