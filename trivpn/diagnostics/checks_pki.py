"""``pki.chain``, ``pki.validity``, ``pki.key_match``, ``pki.eku``: the configured certificate
and key, checked offline with ``cryptography`` against the configured CA and the config's role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trivpn.config import ConfigError, FileSource, Options
from trivpn.diagnostics.certfacts import fingerprint, signed_by, usage
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.pki.certs import check_key_matches, load_certificates
from trivpn.pki.errors import PkiError
from trivpn.pki.keys import load_private_key
from trivpn.pki.pkcs12 import Pkcs12Bundle, decode_inline, load_pkcs12
from trivpn.protocol.tls import parse_crls

EXPIRY_WARNING = timedelta(days=30)
MAX_CHAIN = 8
MAX_LISTED = 20  # CA subjects shown as evidence (a capath may hold a whole system store)


CaKind = Literal["ca", "pkcs12", "capath", "peer-fingerprint"]


@dataclass(frozen=True, slots=True)
class Material:
    """The parsed certificate material of a config (what is missing is None).

    ``ca`` are the trust anchors wherever the config takes them from (``ca_kind``): the
    ``ca`` file, the CA certificates of a ``pkcs12`` bundle used without ``ca``, the
    certificates of a ``capath`` directory, or none with ``peer-fingerprint`` alone (the
    fingerprints judge the peer). ``chain`` is our certificate first, then the intermediates we
    send (extra-certs, or a pkcs12 bundle's CAs when ``ca`` is also set)."""

    ca: tuple[x509.Certificate, ...]
    chain: tuple[x509.Certificate, ...]  # leaf first, then intermediates from cert/extra-certs
    ca_src: FileSource | None
    cert_src: FileSource | None
    ca_kind: CaKind = "ca"
    key_pem: str | None = field(default=None, repr=False)  # from a pkcs12 bundle
    capath_crls: tuple[x509.CertificateRevocationList, ...] = ()

    @property
    def ca_where(self) -> str:
        """Where the trust anchors come from, for messages."""
        if self.ca_kind == "ca" and self.ca_src is not None:
            return f"'ca' at {self.ca_src.config_path}:{self.ca_src.line}"
        if self.ca_kind == "pkcs12" and self.cert_src is not None:
            return (f"the CA certificates of the 'pkcs12' bundle at "
                    f"{self.cert_src.config_path}:{self.cert_src.line}")
        if self.ca_kind == "capath":
            return "the 'capath' directory"
        return "'peer-fingerprint' (no CA)"


class MaterialError(Exception):
    def __init__(self, directive: str, where: str, reason: str) -> None:
        self.directive = directive
        self.where = where
        self.reason = reason
        super().__init__(f"{directive} at {where}: {reason}")


def _certs(src: FileSource) -> tuple[x509.Certificate, ...]:
    try:
        return load_certificates(src.read_text(), src.describe())
    except (PkiError, ConfigError) as exc:
        raise MaterialError(src.directive, f"{src.config_path}:{src.line}", str(exc)) from None


def _pkcs12(src: FileSource) -> Pkcs12Bundle:
    try:
        if src.inline is not None:
            data = decode_inline(src.inline, src.describe())
        else:
            data = src.read_text().encode("utf-8", "surrogateescape")
        return load_pkcs12(data, src.describe())
    except (PkiError, ConfigError) as exc:
        raise MaterialError("pkcs12", f"{src.config_path}:{src.line}", str(exc)) from None


def read_capath(path: Path) -> tuple[tuple[x509.Certificate, ...],
                                     tuple[x509.CertificateRevocationList, ...]]:
    """The certificates and CRLs of an OpenSSL hashed directory (``HASH.N``, ``HASH.rN``)."""
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    try:
        entries = sorted(p for p in path.iterdir() if p.is_file())
    except OSError as exc:
        raise MaterialError("capath", str(path), exc.strerror or str(exc)) from None
    for entry in entries:
        try:
            data = entry.read_bytes()
        except OSError:
            continue
        if b"-----BEGIN X509 CRL-----" in data:
            known = {c.public_bytes(Encoding.DER) for c in crls}
            crls.extend(c for c in parse_crls(data, str(entry)).crls
                        if c.public_bytes(Encoding.DER) not in known)
        elif b"-----BEGIN CERTIFICATE-----" in data:
            try:
                found = x509.load_pem_x509_certificates(data)
            except ValueError:
                continue
            # 'openssl rehash' links HASH.0 to the original file: count each CA once
            certs.extend(c for c in found if c not in certs)
    return tuple(certs), tuple(crls)


def load_material(o: Options) -> Material:
    chain: tuple[x509.Certificate, ...] = ()
    key_pem: str | None = None
    bundle_ca: tuple[x509.Certificate, ...] = ()
    cert_src = o.cert
    if o.pkcs12 is not None:
        bundle = _pkcs12(o.pkcs12)
        cert_src = o.pkcs12
        try:
            chain = load_certificates(bundle.cert_pem, o.pkcs12.describe())
            if bundle.ca_pem is not None:
                bundle_ca = load_certificates(bundle.ca_pem, o.pkcs12.describe())
        except PkiError as exc:
            raise MaterialError("pkcs12", f"{o.pkcs12.config_path}:{o.pkcs12.line}",
                                str(exc)) from None
        key_pem = bundle.key_pem
    elif o.cert is not None:
        chain = _certs(o.cert)
    if o.extra_certs is not None and chain:
        chain += _certs(o.extra_certs)
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    if o.ca is not None:
        ca, kind, ca_src = _certs(o.ca), "ca", o.ca
        chain += bundle_ca  # with 'ca', the bundle's CAs are only sent as intermediates
    elif o.pkcs12 is not None and bundle_ca:
        ca, kind, ca_src = bundle_ca, "pkcs12", None
    elif o.capath is not None:
        ca, crls = read_capath(o.capath)
        kind, ca_src = "capath", None
    elif o.peer_fingerprints:
        ca, kind, ca_src = (), "peer-fingerprint", None
    else:
        raise MaterialError("ca", str(o.config_path), "no 'ca', 'capath', CA certificates in "
                            "'pkcs12' or 'peer-fingerprint' configured")
    return Material(ca, chain, ca_src, cert_src, kind, key_pem, crls)  # type: ignore[arg-type]


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _issuer(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string() or "(empty issuer)"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return signed_by(cert, issuer)


CheckBody = Callable[[DoctorContext, Options, Material], CheckResult]


async def _with_material(cid: str, ctx: DoctorContext, body: CheckBody) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    try:
        material = load_material(o)
    except MaterialError as exc:
        if cid != "pki.chain":  # pki.chain reports unreadable certificates, once
            return skip(cid, f"cannot read the {exc.directive} certificate (see pki.chain)",
                        directive=exc.directive, where=exc.where, error=exc.reason)
        return problem(cid, "fail", f"cannot read the {exc.directive} certificate: {exc.reason}",
                       explanation="OpenVPN cannot load this certificate file and will exit "
                                   "during startup.",
                       fix=f"Point '{exc.directive}' at {exc.where} to a PEM certificate file "
                           "(it must contain '-----BEGIN CERTIFICATE-----').",
                       directive=exc.directive, where=exc.where, error=exc.reason)
    return body(ctx, o, material)


# --- pki.chain --------------------------------------------------------------------------------

def build_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate]) -> tuple[list[x509.Certificate], bool]:
    """Follow issuers from ``leaf`` through ``intermediates`` to one of ``anchors``.

    Returns the path (leaf first; ending with the anchor when one was reached) and whether an
    anchor was reached."""
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN):
        anchor = next((a for a in anchors if _signed_by(current, a)), None)
        if anchor is not None:
            path.append(anchor)
            return path, True
        step = next((c for c in intermediates if c not in path and _signed_by(current, c)),
                    None)
        if step is None:
            return path, False
        path.append(step)
        current = step
    return path, False


