"""Facts about certificates and CRLs that the ``pki.*`` and ``tls.*`` checks judge: dates,
signature digests and key sizes against OpenSSL's security levels, CRL freshness, and the cause
of a failed verification of the server's certificate.

Pure functions on ``cryptography`` objects and an :class:`~trivpn.config.Options`; no I/O.

OpenSSL security levels (OpenSSL 3, ``SSL_CTX_set_security_level``): level 1 needs 80 bits of
security, 2 needs 112, 3 needs 128. An RSA key of 1024 bits counts 80, 2048 bits 112, 3072 bits
128; an EC key half its curve size. SHA-1 signatures count 63 bits and MD5 39 (OpenSSL 3's
``X509_get_signature_info``), so OpenSSL 3 refuses them from level 1 up. OpenVPN 2.6 sets the
level from ``tls-cert-profile`` (ssl_openssl.c, tls_ctx_set_cert_profile: legacy, the default,
is 1; preferred 2; suiteb 3; insecure 0) over whatever the system's OpenSSL config says; an
``@SECLEVEL=n`` inside ``tls-cipher`` (set after the profile) wins.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trivpn.config import Options
from trivpn.protocol.tls import peer_subject

EXPIRY_WARNING = timedelta(days=30)
# OpenSSL's bits of security each level requires (ssl/ssl_cert.c, ssl_security_default_callback)
LEVEL_BITS = {0: 0, 1: 80, 2: 112, 3: 128, 4: 192, 5: 256}
PROFILE_LEVELS = {"insecure": 0, "legacy": 1, "preferred": 2, "suiteb": 3}
# Bits of security of a signature's digest, as OpenSSL 3 counts them (crypto/x509/x509_set.c)
DIGEST_BITS = {"md5": 39, "sha1": 63, "sha224": 112, "sha256": 128, "sha384": 192,
               "sha512": 256, "sha3-256": 128, "sha3-384": 192, "sha3-512": 256}
_SECLEVEL_IN_CIPHER = re.compile(r"@SECLEVEL=(\d)", re.I)

def _utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def subject_of(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[-1].value  # OpenVPN takes the last CN
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def fingerprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return ":".join(f"{b:02X}" for b in digest)


# --- security levels -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Level:
    """The OpenSSL security level OpenVPN 2.6 would run this config at, and why."""

    level: int
    source: str  # "tls-cert-profile legacy (OpenVPN's default)", "@SECLEVEL=2 in tls-cipher"
    system_default: int  # the level this machine's OpenSSL config gives a new context

    @property
    def bits(self) -> int:
        return LEVEL_BITS.get(self.level, 256)


def system_security_level() -> int:
    """The security level a fresh OpenSSL context gets here (build default and openssl.cnf),
    read through the ``ssl`` module, which uses the same OpenSSL configuration."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).security_level


def openvpn_level(o: Options) -> Level:
    system = system_security_level()
    if o.tls_cipher is not None:
        found = _SECLEVEL_IN_CIPHER.search(o.tls_cipher)
        if found is not None:
            return Level(int(found.group(1)), f"@SECLEVEL={found.group(1)} in tls-cipher", system)
    profile = o.tls_cert_profile or "legacy"
    level = PROFILE_LEVELS.get(profile, 1)
    why = ("tls-cert-profile legacy, OpenVPN 2.6's default" if o.tls_cert_profile is None
           else f"tls-cert-profile {profile}")
    return Level(level, why, system)


def digest_name(cert: x509.Certificate) -> str | None:
    """The signature's digest (``sha256``), None for Ed25519/Ed448 (no separate digest)."""
    try:
        algo = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return "unknown"
    return algo.name if algo is not None else None


def signature_bits(cert: x509.Certificate) -> int | None:
    name = digest_name(cert)
    if name is None:
        oid = cert.signature_algorithm_oid.dotted_string
        return 224 if oid == "1.3.101.113" else 128  # Ed448, Ed25519
    return DIGEST_BITS.get(name)


