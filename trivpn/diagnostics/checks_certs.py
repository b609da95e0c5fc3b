"""Certificate facts beyond the chain: ``pki.crl`` (the crl-verify CRL's dates),
``pki.policy`` (signature digests and key sizes against the OpenSSL security level OpenVPN
would use), ``crypto.legacy_ciphers`` (BF-CBC and the other 64-bit block ciphers, which
OpenSSL 3 has only in its legacy provider) and ``tls.server_cert`` (the certificate the server
sent in the handshake: expiry forecast, what it tells of the server's profile and clock).

What these checks say OpenVPN 2.6 does is checked against the binary in
tests/diagnostics/test_cert_claims.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.config.reader import read_config
from trivpn.config.values import WEAK_64BIT_CIPHERS
from trivpn.diagnostics.certfacts import (
    DIGEST_BITS,
    EXPIRY_WARNING,
    LEVEL_BITS,
    crl_facts,
    openvpn_level,
    policy_findings,
)
from trivpn.diagnostics.checks_pki import Material, MaterialError, load_material
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import where
from trivpn.protocol.tls import parse_crls

CRL_ID, POLICY_ID, CIPHER_ID, SERVER_CERT_ID = ("pki.crl", "pki.policy",
                                                "crypto.legacy_ciphers", "tls.server_cert")
CLOCK_SKEW_WARN_S = 300.0


def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _material(o: Options) -> Material | None:
    try:
        return load_material(o)
    except (MaterialError, ConfigError):
        return None


# --- pki.crl ---------------------------------------------------------------------------------

async def check_crl(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(CRL_ID, "config did not parse")
    m = _material(o)
    anchors = m.ca if m is not None else ()
    crls: list[x509.CertificateRevocationList] = []
    label = ""
    if o.crl_verify is not None:
        label = f"'crl-verify' ({where(o, 'crl-verify')}, {o.crl_verify.describe()})"
        try:
            loaded = parse_crls(o.crl_verify.read_text().encode()).crls
        except ConfigError as exc:
            return skip(CRL_ID, f"cannot read the CRL ({exc.reason}; see config.files)")
        if not loaded:
            return problem(
                CRL_ID, "fail", f"no CRL can be read from {label}",
                explanation="OpenVPN logs 'CRL: loaded 0 CRLs from file' and keeps running "
                            "without a usable CRL; trivpn refuses every peer then.",
                fix=f"Point 'crl-verify' at the CA's PEM CRL (easy-rsa: pki/crl.pem, made by "
                    f"'./easyrsa gen-crl') at {where(o, 'crl-verify')}.", crl=label)
        crls.extend(loaded)
    elif m is not None and m.capath_crls:
        label = f"the 'capath' directory {o.capath}"
        crls.extend(m.capath_crls)
    else:
        return skip(CRL_ID, "no crl-verify file (or CRLs in capath)")
    now = datetime.now(UTC)
    facts = [crl_facts(c, anchors, now) for c in crls]
    evidence: dict[str, Any] = {"crl": label, "now": _utc(now),
                                "crls": [f.as_evidence() for f in facts]}
    regen = (f"Regenerate the CRL on the CA ('./easyrsa gen-crl') and copy pki/crl.pem to "
             f"{label}")
    bad = next((f for f in facts if f.state in ("expired", "not yet valid")), None)
    if bad is not None and bad.state == "expired":
        return problem(
            CRL_ID, "fail", f"the CRL from {bad.issuer} expired at "
            f"{_utc(bad.next_update) if bad.next_update else '?'}",
            explanation="Past its nextUpdate a CRL is expired, and OpenVPN 2.6 refuses every "
                        "peer's certificate ('VERIFY ERROR: ... CRL has expired'): no "
                        "tunnel comes up, whatever the certificates.",
            fix=f"{regen}; renew it before each nextUpdate (easy-rsa: EASYRSA_CRL_DAYS, "
                "default 180) — e.g. from cron.", **evidence)
    if bad is not None:
        return problem(
            CRL_ID, "fail", f"the CRL from {bad.issuer} is valid only from "
            f"{_utc(bad.this_update)} (our clock: {_utc(now)})",
            explanation="A CRL whose thisUpdate lies ahead is not valid yet and peers are "
                        "refused until then; usually this machine's clock is behind, or the "
                        "CA machine's is ahead.",
            fix="Check the clock with 'date -u' and enable time synchronisation "
                f"('timedatectl set-ntp true'); if it is right, {regen[0].lower()}{regen[1:]}"
                " on a CA machine with a correct clock.", **evidence)
    foreign = [f for f in facts if f.signed_by_ca is False]
    if foreign:
        return problem(
            CRL_ID, "warn", f"the CRL from {foreign[0].issuer} is not signed by a configured "
            "CA", explanation="A CRL is only used for certificates of the CA that signed it: "
            "this one revokes nothing here (or the CA was regenerated).",
            fix=f"Use the CRL of the CA in 'ca' ({regen}).", **evidence)
    soon = next((f for f in facts if f.state.startswith("expires")), None)
    if soon is not None:
        return problem(
            CRL_ID, "warn", f"the CRL from {soon.issuer} {soon.state} (nextUpdate "
            f"{_utc(soon.next_update) if soon.next_update else '?'})",
            explanation="Once past its nextUpdate the CRL is expired, and OpenVPN 2.6 then "
                        "refuses every peer ('CRL has expired').",
            fix=f"{regen} before the nextUpdate shown; schedule it (EASYRSA_CRL_DAYS, "
                "default 180 days).", **evidence)
    return ok(CRL_ID, f"{len(facts)} CRL(s) valid, next update "
              f"{min((_utc(f.next_update) for f in facts if f.next_update), default='none')}",
              **evidence)


# --- pki.policy ------------------------------------------------------------------------------

async def check_policy(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(POLICY_ID, "config did not parse")
    m = _material(o)
    if m is None or not m.chain or m.cert_src is None:
        return skip(POLICY_ID, "no certificate of our own to check (see pki.chain)")
    level = openvpn_level(o)
    leaf = m.chain[0]
    own = f"'{m.cert_src.directive}' ({where(o, m.cert_src.directive)})"
    evidence: dict[str, Any] = {"security_level": level.level, "level_from": level.source,
                                "system_default_level": level.system_default,
                                "cert": m.cert_src.describe()}
    found = policy_findings([("cert", leaf)], level.level)
    if found:
        f = found[0]
        evidence["findings"] = [{"problem": x.problem, "detail": x.detail} for x in found]
        fix_profile = ("'tls-cert-profile insecure' (level 0)" if f.needs_level == 0 else
                       "'tls-cert-profile legacy' (level 1, OpenVPN's default)")
        return problem(
            POLICY_ID, "fail", f"our certificate is {f.detail}: OpenSSL refuses it at "
            f"security level {level.level} ({f.openssl_error})",
            explanation=(f"OpenVPN 2.6 runs OpenSSL at security level {level.level} here "
                         f"({level.source}; this machine's OpenSSL default, {level.system_default}"
                         ", does not apply: OpenVPN sets the level itself). Level "
                         f"{level.level} needs {LEVEL_BITS.get(level.level, 256)} bits of "
                         f"security; {f.detail}. OpenVPN exits at start with OpenSSL's "
                         f"'{f.openssl_error}'."),
            fix=(f"Reissue the certificate of {own} with SHA-256 and an RSA key of 2048 bits "
                 "or more, or an EC key (easy-rsa 3's defaults: './easyrsa "
                 f"build-{o.role}-full NAME nopass'). Only as a stopgap: {fix_profile} in "
                 f"{o.config_path.name}, on both sides."), **evidence)
    for peer_level, profile in ((1, "legacy (OpenVPN 2.6's default)"), (2, "preferred")):
        strict = policy_findings([("cert", leaf)], peer_level)
        if not strict or level.level >= peer_level:
            continue
        f = strict[0]
        evidence[f"at_level_{peer_level}"] = f.detail
        quote = "CA signature digest algorithm too weak" if f.problem == "md too weak" \
            else "EE certificate key too weak"
        return problem(
            POLICY_ID, "warn", f"our certificate ({f.detail}) works at level {level.level} "
            f"but a peer with 'tls-cert-profile {profile.split()[0]}' refuses it",
            explanation=(f"This config runs at security level {level.level} ({level.source}), "
                         f"where {f.detail} is accepted. A peer with 'tls-cert-profile "
                         f"{profile}' (level {peer_level}, {LEVEL_BITS[peer_level]} bits) or "
                         f"stricter refuses it ('{quote}' in its log). The peer's profile "
                         "cannot be seen from here, only inferred: if the peer drops the "
                         "handshake right after receiving our certificate, this is a candidate "
                         "cause."),
            fix=f"Reissue the certificate of {own} with SHA-256 and RSA 2048+ or an EC key "
                f"('./easyrsa build-{o.role}-full NAME nopass').", **evidence)
    return ok(POLICY_ID, f"our certificate passes OpenSSL security level {level.level} "
              f"({level.source})", **evidence)


# --- crypto.legacy_ciphers --------------------------------------------------------------------

def _raw(ctx: DoctorContext) -> dict[str, list[tuple[tuple[str, ...], int]]]:
    """The config's own lines for the directives this check reads (trivpn's parser refuses
    'providers', so the Options do not have it)."""
    wanted = ("providers", "data-ciphers", "ncp-ciphers", "data-ciphers-fallback", "cipher")
    out: dict[str, list[tuple[tuple[str, ...], int]]] = {w: [] for w in wanted}
    if ctx.config_path is None:
        return out
    try:
        source = read_config(ctx.config_path)
    except ConfigError:
        return out
    for d in source.directives:
        if d.name in out:
            out[d.name].append((d.args, d.line))
    return out


def _legacy_names(text: str) -> list[tuple[str, bool]]:
    """(64-bit cipher, optional) in a colon list."""
    out = []
    for item in text.split(":"):
        optional = item.startswith("?")
        name = item.lstrip("?").upper()
        if name in WEAK_64BIT_CIPHERS:
            out.append((name, optional))
    return out


async def check_legacy_ciphers(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(CIPHER_ID, "config did not parse")
    raw = _raw(ctx)
    providers = [a for args, _ in raw["providers"] for a in args]
    legacy = "legacy" in providers
    name = o.config_path.name
    evidence: dict[str, Any] = {"providers": providers or None}
    for directive in ("data-ciphers", "ncp-ciphers"):
        for args, line in raw[directive]:
            weak = [(n, opt) for n, opt in _legacy_names(args[0] if args else "")]
            required = [n for n, opt in weak if not opt]
            evidence.update(directive=directive, line=line, ciphers=[n for n, _ in weak])
            if required and not legacy:
                return problem(
                    CIPHER_ID, "fail", f"{directive} lists {required[0]}, which OpenSSL 3 has "
                    "only in its legacy provider",
                    explanation=(f"{required[0]} is a 64-bit block cipher. OpenSSL 3 moved "
                                 "these to its legacy provider, which OpenVPN 2.6 loads only "
                                 "with 'providers legacy default'; without it OpenVPN exits "
                                 f"at start: 'Unsupported cipher in --{directive}: "
                                 f"{required[0]}'. trivpn does not implement 64-bit block "
                                 "ciphers at all."),
                    fix=(f"Remove {required[0]} from '{directive}' ({name} line {line}); if "
                         "an old server (OpenVPN 2.3, no cipher negotiation) needs it, mark it "
                         f"optional ('?{required[0]}') and add 'providers legacy default' — "
                         "better, move the server to AES-256-GCM."), **evidence)
            if weak:
                return _sweet32(o, weak[0][0], f"{name} line {line}", legacy, evidence)
    for args, line in raw["data-ciphers-fallback"]:
        cipher = (args[0] if args else "").upper()
        if cipher in WEAK_64BIT_CIPHERS:
            evidence.update(directive="data-ciphers-fallback", line=line, ciphers=[cipher])
            if not legacy:
                return problem(
                    CIPHER_ID, "fail", f"data-ciphers-fallback {cipher} needs OpenSSL 3's "
                    "legacy provider", explanation=(
                        f"Without 'providers legacy default' OpenSSL 3 has no {cipher}, and "
                        f"OpenVPN 2.6 exits at start: 'Cipher {cipher} not supported'."),
                    fix=(f"Add 'providers legacy default' to {name} if the server really only "
                         f"speaks {cipher} (OpenVPN 2.3 without cipher negotiation); better, "
                         f"move the server to AES-256-GCM and remove line {line}."),
                    **evidence)
            return _sweet32(o, cipher, f"{name} line {line}", legacy, evidence)
    for args, line in raw["cipher"]:
        cipher = (args[0] if args else "").upper()
        if cipher in WEAK_64BIT_CIPHERS and o.role == "client" and o.pull:
            evidence.update(directive="cipher", line=line, ciphers=[cipher])
            return problem(
                CIPHER_ID, "warn", f"'cipher {cipher}' is ignored by OpenVPN 2.6 for "
                "negotiation", explanation=(
                    f"A 2.6 client negotiates the data cipher from 'data-ciphers'; a 'cipher "
                    f"{cipher}' line not listed there is ignored ('DEPRECATED OPTION: --cipher "
                    f"set to '{cipher}' but missing in --data-ciphers')."),
                fix=(f"Remove line {line} of {name} for a 2.4+ server; for a 2.3 server that "
                     f"only speaks {cipher}, use 'data-ciphers-fallback {cipher}' with "
                     "'providers legacy default'."), **evidence)
    return ok(CIPHER_ID, "no 64-bit block cipher (BF-CBC, DES, CAST5...) configured",
              **evidence)


def _sweet32(o: Options, cipher: str, at: str, legacy: bool,
             evidence: dict[str, Any]) -> CheckResult:
    return problem(
        CIPHER_ID, "warn", f"{cipher} is a 64-bit block cipher ({at})",
        explanation=(f"With the legacy provider{' loaded' if legacy else ''} OpenVPN 2.6 "
                     f"accepts {cipher} but warns: 'WARNING: INSECURE cipher ({cipher}) with "
                     "block size less than 128 bit (64 bit)', open to SWEET32. trivpn does not "
                     "implement 64-bit block ciphers."),
        fix=(f"Move both sides to AES-256-GCM (the default 'data-ciphers') and remove {cipher} "
             f"at {at}."), **evidence)


# --- tls.server_cert -------------------------------------------------------------------------

def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def check_server_cert(ctx: DoctorContext) -> CheckResult:
    hs = ctx.results.get("tls.handshake")
    if hs is None or hs.status != "ok" or "server_cert" not in hs.evidence:
        return skip(SERVER_CERT_ID, "no server certificate seen (see tls.handshake)")
    o = ctx.options
    assert o is not None
    facts: dict[str, Any] = hs.evidence["server_cert"]
    now = datetime.now(UTC)
    not_after = _parse(facts["not_after"])
    level = openvpn_level(o)
    bits = min(facts["key_security_bits"],
               _digest_bits(facts.get("signature_digest")))
    most = max((lvl for lvl, need in LEVEL_BITS.items() if bits >= need), default=0)
    evidence: dict[str, Any] = {"server_cert": facts, "now": _utc(now),
                                "our_security_level": level.level,
                                "server_security_level_at_most": most}
    skew = hs.evidence.get("server_clock_skew_s")
    if skew is not None:
        evidence["server_clock_skew_s"] = skew
    left = not_after - now
    if left < EXPIRY_WARNING:
        return problem(
            SERVER_CERT_ID, "warn", f"the server's certificate expires in {left.days} days "
            f"({facts['not_after']})",
            explanation="Once it expires every client refuses the server ('VERIFY ERROR: "
                        "depth=0, error=certificate has expired') and nobody can connect.",
            fix="Renew the server's certificate before then ('./easyrsa renew NAME' or "
                "'./easyrsa build-server-full NAME nopass'; 'trivpn pki issue server NAME') "
                "and install it as 'cert' in the server's config.", **evidence)
    if skew is not None and abs(skew) > CLOCK_SKEW_WARN_S:
        way = "ahead of" if skew > 0 else "behind"
        return problem(
            SERVER_CERT_ID, "warn", f"our clock is {abs(skew):.0f} s {way} the server's",
            explanation="The server's clock, read from the timestamps of its tls-auth/"
                        "tls-crypt packets, differs from ours. Certificates and CRLs near "
                        "their start or end dates are then judged differently on each side.",
            fix="Enable time synchronisation on both machines ('timedatectl set-ntp true').",
            **evidence)
    if most < 2:
        return problem(
            SERVER_CERT_ID, "warn", f"the server's certificate ({facts['key']}, "
            f"{facts['signature_digest']}) is refused by clients with 'tls-cert-profile "
            "preferred'",
            explanation=(f"It passes this client's level {level.level}, but a client at "
                         "level 2 ('tls-cert-profile preferred', 112 bits) refuses it ('EE "
                         "certificate key too weak'). The server's own profile can only be "
                         f"inferred: it loaded this certificate, so it runs at level {most} or "
                         "below."),
            fix="Reissue the server's certificate with RSA 2048+ or an EC key and SHA-256 "
                "('./easyrsa build-server-full NAME nopass').", **evidence)
    return ok(SERVER_CERT_ID, f"the server's certificate is valid until {facts['not_after']} "
              f"({left.days} days)", **evidence)


def _digest_bits(name: str | None) -> int:
    return 128 if name is None else DIGEST_BITS.get(name, 128)


_DEPS = ("config.files",)
CHECKS: tuple[Check, ...] = (
    # a server's crl-verify is server.crl's (checks_serverstate.py, the server side)
    Check(CRL_ID, check_crl, roles=("client",), depends_on=_DEPS, needs_tls=True),
    Check(POLICY_ID, check_policy, depends_on=_DEPS, needs_tls=True),
    Check(CIPHER_ID, check_legacy_ciphers, depends_on=_DEPS),
)
SERVER_CERT = Check(SERVER_CERT_ID, check_server_cert, roles=("client",),
                    after=("tls.handshake",), needs_tls=True)
