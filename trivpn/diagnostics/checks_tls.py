"""``tls.keys`` and ``tls.handshake``: is the control-channel key right, and how far does a real
handshake get?

``tls.keys`` sends the reset in several wrappings at once — as configured, with the other
tls-auth key direction(s), with tls-crypt/tls-auth swapped, and unwrapped — and compares which
ones an OpenVPN server answers. It runs after ``port.reachable`` but does not depend on it: a
2.6 server silently drops resets wrapped with the wrong key, which looks like a filtered port,
and this check must still run then. When the port is closed (ICMP port unreachable, TCP
refused) or the host unreachable, nothing can answer, so it does not run and blames no key.

``tls.handshake`` runs the real session (as ``trivpn run`` would) up to PUSH_REPLY with a short
hand-window, keeps a timeline of the phases, and on failure names the phase that stalled and the
cause, explaining why OpenVPN would only have said "TLS key negotiation failed to occur within
60 seconds". Its handshake is the doctor run's only one with the config's credentials: the
session it establishes is the one the ``tunnel.*`` checks lease afterwards
(:meth:`~trivpn.diagnostics.tunnel_session.TunnelBroker.handshake`), so an OpenVPN server without
``duplicate-cn`` is not made to drop one doctor session for the next.
"""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime
from typing import Any

import trio
from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.diagnostics import checks_certs, checks_static
from trivpn.diagnostics.auth_diag import (
    AUTH_CAUSES,
    PLACEHOLDER_PASSWORD,
    PLACEHOLDER_USER,
    diagnose_auth_failed,
    diagnose_auth_required,
    diagnose_prompted,
)
from trivpn.diagnostics.certdiag import diagnose_server_cert
from trivpn.diagnostics.certfacts import ClockReading, cert_facts
from trivpn.diagnostics.checks_compat import occ_evidence
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import (
    Exchange,
    Target,
    remote_where,
    reset_exchange,
    resolve_targets,
    unix_offset,
    where,
    wrap_name,
)
from trivpn.diagnostics.probe_session import PHASE_LABELS, SessionProbe, probe_config
from trivpn.diagnostics.tunnel_session import (
    GIVE_UP_AFTER,
    SILENT_AFTER,
    TLS_PHASES,
    Handshake,
    TunnelBroker,
    TunnelUnavailable,
    handshake_budget,
    server_gave_up,
)
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.session import SessionConfig
from trivpn.protocol.statickey import parse_static_key
from trivpn.protocol.tls import PeerVerification
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth, TlsCrypt
from trivpn.sessionsetup import control_wrap

KEYS_ID = "tls.keys"
HANDSHAKE_ID = "tls.handshake"
VARIANT_ATTEMPTS = 2
VARIANT_INTERVAL = 1.0
CAUSES = ("no_reset_reply", "hmac_mismatch", "cert_verify_failed", "cert_revoked",
          "peer_rejected_cert",
          "tls_alert", "no_common_cipher", "auth_failed", "timeout", *AUTH_CAUSES[1:],
          "auth_required")

# ---------------------------------------------------------------------------- tls.keys


def key_variants(o: Options) -> list[tuple[str, str, ControlWrap]]:
    """(variant id, description, wrapper): the configured wrapping first, then the plausible
    ways the server's may differ with the key this config has."""
    configured = control_wrap(o)
    out: list[tuple[str, str, ControlWrap]] = [("configured", _describe_config(o), configured)]
    source = o.tls_crypt or o.tls_auth
    if source is None:
        return out
    key = parse_static_key(source.read_text(), source.describe())
    out.append(("no_wrap", "no tls-auth/tls-crypt", NoWrap()))
    for direction in (None, 0, 1):
        if o.tls_auth is not None and direction == o.key_direction:
            continue
        name = "tls_auth_nodir" if direction is None else f"tls_auth_dir{direction}"
        text = ("tls-auth without key-direction" if direction is None
                else f"tls-auth with key-direction {direction}")
        out.append((name, text, TlsAuth(key, direction, o.auth)))
    if o.tls_crypt is None:
        out.append(("tls_crypt", "tls-crypt with the same key", TlsCrypt(key, is_server=False)))
    return out