def _chain_body(ctx: DoctorContext, o: Options, m: Material) -> CheckResult:
    cid = "pki.chain"
    if not m.chain or m.cert_src is None:
        return skip(cid, "no 'cert' configured (username/password only)",
                    ca_subjects=[_name(c) for c in m.ca])
    leaf = m.chain[0]
    evidence: dict[str, Any] = {"cert": m.cert_src.describe(), "ca_from": m.ca_kind,
                                "ca": m.ca_src.describe() if m.ca_src else m.ca_where,
                                "ca_subjects": [_name(c) for c in m.ca[:MAX_LISTED]]}
    if len(m.ca) > MAX_LISTED:
        evidence["ca_count"] = len(m.ca)
    if m.ca_kind == "peer-fingerprint":
        fp = fingerprint(leaf)
        evidence.update(sha256_fingerprint=fp, peer_fingerprints=len(o.peer_fingerprints))
        return ok(cid, f"peer-fingerprint without a CA: no chain to check; the peer must list "
                  f"this certificate's SHA256 fingerprint {fp} in its 'peer-fingerprint'",
                  **evidence)
    path, anchored = build_chain(leaf, m.chain[1:], m.ca)
    evidence["chain"] = [{"subject": _name(c), "issuer": _issuer(c)} for c in path]
    if anchored:
        return ok(cid, f"{_name(leaf)} is signed by the configured CA {_name(path[-1])} "
                  f"(from {m.ca_where})", **evidence)
    handshake = ctx.results.get("tls.handshake")
    if handshake is not None and handshake.status == "ok":
        return ok(cid, f"{_name(leaf)} is not signed by a CA in {m.ca_where}, but the server "
                  "accepted it in the handshake: it trusts another CA (issuer "
                  f"{_issuer(path[-1])})", server_accepted=True, **evidence)
    cert_at = f"{m.cert_src.config_path}:{m.cert_src.line}"
    cert_directive = "pkcs12" if m.cert_src.directive == "pkcs12" else "cert"
    same_name = any(c.subject == path[-1].issuer for c in m.ca)
    detail = ("a CA with the same name but a different key signed it (the CA was "
              "regenerated?)" if same_name else f"it was issued by {_issuer(path[-1])}")
    if m.ca_kind == "ca":
        where_ca = f"set 'ca' at {m.ca_src.config_path}:{m.ca_src.line}" if m.ca_src else ""
    elif m.ca_kind == "pkcs12":
        where_ca = "add 'ca' with"
    else:
        where_ca = f"put into the 'capath' directory {o.capath} (then 'openssl rehash')"
    return problem(
        cid, "fail", f"{_name(leaf)} is not signed by the configured CA ({detail})",
        explanation=(f"A peer that verifies this certificate against the same CA as ours "
                     f"rejects it ('VERIFY ERROR: ... unable to get local issuer certificate' "
                     f"in its log) and the TLS handshake never completes; OpenVPN on this side "
                     f"only reports 'TLS key negotiation failed to occur within "
                     f"{o.hand_window} seconds'. Our trust anchors come from {m.ca_where}. "
                     "Only a server that trusts another CA than the one we verify it with "
                     "accepts it: tls.handshake shows whether this one does."),
        fix=(f"Use a certificate issued by {', '.join(_name(c) for c in m.ca) or 'the CA'} "
             f"for '{cert_directive}' at {cert_at}, or {where_ca} the CA that issued this one "
             f"({_issuer(path[-1])}); if an intermediate CA is involved, add it with "
             "'extra-certs'."),
        **evidence)


