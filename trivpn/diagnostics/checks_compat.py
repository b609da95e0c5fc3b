"""``compat.versions`` and ``compat.occ``: will other OpenVPN versions and clients read this
profile the way OpenVPN 2.6 does, and does the server's configuration agree with ours?

``compat.versions`` is offline: it reads the profile's directives (as written, includes
expanded, even when the config does not parse) and evaluates the rule table of
:mod:`trivpn.diagnostics.compat_rules`. Only what OpenVPN 2.6 itself refuses, ignores or reads
differently is a warning; what OpenVPN 2.4/2.5, OpenVPN 3, NetworkManager-openvpn or OpenVPN for
Android do differently is listed as notes (status ok), each with its source.

``compat.occ`` runs after a successful ``tls.handshake`` (and after ``tunnel.traffic``, whose
result it reads): in key method 2 each side sends its options string
(OpenVPN src/openvpn/options.c, options_string()); ``tls.handshake`` records the server's and
ours. OpenVPN 2.6 compares them (options_cmp_equal_safe()) but reports differences only at verb
7 (options_warning_safe_scan2(), D_SHOW_OCC). This check compares them item by item and
explains the differences that break or change the tunnel: compression framing, fragment,
dev-type, tun-mtu, and cipher/auth where they are not negotiated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trivpn.config import ConfigError
from trivpn.config.reader import Directive, read_config
from trivpn.diagnostics.compat_rules import (
    ANY,
    RULES,
    TARGETS,
    WARN_EFFECTS,
    WARN_TARGET,
    Rule,
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

VERSIONS_ID = "compat.versions"
OCC_ID = "compat.occ"
DEFAULT_DATA_CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")  # 2.6, options.c
AEAD = frozenset({"AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305"})
_COMPRESSION_ON = re.compile(r"^(lzo|lz4|lz4-v2|yes|adaptive)?$", re.I)

# ----------------------------------------------------------------------------- the profile


@dataclass(frozen=True, slots=True)
class Profile:
    """The directives as written, with what the rule conditions need to know."""

    directives: tuple[Directive, ...]
    role: str

    def last(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[-1] if found else None

    def has(self, name: str) -> bool:
        return any(d.name == name for d in self.directives)

    @property
    def negotiates(self) -> bool:
        """Client (pull) or server mode: where 2.6 negotiates the data cipher."""
        return any(d.name in ("client", "pull", "server", "server-bridge")
                   or (d.name == "mode" and d.args[:1] == ("server",))
                   for d in self.directives)

    def data_ciphers(self) -> tuple[str, ...]:
        found = [d for d in self.directives if d.name in ("data-ciphers", "ncp-ciphers")]
        if not found or not found[-1].args:
            return DEFAULT_DATA_CIPHERS
        return tuple(c.lstrip("?").upper() for c in found[-1].args[0].split(":") if c)


def _cipher_not_negotiated(p: Profile, d: Directive | None) -> bool:
    return (d is not None and bool(d.args) and p.negotiates
            and d.args[0].upper() not in p.data_ciphers())


def _compression_without_allow(p: Profile, d: Directive | None) -> bool:
    if d is None:
        return False
    arg = d.args[0] if d.args else ""
    if d.name == "compress" and arg.lower() in ("", "stub", "stub-v2", "migrate"):
        return False
    if d.name == "comp-lzo" and arg.lower() == "no":
        return False
    allow = p.last("allow-compression")
    return bool(_COMPRESSION_ON.match(arg)) and not (
        allow is not None and allow.args[:1] == ("yes",))


def _no_fallback_cipher(p: Profile, d: Directive | None) -> bool:
    return (p.role == "client" and p.negotiates and not p.has("cipher")
            and not p.has("data-ciphers-fallback"))


def _tls_1_3_possible(p: Profile, d: Directive | None) -> bool:
    top = p.last("tls-version-max")
    return top is None or not top.args or top.args[0] not in ("1.0", "1.1", "1.2")


def _inline_block(p: Profile, d: Directive | None) -> bool:
    return d is not None and d.inline is not None


Condition = Callable[[Profile, Directive | None], bool]
CONDITIONS: dict[str, Condition] = {
    "cipher_not_negotiated": _cipher_not_negotiated,
    "compression_without_allow": _compression_without_allow,
    "no_fallback_cipher": _no_fallback_cipher,
    "inline_block": _inline_block,
    "tls_1_3_possible": _tls_1_3_possible,
}


def _matches(rule: Rule, p: Profile, d: Directive) -> bool:
    if rule.directives == (ANY,):
        if d.name in rule.except_:
            return False
        if rule.when is None and d.inline is not None:
            return False  # inline blocks have their own rule
    elif d.name not in rule.directives:
        return False
    if rule.args is not None and not re.search(rule.args, " ".join(d.args), re.I):
        return False
    return rule.when is None or CONDITIONS[rule.when](p, d)


def _finding(rule: Rule, p: Profile, d: Directive | None) -> dict[str, Any]:
    fields = {"name": d.name if d else "", "arg": " ".join(d.args) if d else "",
              "ciphers": ":".join(p.data_ciphers())}
    return {"rule": rule.id, "target": TARGETS[rule.target], "directive": fields["name"] or None,
            "where": f"{d.path}:{d.line}" if d else None, "effect": rule.effect,
            "basis": rule.basis, "says": rule.says.format(**fields),
            "fix": rule.fix.format(**fields), "source": rule.source.cite(),
            "severity": rule.severity or (
                "warn" if rule.target == WARN_TARGET and rule.effect in WARN_EFFECTS
                else "note")}


def lint(directives: Iterable[Directive], role: str,
         rules: Iterable[Rule] = RULES) -> list[dict[str, Any]]:
    """Every rule that applies to the profile, in rule order then line order."""
    p = Profile(tuple(directives), role)
    found = []
    for rule in rules:
        if role not in rule.roles:
            continue
        if not rule.directives:
            if rule.when is not None and CONDITIONS[rule.when](p, None):
                found.append(_finding(rule, p, None))
            continue
        found += [_finding(rule, p, d) for d in p.directives if _matches(rule, p, d)]
    return found


def _notes_summary(notes: list[dict[str, Any]]) -> str:
    by_target: dict[str, dict[str, int]] = {}
    for n in notes:
        counts = by_target.setdefault(n["target"], {})
        counts[n["effect"]] = counts.get(n["effect"], 0) + 1
    return "; ".join(f"{t}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
                     for t, c in by_target.items())


async def run_versions(ctx: DoctorContext) -> CheckResult:
    if ctx.config_path is None:
        return skip(VERSIONS_ID, "skipped: no config file")
    try:
        source = read_config(ctx.config_path)
    except ConfigError as exc:
        return skip(VERSIONS_ID, f"skipped: the config cannot be read ({exc})")
    findings = lint(source.directives, ctx.role)
    warns = [f for f in findings if f["severity"] == "warn"]
    notes = [f for f in findings if f["severity"] == "note"]
    evidence = {"findings": findings, "notes_by_target": _notes_summary(notes) or None}
    if not warns:
        tail = (f"; notes for other versions/clients — {_notes_summary(notes)} (details: --json)"
                if notes else "; no differences found for OpenVPN 2.4/2.5, OpenVPN 3, "
                "NetworkManager-openvpn or OpenVPN for Android")
        return ok(VERSIONS_ID, "OpenVPN 2.6 reads this profile as written" + tail, **evidence)
    lines = [f"{w['where'] or ctx.config_path}: {w['says']}" for w in warns]
    return problem(
        VERSIONS_ID, "warn",
        f"OpenVPN 2.6 refuses, ignores or reads differently {len(warns)} line(s): "
        + "; ".join(f"'{w['directive']}' ({w['effect']})" for w in warns), **evidence,
        explanation=" ".join(f"{line}." for line in lines)
        + (f" Notes for other versions/clients: {_notes_summary(notes)}." if notes else ""),
        fix=" ".join(f"{w['where']}: {w['fix']}" for w in warns))


# ----------------------------------------------------------------------------- compat.occ


def parse_options_string(text: str) -> dict[str, str]:
    """``V4,dev-type tun,link-mtu 1559,...`` → {"V4": "", "dev-type": "tun", ...} (the first
    occurrence of an item wins, as options_string_extract_option() reads it)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item:
            continue
        key, _, value = item.partition(" ")
        out.setdefault(key, value)
    return out