def _describe_config(o: Options) -> str:
    if o.tls_crypt is not None:
        return "tls-crypt as configured"
    if o.tls_auth is not None:
        d = "none" if o.key_direction is None else str(o.key_direction)
        return f"tls-auth as configured (key-direction {d})"
    return "no tls-auth/tls-crypt, as configured"


def nothing_answered(ctx: DoctorContext, target: Target) -> str | None:
    """Why no server reply can be expected from ``target``, when ``port.reachable`` (run
    before) found its port closed or the host unreachable; None otherwise (also when it found
    the port filtered: a server that drops resets with a wrong key looks the same)."""
    port = ctx.results.get("port.reachable")
    if port is None:
        return None
    for entry in port.evidence.get("targets", ()):
        if entry.get("sent_to") != target.describe():
            continue
        state, icmp = entry.get("state"), entry.get("icmp")
        if state == "closed":
            how = ("ICMP port unreachable" if target.transport == "udp"
                   else "the connection was refused")
            return f"{target.describe()}: closed, {how}"
        if state == "filtered" and icmp in ("host_unreachable", "net_unreachable",
                                            "admin_prohibited", "blocked_locally"):
            return f"{target.describe()}: {icmp.replace('_', ' ')}"
    return None


def _variant_evidence(vid: str, text: str, ex: Exchange) -> dict[str, Any]:
    first = ex.replies[0] if ex.replies else None
    return {"variant": vid, "wrap": text, "answered": ex.answered is not None,
            "state": ex.state, "reply_kind": first["kind"] if first else None,
            "reply_from": first["from"] if first else None, "attempts": ex.attempts,
            "icmp": ex.icmp, "tcp": ex.tcp}