async def check_chain(ctx: DoctorContext) -> CheckResult:
    return await _with_material("pki.chain", ctx, _chain_body)


# --- pki.validity -----------------------------------------------------------------------------

def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validity_problems(certs: Sequence[tuple[str, x509.Certificate]], now: datetime
                      ) -> tuple[list[dict[str, Any]], Literal["warn", "fail"] | None, str]:
    """(evidence rows, worst status or None when all are fine, the worst problem in words)."""
    rows: list[dict[str, Any]] = []
    found: list[tuple[Literal["warn", "fail"], str]] = []
    for label, cert in certs:
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        state = "valid"
        if now < nb:
            state = "not yet valid"
        elif now > na:
            state = "expired"
        elif na - now < EXPIRY_WARNING:
            state = f"expires in {(na - now).days} days"
        rows.append({"file": label, "subject": _name(cert), "not_before": _utc(nb),
                     "not_after": _utc(na), "state": state})
        if state != "valid":
            found.append(("warn" if state.startswith("expires") else "fail",
                          f"{_name(cert)} ({label}) {state}"))
    for status in ("fail", "warn"):
        for got, text in found:
            if got == status:
                return rows, got, text
    return rows, None, ""


def _validity_body(ctx: DoctorContext, o: Options, m: Material) -> CheckResult:
    cid = "pki.validity"
    now = datetime.now(UTC)
    own = "pkcs12" if m.cert_src is not None and m.cert_src.directive == "pkcs12" else "cert"
    labelled = [(own if i == 0 else f"{own} chain", c) for i, c in enumerate(m.chain)]
    anchors = m.ca
    if m.ca_kind == "capath" and m.chain:  # only the directory's CAs on our chain matter
        anchors = tuple(c for c in build_chain(m.chain[0], m.chain[1:], m.ca)[0][1:]
                        if c in m.ca)
    label = {"ca": "ca", "pkcs12": "pkcs12 CA", "capath": "capath CA"}.get(m.ca_kind, "ca")
    labelled += [(label, c) for c in anchors]
    rows, worst, first = validity_problems(labelled, now)
    evidence = {"now": _utc(now), "certificates": rows}
    if worst is None:
        return ok(cid, f"{len(rows)} certificate(s) valid now", **evidence)
    states = {r["state"] for r in rows}
    explanation: list[str] = []
    fix: list[str] = []
    if "expired" in states:
        explanation.append("An expired certificate is rejected by the peer ('VERIFY ERROR: "
                           "depth=N, error=certificate has expired') and no tunnel comes up.")
        fix.append("Issue a new certificate (e.g. 'easyrsa renew NAME' or 'trivpn pki "
                   "issue') and point 'cert' (or 'ca') in "
                   f"{o.config_path} at it.")
    if "not yet valid" in states:
        explanation.append("A certificate that is not yet valid is rejected just like an "
                           "expired one; when it was issued recently this usually means this "
                           "machine's clock (or the peer's) is wrong.")
        fix.append(f"Check the clock with 'date -u' (now: {_utc(now)}) and enable time "
                   "synchronisation (e.g. 'timedatectl set-ntp true'); otherwise reissue the "
                   "certificate with a start date in the past.")
    if worst == "warn":
        explanation.append("The certificate still works but will be rejected once it "
                           "expires.")
        fix.append("Renew it before the not_after date shown and deploy the new "
                   f"certificate to {o.config_path}.")
    return problem(cid, worst, first, explanation=" ".join(explanation), fix=" ".join(fix),
                   **evidence)