def expected_remote(local: Mapping[str, str]) -> dict[str, str]:
    """What the server's string should say when it matches ours: OpenVPN's remote=true form
    (options_string(): the peer's role, keydir and TCP side flipped)."""
    out = dict(local)
    for ours, theirs in (("tls-client", "tls-server"), ("tls-server", "tls-client")):
        if ours in local:
            del out[ours]
            out[theirs] = ""
            break
    if local.get("keydir") in ("0", "1"):
        out["keydir"] = "1" if local["keydir"] == "0" else "0"
    proto = local.get("proto", "")
    if proto.endswith("_CLIENT"):
        out["proto"] = proto.replace("_CLIENT", "_SERVER")
    elif proto.endswith("_SERVER"):
        out["proto"] = proto.replace("_SERVER", "_CLIENT")
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    item: str
    ours: str | None
    server: str | None
    severity: str  # "fail", "warn" or "note"
    meaning: str
    fix: str

    def as_evidence(self) -> dict[str, Any]:
        return {"item": self.item, "ours": self.ours, "server": self.server,
                "severity": self.severity, "meaning": self.meaning}


def _value(value: str | None) -> str:
    return "absent" if value is None else (value or "present")


def _show(key: str, value: str | None) -> str:
    if value is None:
        return "absent"
    return f"'{key} {value}'" if value else f"'{key}'"