def key_description(cert: x509.Certificate) -> tuple[str, int, int]:
    """(``RSA 2048``, key size in bits, bits of security as OpenSSL counts them)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey):
        size = key.key_size
        kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "DSA"
        sec = next((s for n, s in ((15360, 256), (7680, 192), (3072, 128), (2048, 112),
                                   (1024, 80)) if size >= n), 0)
        return f"{kind} {size}", size, sec
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}", key.key_size, key.key_size // 2
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, 128
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, 224
    return type(key).__name__, 0, 0


def self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and signed_by(cert, cert)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s key made ``cert``'s signature (also for SHA-1/MD5 signatures, which
    ``verify_directly_issued_by`` refuses)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    key = issuer.public_key()
    try:
        algo = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algo)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
            return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return False


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    label: str  # "cert", "ca", "server certificate"
    subject: str
    problem: Literal["md too weak", "key too small"]
    detail: str  # "signed with SHA1 (63 bits)" / "RSA 1024 (80 bits)"
    needs_level: int  # the highest level that still accepts it
    openssl_error: str  # what OpenSSL says when it refuses it


def max_level_for(bits: int) -> int:
    return max((lvl for lvl, need in LEVEL_BITS.items() if bits >= need), default=0)


def policy_findings(certs: Sequence[tuple[str, x509.Certificate]], level: int
                    ) -> list[PolicyFinding]:
    """The certificates OpenSSL refuses at ``level``: digests of signatures (except a
    self-signed root's own) and keys. ``certs`` are (label, certificate), leaf first."""
    need = LEVEL_BITS.get(level, 256)
    out: list[PolicyFinding] = []
    for i, (label, cert) in enumerate(certs):
        sig = signature_bits(cert)
        if sig is not None and sig < need and not self_signed(cert):
            name = (digest_name(cert) or "?").upper()
            out.append(PolicyFinding(label, subject_of(cert), "md too weak",
                                     f"signed with {name} ({sig} bits of security)",
                                     max_level_for(sig), "ca md too weak"))
        desc, _size, sec = key_description(cert)
        if sec < need:
            leaf = i == 0 and not cert_is_ca(cert)
            out.append(PolicyFinding(label, subject_of(cert), "key too small",
                                     f"{desc} key ({sec} bits of security)", max_level_for(sec),
                                     "ee key too small" if leaf else "ca key too small"))
    return out


def cert_is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# --- dates -----------------------------------------------------------------------------------

def cert_state(cert: x509.Certificate, now: datetime) -> str:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        return "not yet valid"
    if now > na:
        return "expired"
    if na - now < EXPIRY_WARNING:
        return f"expires in {(na - now).days} days"
    return "valid"


@dataclass(frozen=True, slots=True)
class CrlFacts:
    issuer: str
    this_update: datetime
    next_update: datetime | None
    revoked: int
    state: str  # "valid", "not yet valid", "expired", "expires in N days"
    signed_by_ca: bool | None  # None: no CA to check it with

    def as_evidence(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "this_update": _utc(self.this_update),
                "next_update": _utc(self.next_update) if self.next_update else None,
                "revoked_serials": self.revoked, "state": self.state,
                "signed_by_ca": self.signed_by_ca}


def crl_facts(crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate],
              now: datetime) -> CrlFacts:
    nu = crl.next_update_utc
    if crl.last_update_utc > now:
        state = "not yet valid"
    elif nu is not None and nu < now:
        state = "expired"
    elif nu is not None and nu - now < EXPIRY_WARNING:
        state = f"expires in {(nu - now).days} days"
    else:
        state = "valid"
    issuer = next((c for c in cas if c.subject == crl.issuer), None)
    signed: bool | None = None
    if cas:
        signed = False
        if issuer is not None:
            try:
                signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError, UnsupportedAlgorithm):
                signed = False
    return CrlFacts(crl.issuer.rfc4514_string(), crl.last_update_utc, nu, len(crl), state,
                    signed)


# --- the server's certificate ---------------------------------------------------------------

