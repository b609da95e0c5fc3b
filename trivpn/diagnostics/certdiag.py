"""Why this client refused the server's certificate, and the fix right for that cause.

``tls.handshake`` calls :func:`diagnose_server_cert` when the session failed verifying the
server's certificate (cause ``cert_verify_failed`` or ``cert_revoked``). The certificate itself
comes from a second handshake that accepts any certificate (the doctor's only use of one), so
the facts are read from the certificate the server really sends: its purpose, issuer, dates,
name, digest, key and serial, checked against this config's ``ca`` (or pkcs12 / capath /
peer-fingerprint), ``crl-verify``, ``remote-cert-tls`` / ``remote-cert-eku`` /
``remote-cert-ku`` and ``verify-x509-name``.

Clock skew: a certificate that is "not yet valid" or "expired" may be the certificate's fault or
the clock's. The server's clock shows in the timestamps of its tls-auth / tls-crypt packets
(OpenVPN's long-form packet id: the Unix time the server's session started); without those, the
gap between the certificate's notBefore and our clock is the only hint.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.diagnostics.certfacts import (
    ClockReading,
    ServerCertInputs,
    cause_from_message,
    cert_facts,
    common_name,
    fingerprint,
    openvpn_level,
    server_cert_findings,
    subject_of,
    x509_name_line,
)
from trivpn.diagnostics.checks_pki import MaterialError, load_material
from trivpn.diagnostics.probe import where
from trivpn.protocol.tls import format_fingerprint, parse_crls

SKEW_TOLERANCE_S = 90.0  # clocks this close agree (the timestamp is the session's start)
FRESH_CERT = timedelta(days=2)  # a notBefore this close ahead of our clock: freshly issued


def server_cert_inputs(o: Options) -> ServerCertInputs:
    """The trust anchors, CRLs, security level and fingerprints this client judges by."""
    anchors: tuple[x509.Certificate, ...] = ()
    crls: list[x509.CertificateRevocationList] = []
    try:
        material = load_material(o)
        anchors = material.ca
        crls.extend(material.capath_crls)
    except MaterialError:
        pass
    if o.crl_verify is not None:
        with contextlib.suppress(ConfigError):
            crls.extend(parse_crls(o.crl_verify.read_text().encode()).crls)
    revoked: frozenset[int] = frozenset()
    if o.crl_verify_dir is not None:
        revoked = _serial_files(o.crl_verify_dir)
    return ServerCertInputs(anchors, tuple(crls), revoked, openvpn_level(o).level,
                            tuple(format_fingerprint(f) for f in o.peer_fingerprints))


def _serial_files(path: Path) -> frozenset[int]:
    try:
        return frozenset(int(p.name) for p in path.iterdir() if p.name.isdigit())
    except OSError:
        return frozenset()


@dataclass(frozen=True, slots=True)
class Diagnosis:
    cause: str  # eku, ku, untrusted_ca, name_mismatch, expired, not_yet_valid, revoked, ...
    summary: str
    explanation: str
    fix: str
    evidence: dict[str, Any]


def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def diagnose_server_cert(o: Options, detail: str, cert: x509.Certificate | None,
                         now: datetime, clock: ClockReading | None) -> Diagnosis:
    """The cause of the failed verification of the server's certificate ``cert`` (None when
    the second handshake could not fetch it), from what the session said (``detail``) and the
    facts of the certificate against this config."""
    evidence: dict[str, Any] = {"verify_detail": detail, "our_clock": _utc(now)}
    if clock is not None:
        evidence["server_clock"] = _utc(datetime.fromtimestamp(clock.server_unix, UTC))
        evidence["clock_skew_s"] = clock.skew_s
    said = cause_from_message(detail)
    causes: list[str] = []
    texts: dict[str, str] = {}
    if cert is not None:
        findings = server_cert_findings(cert, o, server_cert_inputs(o), now)
        causes = findings.causes()
        texts = {f.cause: f.text for f in findings.facts}
        evidence["server_cert"] = cert_facts(cert)
        evidence["findings"] = [{"cause": f.cause, "fact": f.text} for f in findings.facts]
    cause = said if said is not None else (causes[0] if causes else "unknown")
    if cause == "ku" and "eku" in causes:
        cause = "eku"
    evidence["verify_cause"] = cause
    builder = _BUILDERS.get(cause, _unknown)
    summary, explanation, fix = builder(o, cert, texts.get(cause, detail), now, clock)
    others = [c for c in causes if c != cause]
    if others:
        explanation += (" The certificate has further problems this config would refuse next: "
                        + "; ".join(texts[c] for c in others) + ".")
    return Diagnosis(cause, summary, explanation, fix, evidence)


Built = tuple[str, str, str]


def _eku(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
         clock: ClockReading | None) -> Built:
    check = ("'remote-cert-eku'" if o.remote_cert_eku else
             "'remote-cert-tls server'" if o.remote_cert_tls else "OpenSSL's purpose check")
    where_check = where(o, "remote-cert-eku" if o.remote_cert_eku else "remote-cert-tls")
    return (f"the server's certificate is not a TLS server certificate: {fact}",
            f"The server's certificate ({_who(cert)}) lacks the purpose a VPN server's "
            f"certificate must have: {fact}. This client checks it with {check}, so it "
            "refuses the server ('VERIFY EKU ERROR' / 'unsuitable certificate purpose' in "
            "OpenVPN's log) — this is not a CA problem: the certificate was issued as a client "
            "certificate, or without extensions.",
            "Reissue the server's certificate as a server certificate — with extended key "
            "usage serverAuth ('TLS Web Server Authentication') and key usage "
            "digitalSignature, keyEncipherment: easy-rsa './easyrsa build-server-full NAME "
            "nopass' (or 'trivpn pki issue server NAME'), then point 'cert'/'key' in the "
            f"server's config at it. Only if you know why the server's certificate has no "
            f"such purpose, relax the check at {where_check} (remove 'remote-cert-tls "
            "server' and use 'remote-cert-eku'/'remote-cert-ku' matching what it has, or "
            "'verify-x509-name'): without any such check another client's certificate can "
            "pose as the server.")


def _ku(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
        clock: ClockReading | None) -> Built:
    _summary, explanation, fix = _eku(o, cert, fact, now, clock)
    return (f"the server's certificate has no key usage extension: {fact}",
            explanation.replace("VERIFY EKU ERROR", "VERIFY KU ERROR"), fix)


def _untrusted(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
               clock: ClockReading | None) -> Built:
    issuer = cert.issuer.rfc4514_string() if cert is not None else "its CA"
    if o.ca is not None:
        put = f"Put the CA that signed it ({issuer}) into 'ca' ({where(o, 'ca')}, " \
              f"{o.ca.describe()})"
    elif o.capath is not None:
        put = (f"Put the CA that signed it ({issuer}) into the 'capath' directory {o.capath} "
               "and run 'openssl rehash' there")
    elif o.pkcs12 is not None:
        put = (f"Add 'ca FILE' with the CA that signed it ({issuer}); without 'ca' only the "
               f"CAs inside the pkcs12 bundle ({where(o, 'pkcs12')}) are trusted")
    else:
        put = f"Add 'ca FILE' with the CA that signed it ({issuer})"
    return (f"the server's certificate is not signed by a CA this client trusts ({fact})",
            f"The server's certificate ({_who(cert)}) is {fact}. OpenVPN refuses it with "
            "'VERIFY ERROR: depth=0, error=unable to get local issuer certificate'. The "
            "server's certificate itself may be fine: this client has another CA.",
            f"{put}; get it from the server ('ca' in its config). If the server's "
            "certificate was not expected to change, confirm first that you reach the right "
            "server.")


def _name(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
          clock: ClockReading | None) -> Built:
    want = o.verify_x509_name
    assert want is not None or cert is None
    configured = f"verify-x509-name {want.name} {want.type}" if want is not None else \
        "verify-x509-name"
    if cert is None or want is None:
        return ("the server's certificate does not match 'verify-x509-name'",
                f"The server's name does not match '{configured}'.",
                f"Set 'verify-x509-name' in {where(o, 'verify-x509-name')} to the server "
                "certificate's name.")
    line = x509_name_line(cert, want.type)
    return (f"the server's certificate does not match '{configured}': {fact}",
            f"This client accepts only a server whose certificate matches '{configured}', "
            f"but {fact} (CN {_cn(cert)}). OpenVPN refuses it with 'VERIFY X509NAME ERROR'. "
            "Either the server's certificate was reissued under another name, or this is not "
            "the server you meant to reach.",
            f"If this is your server, change {where(o, 'verify-x509-name')} to: {line}")


def _clock_words(clock: ClockReading | None) -> str:
    if clock is None:
        return ""
    if abs(clock.skew_s) <= SKEW_TOLERANCE_S:
        return (" The server's clock, read from the timestamps of its tls-auth/tls-crypt "
                f"packets, agrees with ours (difference {clock.skew_s:+.0f} s), so it is not "
                "our clock.")
    way = "ahead of" if clock.skew_s > 0 else "behind"
    return (" The server's clock, read from the timestamps of its tls-auth/tls-crypt packets, "
            f"differs from ours: our clock is {_span(clock.skew_s)} {way} the server's.")


def _expired(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
             clock: ClockReading | None) -> Built:
    if cert is None:
        return ("the server's certificate has expired",
                "This client refuses the server's certificate as expired.",
                "Renew the server's certificate ('./easyrsa renew NAME' or "
                "'build-server-full') and check this machine's clock with 'date -u'.")
    na = cert.not_valid_after_utc
    ours_ahead = clock is not None and clock.skew_s > SKEW_TOLERANCE_S and \
        datetime.fromtimestamp(clock.server_unix, UTC) <= na
    clock_fix = (" Our clock is ahead of the server's and, by the server's clock, the "
                 "certificate is still valid: fix this machine's clock ('timedatectl "
                 "set-ntp true') instead." if ours_ahead else "")
    return (f"the server's certificate expired at {_utc(na)}",
            f"The server's certificate ({_who(cert)}) is valid until {_utc(na)}; our clock "
            f"says {_utc(now)} ({_span((now - na).total_seconds())} later). OpenVPN refuses it "
            "with 'VERIFY ERROR: depth=0, error=certificate has expired'."
            + _clock_words(clock),
            "Renew the server's certificate on the CA ('./easyrsa renew NAME', or "
            "'./easyrsa build-server-full NAME nopass'; 'trivpn pki issue server NAME') and "
            "install it as 'cert' in the server's config; nothing in this client's config can "
            "fix it." + clock_fix)


def _not_yet_valid(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
                   clock: ClockReading | None) -> Built:
    if cert is None:
        return ("the server's certificate is not valid yet",
                "This client refuses the server's certificate as not yet valid.",
                "Check this machine's clock with 'date -u' and enable time synchronisation.")
    nb = cert.not_valid_before_utc
    ahead = (nb - now).total_seconds()
    words = (f"The server's certificate ({_who(cert)}) is valid only from {_utc(nb)}, "
             f"{_span(ahead)} after our clock's {_utc(now)}. OpenVPN refuses it with "
             "'VERIFY ERROR: depth=0, error=certificate is not yet valid'.")
    if clock is not None and clock.skew_s < -SKEW_TOLERANCE_S:
        words += _clock_words(clock) + " Our clock is behind: that is the cause."
        fix = ("Fix this machine's clock: 'timedatectl set-ntp true' (or start chrony/ntpd); "
               f"'date -u' should show about {_utc(datetime.fromtimestamp(clock.server_unix, UTC))}"
               " like the server.")
    elif clock is not None:
        words += _clock_words(clock) + (" The certificate was issued with a start date in the "
                                        "future (the CA's clock was ahead, or it was dated "
                                        "ahead on purpose).")
        fix = (f"Wait until {_utc(nb)}, or reissue the server's certificate with a start date "
               "in the past (check the CA machine's clock first).")
    else:
        fresh = ahead < FRESH_CERT.total_seconds()
        words += (" The server's clock cannot be read here (no tls-auth/tls-crypt "
                  "timestamps). " + ("A start date this close ahead usually means a freshly "
                                     "issued certificate and a clock here that is behind. "
                                     if fresh else "") +
                  "Compare 'date -u' here with the server's (or a public time source): if ours "
                  "is behind, our clock is the cause; if they agree, the certificate was dated "
                  "ahead.")
        fix = ("Check this machine's clock with 'date -u' and enable time synchronisation "
               "('timedatectl set-ntp true'); if it is right, reissue the server's certificate "
               f"with a start date in the past (or wait until {_utc(nb)}).")
    return (f"the server's certificate is not valid before {_utc(nb)} (our clock: "
            f"{_utc(now)})", words, fix)


def _revoked(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
             clock: ClockReading | None) -> Built:
    crl = where(o, "crl-verify")
    serial = f" (serial {cert.serial_number})" if cert is not None else ""
    return (f"the server's certificate is revoked by this client's crl-verify: {fact}",
            f"The CRL of 'crl-verify' ({crl}) lists the server's certificate{serial} as "
            "revoked, so this client refuses it ('VERIFY ERROR: ... certificate revoked').",
            "The server must get a new certificate (easy-rsa: './easyrsa build-server-full "
            f"NEWNAME nopass'); if the CRL is outdated or from the wrong CA, replace "
            f"{_crl_file(o)} ('crl-verify', {crl}) with the CA's current CRL ('./easyrsa "
            "gen-crl', pki/crl.pem).")


def _crl_expired(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
                 clock: ClockReading | None) -> Built:
    crl = where(o, "crl-verify")
    return (f"this client's CRL has expired: {fact}",
            f"The CRL of 'crl-verify' ({crl}) is past its nextUpdate ({fact}). OpenVPN 2.6 "
            "then refuses every peer ('VERIFY ERROR: ... CRL has expired'): the server's "
            "certificate is not the problem." + _clock_words(clock),
            f"Regenerate the CRL on the CA ('./easyrsa gen-crl') and copy pki/crl.pem over "
            f"{_crl_file(o)} ('crl-verify', {crl}); do it before each nextUpdate (easy-rsa: "
            "EASYRSA_CRL_DAYS, default 180).")


def _crl_not_yet_valid(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
                       clock: ClockReading | None) -> Built:
    crl = where(o, "crl-verify")
    return (f"this client's CRL is not valid yet: {fact}",
            f"The CRL of 'crl-verify' ({crl}) starts later than our clock ({fact}), so it "
            "is not valid yet, and OpenVPN refuses every peer until then ('VERIFY ERROR: ... "
            "CRL is not yet valid')." + _clock_words(clock),
            "Check this machine's clock ('date -u', 'timedatectl set-ntp true'); if it is "
            "right, regenerate the CRL on a CA machine with a correct clock.")


def _crl_other(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
               clock: ClockReading | None) -> Built:
    crl = where(o, "crl-verify")
    return (f"this client's crl-verify refuses every server: {fact}",
            f"The CRL of 'crl-verify' ({crl}) cannot be used ({fact}), and OpenVPN then "
            "refuses every peer (with no CRL loaded: 'VERIFY ERROR: ... unable to get "
            "certificate CRL').",
            f"Replace {_crl_file(o)} ('crl-verify', {crl}) with the current CRL of the CA "
            "named in 'ca' ('./easyrsa gen-crl', pki/crl.pem).")


def _md(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
        clock: ClockReading | None) -> Built:
    level = openvpn_level(o)
    return (f"the server's certificate is {fact}: too weak for OpenSSL security level "
            f"{level.level}",
            f"The server's certificate ({_who(cert)}) is {fact}. OpenSSL 3 at security level "
            f"{level.level} ({level.source}) refuses SHA-1 and MD5 signatures ('CA signature "
            "digest algorithm too weak' in OpenVPN's 'VERIFY ERROR' line). The "
            "server accepts its own certificate only because it runs with a lower level "
            "(tls-cert-profile insecure): that can only be inferred from here.",
            "Reissue the server's certificate signed with SHA-256 (easy-rsa 3's default; "
            "'./easyrsa build-server-full NAME nopass'). As a stopgap only, 'tls-cert-profile "
            "insecure' in this client's config accepts it.")


def _key_small(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
               clock: ClockReading | None) -> Built:
    level = openvpn_level(o)
    lower = ("'tls-cert-profile legacy' (OpenVPN 2.6's default, level 1, accepts RSA 1024) "
             "instead of '" + (o.tls_cert_profile or "") + "'") if level.level > 1 else \
        "'tls-cert-profile insecure'"
    return (f"the server's certificate has a {fact}: too small for OpenSSL security level "
            f"{level.level}",
            f"The server's certificate ({_who(cert)}) has a {fact}; at security level "
            f"{level.level} ({level.source}) OpenSSL needs {level.bits} bits and refuses it "
            "('EE certificate key too weak'). The server's own profile cannot be seen from "
            "here: it must be lower, since it loaded this certificate.",
            "Reissue the server's certificate with an RSA key of 2048 bits or more, or an EC "
            f"key ('./easyrsa build-server-full NAME nopass'). Or use {lower} in this client's "
            "config, if accepting the weaker key is a decision you make knowingly.")


def _fingerprint(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
                 clock: ClockReading | None) -> Built:
    fp = facts_fp(cert)
    return ("the server's certificate matches none of the 'peer-fingerprint' lines",
            f"The server's certificate ({_who(cert)}) has the SHA256 fingerprint {fp}, which "
            "this config does not list ('peer-fingerprint'). Either the server's certificate "
            "was replaced, or this is not your server.",
            f"Compare with the server ('openssl x509 -fingerprint -sha256 -noout -in "
            f"server.crt' on it); if it matches, add 'peer-fingerprint {fp}' to "
            f"{o.config_path.name} (next to {where(o, 'peer-fingerprint')}).")


def facts_fp(cert: x509.Certificate | None) -> str:
    return fingerprint(cert) if cert is not None else "(unknown)"


def _unknown(o: Options, cert: x509.Certificate | None, fact: str, now: datetime,
             clock: ClockReading | None) -> Built:
    return (f"this client rejects the server's certificate: {fact}",
            f"The server's certificate ({_who(cert)}) is not accepted by this config "
            f"({fact}).",
            f"Compare the server's certificate with 'ca' ({where(o, 'ca')}) and the "
            "certificate checks of this config (remote-cert-tls, verify-x509-name, "
            "crl-verify).")


def _crl_file(o: Options) -> str:
    if o.crl_verify is not None:
        return o.crl_verify.describe()
    return f"the files in '{o.crl_verify_dir}'" if o.crl_verify_dir else "the CRL"


def _who(cert: x509.Certificate | None) -> str:
    return subject_of(cert) if cert is not None else "not fetched"


def _cn(cert: x509.Certificate) -> str:
    return repr(common_name(cert) or "")


_BUILDERS = {
    "eku": _eku, "ku": _ku, "untrusted_ca": _untrusted, "name_mismatch": _name,
    "expired": _expired, "not_yet_valid": _not_yet_valid, "revoked": _revoked,
    "crl_expired": _crl_expired, "crl_not_yet_valid": _crl_not_yet_valid,
    "crl_unreadable": _crl_other, "crl_bad_signature": _crl_other,
    "md_too_weak": _md, "key_too_small": _key_small, "fingerprint": _fingerprint,
}