def compare(occ: Mapping[str, Any], *, traffic: str | None,
            config_name: str) -> list[Mismatch]:
    """The differences between the server's options string and the one our config implies,
    with what each means; ``traffic`` is the status of tunnel.traffic when it ran."""
    ours = expected_remote(parse_options_string(occ["local"]))
    server = parse_options_string(occ["server"])
    negotiated = (occ.get("negotiated_cipher") or "").upper() or None
    out: list[Mismatch] = []
    keys = list(dict.fromkeys([*server, *ours]))
    for key in keys:
        a, b = ours.get(key), server.get(key)
        if a == b:
            continue
        m = _explain(key, a, b, occ=occ, negotiated=negotiated, traffic=traffic,
                     config_name=config_name)
        if m is not None:
            out.append(m)
    if ("comp-lzo" in ours and "comp-lzo" in server and traffic is not None
            and traffic != "ok" and not occ.get("pushed_compression")):
        out.append(Mismatch(
            "comp-lzo", ours["comp-lzo"], server["comp-lzo"], "warn",
            "both sides have compression framing, but the options string does not say which: "
            "'comp-lzo' (any form) and 'compress' (lzo, lz4, stub) frame packets differently "
            "(OpenVPN's manual: the 'stub' option is not compatible with 'comp-lzo no'), and "
            "tunnel.traffic failed",
            f"Compare the compression lines of {config_name} and the server's config and use "
            "the same form on both sides (best: remove both, the server first pushing "
            "'compress stub-v2' to old clients)."))
    return out