async def check_validity(ctx: DoctorContext) -> CheckResult:
    return await _with_material("pki.validity", ctx, _validity_body)


# --- pki.key_match ----------------------------------------------------------------------------

def _key_body(ctx: DoctorContext, o: Options, m: Material) -> CheckResult:
    cid = "pki.key_match"
    if m.key_pem is not None and m.chain and m.cert_src is not None:
        evidence0 = {"cert": m.cert_src.describe(), "key": m.cert_src.describe(),
                     "subject": _name(m.chain[0])}
        try:
            check_key_matches(m.chain[0], load_private_key(m.key_pem, m.cert_src.describe()))
        except PkiError:
            return problem(cid, "fail", "the pkcs12 bundle's key does not belong to its "
                           "certificate", explanation="OpenVPN cannot use a key that does not "
                           "match its certificate and exits at start.",
                           fix=f"Rebuild the bundle at {m.cert_src.config_path}:"
                           f"{m.cert_src.line} from a matching pair ('openssl pkcs12 -export "
                           "-in CERT -inkey KEY -certfile CA -out FILE').", **evidence0)
        return ok(cid, "the pkcs12 bundle's key matches its certificate", **evidence0)
    if not m.chain or o.key is None or m.cert_src is None:
        return skip(cid, "no 'cert'/'key' configured")
    key_at = f"{o.key.config_path}:{o.key.line}"
    cert_at = f"{m.cert_src.config_path}:{m.cert_src.line}"
    evidence = {"cert": m.cert_src.describe(), "key": o.key.describe(),
                "subject": _name(m.chain[0])}
    try:
        key = load_private_key(o.key.read_text(), o.key.describe())
    except ConfigError as exc:
        return problem(cid, "fail", f"cannot read the key: {exc.reason}",
                       explanation="OpenVPN cannot load its private key and exits at start.",
                       fix=f"Fix 'key' at {key_at}.", **evidence)
    except PkiError as exc:
        if "encrypted" in exc.what:
            return problem(cid, "warn", "the private key is encrypted; cannot compare it",
                           explanation="An encrypted key needs a passphrase at every start "
                                       "(OpenVPN prompts, or uses 'askpass FILE'); the doctor "
                                       "cannot check it against the certificate.",
                           fix=f"Use 'askpass' with a passphrase file, or decrypt the key with "
                               f"'openssl pkey -in KEY -out KEY.new' and point 'key' at "
                               f"{key_at} to it.", **evidence)
        return problem(cid, "fail", f"the private key cannot be parsed: {exc.what}",
                       explanation="OpenVPN cannot load its private key and exits at start.",
                       fix=f"Point 'key' at {key_at} to the PEM private key that belongs to "
                           "the certificate.", error=exc.what, **evidence)
    try:
        check_key_matches(m.chain[0], key)
    except PkiError:
        return problem(
            cid, "fail", f"the private key does not belong to the certificate {_name(m.chain[0])}",
            explanation="OpenVPN cannot use a key that does not match its certificate; it "
                        "exits at start with 'Private key does not match the certificate'.",
            fix=f"Point 'key' at {key_at} and 'cert' at {cert_at} to files of the same pair "
                "(compare 'openssl x509 -noout -pubkey -in CERT' with 'openssl pkey -pubout -in "
                "KEY').", **evidence)
    return ok(cid, "the private key matches the certificate", **evidence)