def usage(cert: x509.Certificate) -> tuple[list[str] | None, list[str] | None]:
    """(EKU names or None when absent, KeyUsage bits or None when absent)."""
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
             ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku: list[str] | None = [names.get(o, o.dotted_string) for o in ekus]
    except x509.ExtensionNotFound:
        eku = None
    try:
        k = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        bits = ["digital_signature", "content_commitment", "key_encipherment",
                "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign"]
        ku: list[str] | None = [b for b in bits if getattr(k, b)]
    except x509.ExtensionNotFound:
        ku = None
    return eku, ku


def cert_facts(cert: x509.Certificate) -> dict[str, Any]:
    """What the evidence shows of a certificate (JSON-ready)."""
    eku, ku = usage(cert)
    desc, _size, sec = key_description(cert)
    return {"subject": subject_of(cert), "common_name": common_name(cert),
            "issuer": cert.issuer.rfc4514_string(), "serial": cert.serial_number,
            "not_before": _utc(cert.not_valid_before_utc),
            "not_after": _utc(cert.not_valid_after_utc),
            "signature_digest": digest_name(cert), "key": desc, "key_security_bits": sec,
            "eku": eku, "key_usage": ku, "sha256_fingerprint": fingerprint(cert)}


# OpenSSL's verify messages (X509_verify_cert_error_string) and trivpn's own (protocol/tls.py,
# check_peer_certificate), each with the cause it stands for
_MESSAGE_CAUSES: tuple[tuple[str, str], ...] = (
    ("certificate has expired", "expired"),
    ("certificate is not yet valid", "not_yet_valid"),
    ("unsuitable certificate purpose", "eku"),
    ("lacks extended key usage", "eku"),
    ("is not an ssl server certificate", "eku"),
    ("key usage", "ku"),
    ("signature digest algorithm too weak", "md_too_weak"),
    ("key too weak", "key_too_small"),
    ("key too small", "key_too_small"),
    ("crl has expired", "crl_expired"),
    ("crl is not yet valid", "crl_not_yet_valid"),
    ("no crl could be read", "crl_unreadable"),
    ("crl signature failure", "crl_bad_signature"),
    ("revoked", "revoked"),
    ("verify-x509-name", "name_mismatch"),
    ("peer-fingerprint", "fingerprint"),
    ("verify-hash", "untrusted_ca"),
    ("unable to get local issuer", "untrusted_ca"),
    ("unable to get issuer", "untrusted_ca"),
    ("self-signed certificate", "untrusted_ca"),
    ("self signed certificate", "untrusted_ca"),
    ("certificate signature failure", "untrusted_ca"),
    ("unable to verify the first certificate", "untrusted_ca"),
)


def cause_from_message(detail: str) -> str | None:
    text = detail.lower()
    return next((cause for needle, cause in _MESSAGE_CAUSES if needle in text), None)


@dataclass(frozen=True, slots=True)
class ServerCertInputs:
    """What the client's config says about the server's certificate."""

    anchors: tuple[x509.Certificate, ...]  # ca / pkcs12 CAs / capath certificates
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    revoked_serials_dir: frozenset[int] = frozenset()  # crl-verify DIR dir
    level: int = 1
    fingerprints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fact:
    cause: str
    text: str


@dataclass
class ServerCertFindings:
    facts: list[Fact] = field(default_factory=list)

    def causes(self) -> list[str]:
        return [f.cause for f in self.facts]