def _explain(key: str, ours: str | None, server: str | None, *, occ: Mapping[str, Any],
             negotiated: str | None, traffic: str | None,
             config_name: str) -> Mismatch | None:
    shown = f"server {_show(key, server)}, this config {_show(key, ours)}"
    if key == "comp-lzo":
        pushed = occ.get("pushed_compression")
        if pushed is not None:
            return Mismatch(key, ours, server, "note", f"{shown}; the server pushed "
                            f"compression framing '{pushed}', which this client adopted", "")
        if server is not None:  # the server frames, we do not, and it pushed nothing
            broken = traffic is not None and traffic != "ok"
            return Mismatch(
                key, ours, server, "fail" if broken else "warn",
                f"{shown}: the server has compression configured ('comp-lzo' or 'compress' "
                "in its config) but did not push it, and this config has none. The server "
                "frames data packets for compression and this client does not: with "
                "'comp-lzo' or 'compress lz4'/'lzo' every data packet carries a compression "
                "byte, so the server drops ours, which lack it (for 'comp-lzo' its log says "
                "'Bad LZO decompression header byte'), and this client does not strip the "
                "server's; with 'compress lz4-v2'/'stub-v2' only the packets the server "
                "actually compresses (with 'allow-compression yes') break"
                + (" — which is why tunnel.traffic failed" if broken else ""),
                "Make both sides agree: best, remove 'compress'/'comp-lzo' from the server's "
                "config; or have the server push it (push \"compress stub-v2\"), or add the "
                f"server's compression line to {config_name}.")
        return Mismatch(
            key, ours, server, "warn",
            f"{shown}: this config frames data packets for compression and the server does "
            "not, so the server does not strip our compression byte",
            f"Remove 'compress'/'comp-lzo' from {config_name} (or add the same line to the "
            "server).")
    if key == "mtu-dynamic":
        return Mismatch(
            key, ours, server, "fail",
            f"{shown}: only one side uses 'fragment'; every data packet of that side carries "
            "a fragment header the other side does not read",
            f"Use the same 'fragment' value on both sides (in {config_name} and the server), "
            "or remove it from both and use 'mssfix'.")
    if key == "dev-type":
        return Mismatch(
            key, ours, server, "fail",
            f"{shown}: one side carries Ethernet frames (tap), the other IP packets (tun); no "
            "packet makes sense to the other side",
            f"Set 'dev {server}' in {config_name} to match the server.")
    if key == "tun-mtu":
        pushed = occ.get("pushed_tun_mtu")
        limit = occ.get("tun_mtu_limit")
        if pushed is not None and str(pushed) == server and (limit is None or pushed <= limit):
            return Mismatch(key, ours, server, "note",
                            f"{shown}; the server pushed 'tun-mtu {pushed}', which this client "
                            "uses", "")
        if pushed is not None and limit is not None and pushed > limit:
            return Mismatch(
                key, ours, server, "warn",
                f"{shown}: the server pushed 'tun-mtu {pushed}', more than this client accepts "
                f"(at most {limit}: tun-mtu-max, default 1600), so the client caps its MTU at "
                f"{limit} ('Server-pushed tun-mtu is too large, please add tun-mtu-max "
                f"{pushed} in the client configuration') and the server warns 'reported "
                "maximum MTU from client ... is lower than MTU used on the server'; packets "
                f"between {limit} and {pushed} bytes sent by the server do not fit this "
                "client's tun device",
                f"Add 'tun-mtu-max {pushed}' to {config_name}, or lower 'tun-mtu' on the "
                "server.")
        return Mismatch(
            key, ours, server, "warn",
            f"{shown}: the two tun devices have different MTUs, so packets sized for the "
            "larger one do not fit the smaller one; small packets (pings) pass while large "
            "ones (TCP transfers, big DNS answers) can stall",
            f"Set 'tun-mtu {server}' in {config_name} (the server's value), or have the server "
            f"push it (push \"tun-mtu {server}\"; OpenVPN 2.6 clients accept it up to "
            "'tun-mtu-max').")
    if key == "cipher":
        if negotiated is not None and occ.get("pushed_cipher"):
            return Mismatch(key, ours, server, "note",
                            f"{shown}; the data cipher was negotiated ({negotiated}), so "
                            "'cipher' does not matter", "")
        return Mismatch(
            key, ours, server, "warn",
            f"{shown}: the server did not negotiate a cipher (an OpenVPN 2.3 server or "
            "'ncp-disable'), so both sides must be configured with the same 'cipher'",
            f"Put the server's cipher into 'data-ciphers-fallback' in {config_name}.")
    if key == "auth":
        if negotiated is not None and negotiated in AEAD:
            return Mismatch(key, ours, server, "note",
                            f"{shown}; the data cipher {negotiated} is AEAD and uses no "
                            "separate HMAC, so 'auth' only matters for tls-auth", "")
        return Mismatch(
            key, ours, server, "fail",
            f"{shown}: with the CBC data cipher {negotiated or '(not negotiated)'} each data "
            "packet is authenticated with the 'auth' digest, and it is not negotiated: each "
            "side rejects the other's packets",
            f"Set 'auth {server}' in {config_name} (the server's value).")
    if key == "link-mtu":
        return Mismatch(key, ours, server, "note",
                        f"{shown}: link-mtu follows from cipher, auth, compression and "
                        "fragment; OpenVPN 2.6 does not use it with a negotiated cipher", "")
    if key in ("keydir", "tls-auth", "proto", "key-method", "keysize", "V4", "tls-client",
               "tls-server"):
        return Mismatch(key, ours, server, "note",
                        f"{shown}: OpenVPN 2.6 does not act on this difference "
                        "(options_warning_safe_scan2() skips it, or it follows from the "
                        "negotiated cipher)", "")
    return Mismatch(key, ours, server, "note", f"{shown}", "")