async def check_key_match(ctx: DoctorContext) -> CheckResult:
    return await _with_material("pki.key_match", ctx, _key_body)


# --- pki.eku ----------------------------------------------------------------------------------

def _eku_body(ctx: DoctorContext, o: Options, m: Material) -> CheckResult:
    cid = "pki.eku"
    if not m.chain or m.cert_src is None:
        return skip(cid, "no 'cert' configured")
    leaf = m.chain[0]
    role = o.tls_role  # the TLS role decides the purpose (a p2p tls-server needs serverAuth)
    needed = "serverAuth" if role == "server" else "clientAuth"
    peer_check = "remote-cert-tls server" if role == "server" else "remote-cert-tls client"
    eku, ku = usage(leaf)
    cert_at = f"{m.cert_src.config_path}:{m.cert_src.line}"
    evidence: dict[str, Any] = {"subject": _name(leaf), "role": role, "needed_eku": needed,
                                "eku": eku if eku is not None else "(none)",
                                "key_usage": ku if ku is not None else "(none)"}
    strict = role == "server"  # clients nearly always use remote-cert-tls server
    reissue = (f"Reissue the certificate as a {role} certificate (easy-rsa: 'easyrsa "
               f"build-{role}-full NAME'; trivpn: 'trivpn pki issue {role} NAME') and point "
               f"'{m.cert_src.directive}' at {cert_at} to it.")
    if eku is not None and needed not in eku:
        wrong = "serverAuth" if needed == "clientAuth" else "clientAuth"
        hint = (" It carries the other role's purpose: the certificate files of client and "
                "server may have been swapped." if wrong in eku else "")
        return problem(
            cid, "fail", f"certificate has EKU {', '.join(eku)} but a {role} needs {needed}",
            explanation=(f"A peer configured with '{peer_check}' (standard in OpenVPN "
                         f"profiles) rejects this certificate with 'VERIFY EKU ERROR', and the "
                         f"handshake fails.{hint}"),
            fix=reissue, **evidence)
    if eku is None or ku is None:
        missing = " and ".join(n for n, v in (("extended key usage", eku),
                                              ("key usage", ku)) if v is None)
        return problem(
            cid, "fail" if strict else "warn",
            f"certificate has no {missing} extension",
            explanation=(f"'{peer_check}' requires both a key usage and the {needed} extended "
                         "key usage; a peer using it rejects this certificate ('Certificate "
                         "does not have key usage extension' / 'VERIFY EKU ERROR')."),
            fix=reissue, **evidence)
    return ok(cid, f"certificate is fit for a {role} (EKU {', '.join(eku)})", **evidence)


async def check_eku(ctx: DoctorContext) -> CheckResult:
    return await _with_material("pki.eku", ctx, _eku_body)


_DEPS = ("config.files",)
CHECKS: tuple[Check, ...] = (
    # after the handshake (when it runs): a server that accepted our certificate trusts its
    # issuer, even when that is not the CA this config verifies the server with
    Check("pki.chain", check_chain, depends_on=_DEPS, after=("tls.handshake",),
          needs_tls=True),
    Check("pki.validity", check_validity, depends_on=_DEPS, needs_tls=True),
    Check("pki.key_match", check_key_match, depends_on=_DEPS, needs_tls=True),
    Check("pki.eku", check_eku, depends_on=_DEPS, needs_tls=True),
)