def server_cert_findings(cert: x509.Certificate, o: Options, inputs: ServerCertInputs,
                         now: datetime) -> ServerCertFindings:
    """Every reason this client's config refuses ``cert``, in OpenVPN's order of checks
    (OpenSSL's chain verification, then ssl_verify.c's: peer-fingerprint, CRL, ns-cert-type,
    remote-cert-ku, remote-cert-eku, verify-x509-name)."""
    out = ServerCertFindings()
    add = out.facts.append
    if inputs.anchors and not any(signed_by(cert, a) for a in inputs.anchors):
        named = [a for a in inputs.anchors if a.subject == cert.issuer]
        add(Fact("untrusted_ca", f"issued by {cert.issuer.rfc4514_string()}, "
                 + ("a CA with that name is in 'ca' but its key did not sign it (the CA was "
                    "regenerated?)" if named else "which is not among the configured CAs")))
    state = cert_state(cert, now)
    if state == "expired":
        add(Fact("expired", f"expired at {_utc(cert.not_valid_after_utc)}"))
    elif state == "not yet valid":
        add(Fact("not_yet_valid", f"valid only from {_utc(cert.not_valid_before_utc)}"))
    for f in policy_findings([("server certificate", cert)], inputs.level):
        add(Fact("md_too_weak" if f.problem == "md too weak" else "key_too_small", f.detail))
    eku, ku = usage(cert)
    if eku is not None and "serverAuth" not in eku:
        add(Fact("eku", f"its extended key usage is {', '.join(eku)}, without serverAuth "
                 "(OpenSSL: 'unsuitable certificate purpose')"))
    if inputs.fingerprints and fingerprint(cert) not in inputs.fingerprints:
        add(Fact("fingerprint", f"its SHA256 fingerprint {fingerprint(cert)} is not listed in "
                 "peer-fingerprint"))
    out.facts += _revocation_facts(cert, inputs, now)
    wants_ku = o.remote_cert_ku is not None or o.remote_cert_tls is not None
    if wants_ku and ku is None:
        add(Fact("ku", "it has no key usage extension (remote-cert-tls / remote-cert-ku "
                 "require one)"))
    wanted_eku = o.remote_cert_eku or ("TLS Web Server Authentication"
                                       if o.remote_cert_tls == "server" else None)
    if (wanted_eku is not None and not any(f.cause == "eku" for f in out.facts)
            and (eku is None or ("serverAuth" not in eku
                                 and wanted_eku == "TLS Web Server Authentication"))):
        add(Fact("eku", "it has no extended key usage extension" if eku is None else
                 f"its extended key usage is {', '.join(eku)}, without serverAuth"))
    if o.verify_x509_name is not None and not x509_name_matches(cert, o.verify_x509_name.name,
                                                                o.verify_x509_name.type):
        add(Fact("name_mismatch", f"its subject is {openssl_subject(cert)}"))
    return out


def _revocation_facts(cert: x509.Certificate, inputs: ServerCertInputs,
                      now: datetime) -> list[Fact]:
    """crl-verify: the CRLs of the certificate's issuer (their dates, its serial)."""
    out: list[Fact] = []
    for crl in inputs.crls:
        if crl.issuer != cert.issuer:
            continue
        facts = crl_facts(crl, inputs.anchors, now)
        if facts.state == "expired":
            out.append(Fact("crl_expired", f"the CRL from {facts.issuer} expired at "
                            f"{_utc(facts.next_update) if facts.next_update else '?'}"))
        elif facts.state == "not yet valid":
            out.append(Fact("crl_not_yet_valid", f"the CRL from {facts.issuer} is valid "
                            f"only from {_utc(facts.this_update)}"))
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            out.append(Fact("revoked", f"serial {cert.serial_number} is revoked by the CRL "
                            f"of {facts.issuer}"))
    if cert.serial_number in inputs.revoked_serials_dir:
        out.append(Fact("revoked", f"serial {cert.serial_number} has a file in the "
                        "crl-verify directory"))
    return out


def openssl_subject(cert: x509.Certificate) -> str:
    return peer_subject(cert.subject)


def x509_name_matches(cert: x509.Certificate, name: str, kind: str) -> bool:
    if kind == "subject":
        return openssl_subject(cert) == name
    cn = common_name(cert) or ""
    return cn == name if kind == "name" else cn.startswith(name)


def x509_name_line(cert: x509.Certificate, kind: str) -> str:
    """The verify-x509-name line that would accept ``cert`` with the same kind of match."""
    if kind == "subject":
        return f"verify-x509-name '{openssl_subject(cert)}' subject"
    cn = common_name(cert) or ""
    quoted = f"'{cn}'" if any(c.isspace() for c in cn) or not cn else cn
    return f"verify-x509-name {quoted} {kind}"


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The server's clock as its tls-auth/tls-crypt packet timestamps show it."""

    server_unix: int
    our_unix: float

    @property
    def skew_s(self) -> float:
        """How far our clock is ahead of the server's (negative: behind)."""
        return round(self.our_unix - self.server_unix, 1)