def judge_keys(o: Options, variants: list[dict[str, Any]], sent_to: str) -> CheckResult:
    configured = variants[0]
    others = variants[1:]
    answered = [v for v in others if v["answered"]]
    kind = configured["reply_kind"]
    wrap = wrap_name(o)
    directive = "tls-crypt" if wrap == "tls-crypt" else "tls-auth"
    evidence: dict[str, Any] = {"sent_to": sent_to, "configured_wrap": wrap,
                                "variants": variants,
                                "answered_variants": [v["variant"] for v in variants
                                                      if v["answered"]]}
    if configured["answered"]:
        if wrap == "none":
            return ok(KEYS_ID, "the server answers unwrapped resets; no tls-auth/tls-crypt on "
                      "either side", **evidence)
        extra = (f" (key-direction {o.key_direction})"
                 if wrap == "tls-auth" and o.key_direction is not None else "")
        return ok(KEYS_ID, f"the server answers resets protected with this config's {wrap} "
                  f"key{extra}", **evidence)
    if kind == "hmac_mismatch":
        return problem(
            KEYS_ID, "fail", f"the server answers, but its reply fails {directive} "
            "authentication with our key", cause="hmac_mismatch", **evidence,
            explanation=f"A server reset came back from {sent_to}, but its {directive} "
            "HMAC does not verify with this config's key. The server accepted our packet, so "
            "it shares our sending key but signs its own packets with a key we do not use: "
            "the key-direction differs (tls-auth) or the key files differ. OpenVPN drops such "
            "packets ('packet HMAC authentication failed' at the client) and only reports "
            "'TLS key negotiation failed to occur within 60 seconds'.",
            fix=f"Use the server's key file in {where(o, directive)} and, for tls-auth, the "
            "opposite key-direction of the server's (server 0, clients 1).")
    if kind == "unwrapped_reset" or any(v["variant"] == "no_wrap" for v in answered):
        return problem(
            KEYS_ID, "fail", f"the server does not use {directive}, but this config does",
            cause="wrap_mismatch", **evidence,
            explanation=f"The server answers a reset without {directive} and ignores ours: "
            f"it has no '{directive}' in its config. OpenVPN drops the mismatching packets on "
            "both ends and only reports 'TLS key negotiation failed to occur within 60 "
            "seconds'.",
            fix=f"Remove '{directive}' from {where(o, directive)}, or (better) add the same "
            f"'{directive}' key to the server's config.")
    auth = [v for v in answered if v["variant"].startswith("tls_auth")]
    if wrap == "tls-auth" and auth:
        v = auth[0]
        want = {"tls_auth_dir0": "0", "tls_auth_dir1": "1", "tls_auth_nodir": "none"}[v["variant"]]
        fix = (f"Set 'key-direction {want}' (or 'tls-auth FILE {want}') in "
               f"{where(o, 'tls-auth')}" if want != "none" else
               f"Remove the key-direction from 'tls-auth' in {where(o, 'tls-auth')} "
               "(and 'key-direction'), as the server uses the key bidirectionally")
        return problem(
            KEYS_ID, "fail", f"tls-auth key-direction mismatch: the server answers {v['wrap']}",
            cause="key_direction_mismatch", **evidence,
            explanation="The tls-auth key file is the same as the server's, but the key "
            "direction is not: the server ignores resets signed with this config's direction "
            f"and answers {v['wrap']}. OpenVPN logs 'packet HMAC authentication failed' on the "
            "server and only 'TLS key negotiation failed to occur within 60 seconds' here.",
            fix=fix + "; the server normally has 0 and its clients 1.")
    if wrap == "tls-crypt" and auth:
        return problem(
            KEYS_ID, "fail", f"the server uses tls-auth with this key, not tls-crypt "
            f"(it answers {auth[0]['wrap']})", cause="wrap_mismatch", **evidence,
            explanation="The server answers resets signed with tls-auth using this key file, "
            "and ignores tls-crypt ones: the two configs use different control-channel "
            "protection. OpenVPN only reports 'TLS key negotiation failed to occur within 60 "
            "seconds' for this.",
            fix=f"Replace 'tls-crypt' in {where(o, 'tls-crypt')} with 'tls-auth FILE 1' (or "
            "switch the server to tls-crypt).")
    crypt = [v for v in answered if v["variant"] == "tls_crypt"]
    if crypt:
        return problem(
            KEYS_ID, "fail", "the server uses tls-crypt with this key, not tls-auth",
            cause="wrap_mismatch", **evidence,
            explanation="The server answers resets protected with tls-crypt using this key "
            "file and ignores tls-auth ones. OpenVPN only reports 'TLS key negotiation failed "
            "to occur within 60 seconds' for this.",
            fix=f"Replace 'tls-auth' in {where(o, 'tls-auth')} with 'tls-crypt FILE' (and "
            "drop key-direction).")
    closed = next((v for v in variants if v["state"] == "closed"), None)
    if closed is not None:
        return skip(KEYS_ID, f"not run: nothing answered on the port ({sent_to} answered "
                    "with ICMP port unreachable), so no key can be checked (see "
                    "port.reachable)", **evidence)
    if configured["state"] == "open_not_openvpn":
        return skip(KEYS_ID, "skipped: what answers is not an OpenVPN server (see "
                    "port.reachable)", **evidence)
    tried = ", ".join(v["wrap"] for v in variants)
    if wrap == "none":
        return problem(
            KEYS_ID, "warn", "no answer to an unwrapped reset: the server may require "
            "tls-auth or tls-crypt", cause="no_answer", **evidence,
            explanation="The server did not answer a reset without tls-auth/tls-crypt. A "
            "server configured with 'tls-auth' or 'tls-crypt' silently drops such resets, "
            "exactly as a firewall would, and OpenVPN only reports 'TLS key negotiation failed "
            "to occur within 60 seconds'.",
            fix="If the server's config has 'tls-auth' or 'tls-crypt', copy its key to the "
            f"client and add the same directive to {o.config_path.name}; otherwise the port "
            "is firewalled (see port.reachable).")
    return problem(
        KEYS_ID, "fail", f"no answer with this config's {directive} key or any variant of it: "
        f"the {directive} key most likely differs from the server's",
        cause="key_mismatch_or_filtered", **evidence,
        explanation=f"Resets were sent to {sent_to} with {tried}; none was answered. An "
        f"OpenVPN 2.6 server answers only a reset whose {directive} authentication verifies "
        "with its own key, and drops everything else without a reply. When no variant is "
        f"answered, the {directive} key file differs from the server's — or a firewall drops "
        "the port, which looks the same from the client (port.reachable). OpenVPN reports "
        "neither: only 'TLS key negotiation failed to occur within 60 seconds'; the server "
        f"logs '{'tls-crypt unwrap error' if directive == 'tls-crypt' else 'packet HMAC authentication failed'}' "  # noqa: E501
        "for each of our packets if they reach it.",
        fix=f"Copy the key file of the server's '{directive}' line to the client and point "
        f"{where(o, directive)} at it (compare 'sha256sum' of both files); if they are "
        "identical, open the port in the server's firewall (see port.reachable).")