async def run_occ(ctx: DoctorContext) -> CheckResult:
    handshake = ctx.results.get("tls.handshake")
    occ = handshake.evidence.get("occ") if handshake is not None else None
    if not occ or not occ.get("server"):
        return skip(OCC_ID, "skipped: no options string from the server (the handshake did "
                    "not get to the server's key method 2; see tls.handshake)")
    traffic = ctx.results.get("tunnel.traffic")
    name = ctx.config_path.name if ctx.config_path is not None else "the config"
    if ctx.options is not None:  # the largest pushed tun-mtu this client takes (tun-mtu-max)
        o = ctx.options
        occ = {**occ, "tun_mtu_limit": max(1600, o.tun_mtu, o.tun_mtu_max)}
    found = compare(occ, traffic=traffic.status if traffic is not None else None,
                    config_name=name)
    cipher_note = _cipher_directive_note(ctx, occ)
    evidence: dict[str, Any] = {
        "server_options": occ["server"], "our_options": occ["local"],
        "expected_server_options": ",".join(
            k if not v else f"{k} {v}"
            for k, v in expected_remote(parse_options_string(occ["local"])).items()),
        "negotiated_cipher": occ.get("negotiated_cipher"),
        "mismatches": [m.as_evidence() for m in found]}
    bad = [m for m in found if m.severity in ("fail", "warn")]
    if cipher_note is not None:
        evidence["cipher_directive"] = cipher_note[0]
    if not bad and cipher_note is None:
        notes = f" ({len(found)} difference(s) OpenVPN 2.6 does not act on)" if found else ""
        return ok(OCC_ID, "the server's options string agrees with this config" + notes,
                  **evidence)
    status: Status = "fail" if any(m.severity == "fail" for m in bad) else "warn"
    said = [m.meaning for m in bad] + ([cipher_note[1]] if cipher_note else [])
    fixes = [m.fix for m in bad] + ([cipher_note[2]] if cipher_note else [])
    summary = ("options differ from the server's: " + ", ".join(
        f"{m.item} (server {_value(m.server)}, ours {_value(m.ours)})" if m.ours != m.server
        else f"{m.item} (both sides, in forms that may differ)" for m in bad)) if bad else (
        f"'cipher {cipher_note[0]['configured']}' is not used: the server negotiated "
        f"{cipher_note[0]['negotiated']}" if cipher_note else "")
    if bad and cipher_note:
        summary += f"; 'cipher {cipher_note[0]['configured']}' is not used"
    return problem(
        OCC_ID, status, summary, **evidence,
        explanation=" ".join(s.rstrip(".") + "." for s in said)
        + (" OpenVPN 2.6 logs differences between the options strings only at verb 7 "
           "(\"WARNING: '...' is used inconsistently\" / \"... is present in remote config "
           "but missing in local config\")." if bad else ""),
        fix=" ".join(fixes))


def _cipher_directive_note(ctx: DoctorContext,
                           occ: Mapping[str, Any]) -> tuple[dict[str, Any], str, str] | None:
    """A 'cipher' line that the negotiation did not use: (evidence, meaning, fix)."""
    o = ctx.options
    negotiated = occ.get("negotiated_cipher")
    if o is None or o.cipher is None or not negotiated or not occ.get("pushed_cipher"):
        return None
    configured = o.cipher.upper()
    if configured == str(negotiated).upper():
        return None
    loc = o.location("cipher")
    place = f"{loc[0]}:{loc[1]}" if loc is not None else str(o.config_path)
    in_list = configured in {c.upper() for c in o.data_ciphers}
    return ({"configured": configured, "negotiated": negotiated, "where": place,
             "in_data_ciphers": in_list},
            f"This config sets 'cipher {configured}' ({place}), but the server negotiated "
            f"{negotiated}: OpenVPN 2.6 negotiates the data cipher from data-ciphers and "
            f"ignores 'cipher' for it"
            + ("" if in_list else f" ({configured} is not in data-ciphers, so it was not even "
               "offered)")
            + ". A client that cannot negotiate (OpenVPN 2.3, or 2.4 with ncp-disable) "
            f"would use only {configured}, and a 2.6 server whose "
            "data-ciphers lacks it answers 'AUTH_FAILED,Data channel cipher negotiation failed "
            "(no shared cipher)' (OpenVPN Changes.rst, 2.6, 'Connecting to a OpenVPN 2.3.x "
            "server'; a 2.6 client gets the same answer when only its 'cipher' line names the "
            "server's cipher)",
            f"Replace 'cipher {configured}' at {place} with 'data-ciphers {negotiated}' (or the "
            "list you want); keep a 'data-ciphers-fallback' only for peers that cannot "
            "negotiate.")


def occ_evidence(session: Any, options_string: str) -> dict[str, Any]:
    """What compat.occ needs from a probe session: both options strings, what the push set
    and the negotiated cipher (for tls.handshake's evidence)."""
    pushed = session.pushed
    return {"local": options_string, "server": session._remote_options() or None,
            "negotiated_cipher": session.cipher,
            "pushed_cipher": pushed.cipher if pushed is not None else None,
            "pushed_compression": pushed.compression if pushed is not None else None,
            "pushed_tun_mtu": pushed.tun_mtu if pushed is not None else None}


CHECKS: tuple[Check, ...] = (
    Check(VERSIONS_ID, run_versions),
    # depends on tls.handshake so that 'doctor --check compat.occ' runs the handshake too
    Check(OCC_ID, run_occ, roles=("client",), depends_on=("tls.handshake",),
          after=("tunnel.traffic",), needs_tls=True),
)