async def run_keys(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(KEYS_ID, "skipped: the config did not parse")
    if not o.remotes:
        return skip(KEYS_ID, "skipped: the config has no 'remote' line")
    try:
        variants = key_variants(o)
    except (ConfigError, ProtocolError) as exc:
        return skip(KEYS_ID, f"skipped: the tls-auth/tls-crypt key cannot be used ({exc})")
    targets, unresolved = await resolve_targets(o, ctx.results.get("dns.remote"))
    if not targets:
        return skip(KEYS_ID, "skipped: no remote resolved (see dns.remote)",
                    unresolved=unresolved)
    target = targets[0]
    p2p = checks_static.p2p_keys_result(ctx, KEYS_ID)
    if p2p is not None:  # TLS peer-to-peer: do not disturb the one session it serves
        return p2p
    silent = nothing_answered(ctx, target)
    if silent is not None:
        return skip(KEYS_ID, f"not run: nothing answered on the port ({silent}), so no key "
                    "can be checked (see port.reachable)", sent_to=target.describe(),
                    port_state=ctx.results["port.reachable"].evidence.get("state"))
    found: dict[int, Exchange] = {}

    async with trio.open_nursery() as nursery:

        async def one(i: int, wrap: ControlWrap, label: str) -> None:
            found[i] = await reset_exchange(target, wrap, wrap_label=label, netns=ctx.netns,
                                            attempts=VARIANT_ATTEMPTS,
                                            interval=VARIANT_INTERVAL)
            if i == 0 and found[i].answered is not None:
                nursery.cancel_scope.cancel()  # the configured key works: variants moot

        for i, (_vid, text, wrap) in enumerate(variants):
            nursery.start_soon(one, i, wrap, text)
    evidence = [_variant_evidence(vid, text, found[i]) if i in found else
                {"variant": vid, "wrap": text, "answered": None, "state": "not_probed"}
                for i, (vid, text, _w) in enumerate(variants)]
    return judge_keys(o, evidence, target.describe())


# ---------------------------------------------------------------------------- tls.handshake


def classify_failure(failure: ev.HandshakeFailed | None, drops: dict[str, int],
                     last_phase: str | None, link_error: str | None,
                     silence: dict[str, Any] | None = None) -> tuple[str, str, str]:
    """(cause, stalled phase, detail) from what the session reported.

    A timeout inside TLS is refined from how the server fell silent: an OpenVPN server that
    rejects the client certificate logs VERIFY ERROR and drops the client instance without
    sending the TLS alert (observed with 2.6.14), so the client sees the server stop answering
    — not even acknowledging — right after its certificate went out (with TLS 1.3 after the
    client already considers TLS complete). Silence right after the ClientHello means the
    server refused the ClientHello itself (TLS version or cipher)."""
    if failure is None:
        phase = last_phase or ev.PHASE_RESET_SENT
        cause = "no_reset_reply" if phase == ev.PHASE_RESET_SENT else "timeout"
        detail = link_error or "the probe's time ran out before the handshake finished"
    else:
        cause, phase, detail = failure.cause, failure.phase, failure.detail
    if cause in ("no_reset_reply", "timeout") and drops.get("hmac_mismatch"):
        cause = "hmac_mismatch"
        detail = (f"{drops['hmac_mismatch']} packet(s) from the server failed tls-auth/"
                  f"tls-crypt authentication; {detail}")
    elif (cause == "timeout" and phase in TLS_PHASES and silence is not None
          and silence["server_silent_s"] >= SILENT_AFTER and silence["sent_after_last_reply"]):
        if silence["received_after_tls_started"] == 0:
            cause = "tls_alert"
            detail = ("the server stopped answering right after our ClientHello: it refused "
                      "the TLS version or ciphers we offer")
        else:
            cause = "peer_rejected_cert"
            detail = ("the server stopped answering (not even acknowledging our packets) "
                      "right after it received our certificate; an OpenVPN server does this "
                      "when it rejects the client certificate")
    return cause, phase, detail


def _cert_facts(o: Options) -> dict[str, Any]:
    if o.cert is None:
        return {}
    try:
        cert = x509.load_pem_x509_certificate(o.cert.read_text().encode())
    except (ConfigError, ValueError):
        return {}
    now = datetime.now(UTC)
    return {"client_cert_subject": cert.subject.rfc4514_string(),
            "client_cert_issuer": cert.issuer.rfc4514_string(),
            "client_cert_not_after": cert.not_valid_after_utc.isoformat(),
            "client_cert_expired": cert.not_valid_after_utc < now,
            "client_cert_not_yet_valid": cert.not_valid_before_utc > now}


def _explain(o: Options, failure: tuple[str, str, str], sent_to: str, *,
             ctx: DoctorContext, facts: dict[str, Any]) -> tuple[str, str, str]:
    """(summary, explanation, fix) for a failed handshake; ``failure`` is (cause, stalled
    phase, detail) from :func:`classify_failure`."""
    cause, phase, detail = failure
    stalled = PHASE_LABELS.get(phase, phase)
    why60 = ("OpenVPN keeps waiting for the handshake to progress until hand-window (60 s) "
             "expires and then only says 'TLS key negotiation failed to occur within 60 "
             "seconds (check your network connectivity)'")
    cert = where(o, "cert")
    cert_file = o.cert.describe() if o.cert is not None else "the certificate"
    if cause == "no_reset_reply":
        return (f"no answer to the reset from {sent_to}",
                f"The server never answered our reset. {why60}. The cause is on the path or "
                "in the control-channel key: see port.reachable and tls.keys.",
                "Fix what port.reachable / tls.keys report: open the server's port in its "
                "firewall, or use the server's tls-auth/tls-crypt key.")
    if cause == "hmac_mismatch":
        directive = "tls-crypt" if o.tls_crypt is not None else "tls-auth"
        return (f"the server's packets fail {directive} authentication (stalled after: "
                f"{stalled})",
                f"Packets come back from the server but fail {directive} authentication with "
                f"this config's key, so they are dropped. {why60}. ({detail})",
                f"Use the server's key file in {where(o, directive)} (and for tls-auth the "
                "opposite key-direction of the server's); see tls.keys.")
    if cause == "peer_rejected_cert":
        expired = facts.get("client_cert_expired") or "EXPIRED" in detail.upper()
        pki = ctx.results.get("pki.validity")
        if pki is not None and pki.status == "fail":
            expired = True
        if expired:
            when = facts.get("client_cert_not_after", "")
            reason = (f"this client's certificate ({cert_file}) has expired"
                      f"{f' (not after {when})' if when else ''}")
            fix = (f"Issue a new client certificate from the server's CA and point 'cert' "
                   f"({cert}) and 'key' at it; check the client's clock if the date looks "
                   "right.")
        elif facts.get("client_cert_not_yet_valid"):
            reason = f"this client's certificate ({cert_file}) is not valid yet"
            fix = "Fix the client's or the server's clock, or issue a certificate valid now."
        else:
            issuer = facts.get("client_cert_issuer")
            reason = (f"the server does not trust this client's certificate ({cert_file}"
                      f"{f', issued by {issuer}' if issuer else ''})")
            fix = (f"Use a client certificate signed by the server's CA: 'cert' ({cert}) and "
                   f"'key' must come from the CA named by 'ca' in the server's config.")
        said = "TLS alert" in detail
        return ("the server rejected our certificate"
                + (f": {detail}" if said else " (it went silent once it had received it)"),
                f"The server refused the TLS handshake at '{stalled}': {reason}. With TLS 1.3 "
                "the client's certificate is checked after the client considers its side "
                "done, so the client only sees a TLS alert (or nothing) and OpenVPN reports a "
                "TLS error or 'TLS key negotiation failed to occur within 60 seconds'; the "
                "real reason is only in the server's log ('VERIFY ERROR').",
                fix)
    if cause == "no_common_cipher":
        return (f"no common data-channel cipher: {detail}",
                f"TLS succeeded, but client and server share no data cipher ({detail}).",
                f"Add a cipher the server offers to 'data-ciphers' ({where(o, 'data-ciphers')})"
                ", e.g. 'data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305'.")
    if cause == "auth_failed":
        return (f"the server refused the login: AUTH_FAILED{f' ({detail})' if detail else ''}",
                "The handshake completed, but the server rejected the username/password (or "
                "the client certificate's account) with AUTH_FAILED.",
                f"Check the credentials file of 'auth-user-pass' ({where(o, 'auth-user-pass')})"
                " and the account on the server.")
    if cause == "tls_alert":
        return (f"the TLS handshake failed: {detail}",
                f"The TLS handshake stopped at '{stalled}' with: {detail}. {why60} on the "
                "other side.",
                f"Compare 'tls-version-min'/'tls-cipher' ({o.config_path.name}) with the "
                "server's, and check the certificates with the pki.* checks.")
    return (f"the handshake stalled after '{stalled}' ({cause}): {detail}",
            f"The handshake made no progress after '{stalled}'. {why60}.",
            "Look at the server's log for the time of this probe; check the pki.* and "
            "config.* results.")


_VERIFY_TAIL = (" The client aborts the handshake and restarts; the server only sees the "
                "handshake stop and reports 'TLS key negotiation failed to occur within 60 "
                "seconds'.")


async def _run_probe(config: SessionConfig, target: Target, netns: str | None,
                     budget: float) -> SessionProbe:
    async with SessionProbe(config, target, netns) as probe:
        probe.start()
        await probe.run_until(lambda: probe.saw(ev.DataChannelReady)
                              or probe.failure() is not None or server_gave_up(probe),
                              trio.current_time() + budget)
        await probe.say_goodbye()
    return probe


def _auth_failed_reason(probe: SessionProbe) -> str | None:
    return next((e.reason for e in probe.events if isinstance(e, ev.AuthFailed)), None)


async def _credential_probe(config: SessionConfig, target: Target, netns: str | None,
                            budget: float) -> dict[str, Any]:
    """Repeat the handshake with placeholder credentials: does the server get past key
    method 2 once a username/password is there? It waits as long as the first probe
    (GIVE_UP_AFTER of silence), so that a slow auth backend is not taken for silence."""
    probe = await _run_probe(dataclasses.replace(config, username=PLACEHOLDER_USER,
                                                 password=PLACEHOLDER_PASSWORD),
                             target, netns, budget)
    reached = [p["phase"] for p in probe.phases]
    answer = None
    if probe.saw(ev.AuthFailed):
        reason = _auth_failed_reason(probe)
        answer = f"AUTH_FAILED,{reason}" if reason else "AUTH_FAILED"
    elif probe.saw(ev.DataChannelReady):
        answer = "PUSH_REPLY (the placeholder was accepted)"
    elif ev.PHASE_KEY_METHOD_RECEIVED in reached:
        answer = "the server's key method 2"
    return {"username": PLACEHOLDER_USER, "answer": answer,
            "last_phase": reached[-1] if reached else None}


def server_clock(probe: SessionProbe, config: SessionConfig) -> ClockReading | None:
    """The server's clock from the timestamp of its first tls-auth/tls-crypt packet (the Unix
    time its session started), with our Unix time when it arrived; None without a wrapping."""
    if isinstance(config.wrap, NoWrap):
        return None
    offset = unix_offset()
    for at, data in probe.rx_first:
        try:
            stamp = config.wrap.unwrap(data).timestamp
        except ProtocolError:
            continue
        if stamp:
            return ClockReading(stamp, at + offset)
    return None


async def fetch_server_certificate(config: SessionConfig, target: Target, netns: str | None,
                                   budget: float
                                   ) -> tuple[x509.Certificate | None, ClockReading | None]:
    """A second handshake that accepts any server certificate, to read the one the server
    sends (the first handshake refused it). It stops as soon as TLS completes; the verdict on
    the certificate is deferred and never given, so our key method (with any username and
    password) never goes to a server this config does not trust."""
    loose = dataclasses.replace(config, verification=PeerVerification(),
                                defer_peer_verdict=True)
    loose.tls_context.verify_mode = ssl.CERT_NONE  # this probe's own, fresh context
    async with SessionProbe(loose, target, netns) as probe:
        probe.start()
        await probe.run_until(lambda: probe.saw(ev.TlsHandshakeComplete)
                              or probe.failure() is not None,
                              trio.current_time() + budget)
    done = next((e for e in probe.events if isinstance(e, ev.TlsHandshakeComplete)), None)
    return _peer_cert(done), server_clock(probe, config)


def _peer_cert(event: ev.TlsHandshakeComplete | None) -> x509.Certificate | None:
    if event is None or not event.peer.der:
        return None
    try:
        return x509.load_der_x509_certificate(event.peer.der)
    except ValueError:
        return None


async def _verify_failure(ctx: DoctorContext, o: Options, target: Target, *, budget: float,
                          clock: ClockReading | None, evidence: dict[str, Any]
                          ) -> CheckResult:
    """This client refused the server's certificate: fetch it and name the cause."""
    try:
        fetched, fetch_clock = await fetch_server_certificate(
            probe_config(o, hand_window=budget), target, ctx.netns, budget)
    except (ConfigError, ProtocolError, OSError):
        fetched, fetch_clock = None, None
    diagnosis = diagnose_server_cert(o, evidence["detail"], fetched, datetime.now(UTC),
                                     clock or fetch_clock)
    evidence.update(diagnosis.evidence)
    return problem(HANDSHAKE_ID, "fail", diagnosis.summary,
                   explanation=diagnosis.explanation + _VERIFY_TAIL, fix=diagnosis.fix,
                   **evidence)


async def the_handshake(ctx: DoctorContext) -> Handshake:
    """The doctor run's one handshake (tunnel_session.py): the broker's on ``ctx.tunnel``,
    whose session the data-channel checks then lease, or a private one said goodbye to at
    once when the context has no broker."""
    if ctx.tunnel is not None:
        return await ctx.tunnel.handshake(ctx)
    async with TunnelBroker() as broker:
        return await broker.handshake(ctx)


def _unavailable(exc: TunnelUnavailable) -> CheckResult:
    evidence = {k: v for k, v in exc.evidence.items() if k != "tunnel_unavailable"}
    if exc.cause == "no_inputs":
        return skip(HANDSHAKE_ID, f"skipped: {exc.summary}", **evidence)
    if exc.cause == "config":
        return skip(HANDSHAKE_ID, f"skipped: {exc.summary}; see config.files and pki.*",
                    **evidence)
    return CheckResult(
        HANDSHAKE_ID, "error", f"no handshake could be attempted: {exc.summary}",
        {"cause": exc.cause, **evidence},
        "The handshake with the server could not even be started, so the TLS setup was not "
        "verified.", "Run 'trivpn doctor' again; if it persists, report it as a trivpn bug with "
        "this evidence.")


async def run_handshake(ctx: DoctorContext) -> CheckResult:
    # One handshake per doctor run: this check reports the one whose session the broker then
    # keeps for tunnel.* (tunnel_session.py). The second handshake with placeholder
    # credentials (_credential_probe) and the one fetching the server's certificate
    # (fetch_server_certificate) stay separate: they only run after this handshake failed (no
    # session to share or to drop), one tests other credentials than the config's, the other
    # accepts a server certificate the config does not trust, so neither may become the
    # session the data-channel checks use.
    try:
        hs = await the_handshake(ctx)
    except TunnelUnavailable as exc:
        return _unavailable(exc)
    o, target, config, budget = hs.options, hs.target, hs.config, hs.budget
    prompted, started, probe = hs.prompted, hs.started, hs.probe
    session = probe.session
    assert session is not None
    phases = probe.phases
    evidence: dict[str, Any] = {
        "sent_to": target.describe(), "proto": target.transport, "timeline": phases,
        "hand_window_s": config.hand_window, "packets_sent": probe.sent_packets,
        "packets_received": probe.received_packets, "drops": dict(session.drops),
        "link_error": probe.link_error,
    }
    # --- compat (compat.occ): the options strings of both sides and what the push set ---
    evidence["occ"] = occ_evidence(session, config.options_string)
    tls_event = next((e for e in probe.events if isinstance(e, ev.TlsHandshakeComplete)), None)
    if tls_event is not None:
        evidence["tls"] = tls_event.description
        evidence["server_cert_subject"] = tls_event.peer.subject
        server_cert = _peer_cert(tls_event)
        if server_cert is not None:
            evidence["server_cert"] = cert_facts(server_cert)
    clock = server_clock(probe, config)
    if clock is not None:
        evidence["server_clock_skew_s"] = clock.skew_s
    if probe.saw(ev.DataChannelReady) and session.pushed is not None:
        pushed = session.pushed
        evidence.update(cipher=session.cipher, peer_id=session.peer_id,
                        ifconfig=(f"{pushed.ifconfig.local} {pushed.ifconfig.remote_or_netmask}"
                                  if pushed.ifconfig else None),
                        topology=pushed.topology,
                        pushed_routes=[f"{r.network} {r.netmask or '255.255.255.255'}"
                                       for r in pushed.routes if not isinstance(r.network, str)])
        total = phases[-1]["t"] if phases else 0.0
        return ok(HANDSHAKE_ID, f"handshake with {target.describe()} complete in {total:.2f} s"
                  f" ({evidence.get('tls', 'TLS')}, data cipher {session.cipher})", **evidence)
    last = phases[-1]["phase"] if phases else None
    silence = probe.silence()
    evidence["server_silence"] = silence
    cause, phase, detail = classify_failure(probe.failure(), dict(session.drops), last,
                                            probe.link_error, silence)
    if cause == "auth_failed" and prompted:
        diag = diagnose_prompted(o, _auth_failed_reason(probe))
        evidence.update(stalled_phase=phase, cause=diag.cause, detail=detail, **diag.evidence)
        # not a problem of the setup: the part the doctor can check passed (a skip, so that a
        # healthy profile with prompted credentials gets no warning)
        return CheckResult(HANDSHAKE_ID, "skip", diag.summary, evidence, diag.explanation,
                           diag.fix)
    if cause == "auth_failed":
        diag = diagnose_auth_failed(o, _auth_failed_reason(probe))
        evidence.update(stalled_phase=phase, cause=diag.cause, detail=detail, **diag.evidence)
        return problem(HANDSHAKE_ID, "fail", diag.summary, explanation=diag.explanation,
                       fix=diag.fix, **evidence)
    if (cause == "peer_rejected_cert" and phase == ev.PHASE_KEY_METHOD_SENT
            and o.auth_user_pass is None):
        # Under TLS 1.3 a server refusing our certificate and one wanting a username/password
        # both fall silent right after our key method 2: ask again with placeholder ones.
        left = max(1.0, budget - (trio.current_time() - started))
        second = await _credential_probe(config, target, ctx.netns, left)
        if second["answer"] is not None:
            diag = diagnose_auth_required(o, second)
            evidence.update(stalled_phase=phase, cause=diag.cause, detail=detail,
                            **diag.evidence)
            return problem(HANDSHAKE_ID, "fail", diag.summary, explanation=diag.explanation,
                           fix=diag.fix, **evidence)
        evidence["credential_probe"] = second
    if cause in ("cert_verify_failed", "cert_revoked"):
        evidence.update(stalled_phase=phase, cause=cause, detail=detail)
        left = max(1.0, budget - (trio.current_time() - started))
        return await _verify_failure(ctx, o, target, budget=left, clock=clock,
                                     evidence=evidence)
    facts = _cert_facts(o) if cause == "peer_rejected_cert" else {}
    evidence.update(stalled_phase=phase, cause=cause, detail=detail, **facts)
    summary, explanation, fix = _explain(o, (cause, phase, detail), target.describe(),
                                         ctx=ctx, facts=facts)
    if "credential_probe" in evidence:
        explanation += (" A second handshake with a placeholder username/password stalled the "
                        "same way, so this is not a missing 'auth-user-pass'.")
    return problem(HANDSHAKE_ID, "fail", summary, explanation=explanation, fix=fix,
                   **evidence)


CHECKS: tuple[Check, ...] = (
    Check(KEYS_ID, run_keys, roles=("client",), depends_on=("dns.remote",),
          after=("port.reachable",), needs_tls=True),
    Check(HANDSHAKE_ID, run_handshake, roles=("client",), depends_on=("port.reachable",),
          needs_tls=True),
    checks_certs.SERVER_CERT,
)

__all__ = ["CAUSES", "CHECKS", "GIVE_UP_AFTER", "classify_failure", "handshake_budget",
           "judge_keys", "key_variants", "remote_where"]
