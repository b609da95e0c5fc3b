"""TLS in the control channel: ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` (docs/protocol.md §4).

Ciphertext from reassembled P_CONTROL_V1 payloads goes into the incoming BIO; whatever the
outgoing BIO holds is cut into control packets by the session. This mirrors OpenVPN's
bio_write/bio_read design. The ``ssl.SSLContext`` is built outside the protocol layer
(``trivpn.tlscontext``) because loading certificates touches files.

On top of chain validation (done by OpenSSL through the context) OpenVPN checks the peer's
certificate for ``ns-cert-type``, ``remote-cert-ku``, ``remote-cert-eku`` (``remote-cert-tls`` is
shorthand for the last two), ``verify-x509-name`` and ``crl-verify``, and takes the peer's name
from ``x509-username-field``; :func:`check_peer_certificate` does the same on the DER bytes
(OpenVPN's ssl_verify.c verify_cert / verify_peer_cert and ssl_verify_openssl.c).

The CRL itself is read outside this layer: :class:`CrlCheck` carries a callable that returns the
current :class:`RevocationLists` (the runtime re-reads the file when it changes) or, for
``crl-verify DIR dir``, one that says whether a file named after a serial exists.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trivpn.protocol.errors import CertificateRejected, HandshakeError

RemoteCertTls = Literal["server", "client"]
NsCertType = Literal["server", "client"]
X509NameType = Literal["subject", "name", "name-prefix"]

# Causes used in HandshakeError.reason; the doctor reports these words.
CAUSE_CERT_VERIFY_FAILED = "cert_verify_failed"
CAUSE_PEER_REJECTED_CERT = "peer_rejected_cert"
CAUSE_TLS_ALERT = "tls_alert"
CAUSE_CERT_REVOKED = "cert_revoked"

# remote-cert-ku with no argument: the key usage extension must be present, any value will do
# (OpenVPN's OPENVPN_KU_REQUIRED; remote-cert-tls sets it too).
KU_REQUIRED = 0xFFFF
# The extended key usage remote-cert-tls asks for, as OpenSSL's long names.
REMOTE_CERT_TLS_EKU: dict[str, str] = {"server": "TLS Web Server Authentication",
                                        "client": "TLS Web Client Authentication"}
# OpenVPN's limit on the name taken from the certificate (ssl_verify.c TLS_USERNAME_LEN) and on
# the joined name when x509-username-field lists several fields (its 256-byte buffer).
USERNAME_FIELD_MAX = 64
USERNAME_MAX = 255
# Deeper chains are refused (ssl_verify.c MAX_CERT_DEPTH).
_MAX_CHAIN = 16

_NS_CERT_TYPE_OID = x509.ObjectIdentifier("2.16.840.1.113730.1.1")
_NS_SSL_CLIENT, _NS_SSL_SERVER = 0x80, 0x40
# Server-gated-crypto purposes OpenSSL's SSL server purpose check also accepts.
_SGC_OIDS = (x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
             x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"))
_SAN_OID, _IAN_OID = "2.5.29.17", "2.5.29.18"
_DOTTED = re.compile(r"[0-9]+(\.[0-9]+)+")

_PEER_CERT_ALERTS = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_DECRYPT_ERROR",
)

OPENSSL_SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.TITLE: "title",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}
"""OpenSSL's short names of subject attributes (subjects in logs, easy-rsa's index.txt)."""


@dataclass(frozen=True, slots=True)
class RevocationLists:
    """The CRLs read from one ``crl-verify`` file (possibly none: then every peer is refused,
    as OpenVPN does with "VERIFY ERROR: CRL not loaded")."""

    crls: tuple[x509.CertificateRevocationList, ...]
    source: str = "crl-verify"


@dataclass(frozen=True, slots=True)
class CrlCheck:
    """``crl-verify``: exactly one of ``lists`` (FILE form: returns the current CRLs, called
    once per TLS handshake) and ``revoked_serial`` (DIR form: True when a file named after the
    decimal serial exists). ``ca_certs`` are the ``ca`` certificates: they verify the CRL's
    signature and complete the chain whose every certificate is checked."""

    ca_certs: tuple[x509.Certificate, ...]
    lists: Callable[[], RevocationLists] | None = None
    revoked_serial: Callable[[int], bool] | None = None


@dataclass(frozen=True, slots=True)
class PeerVerification:
    """OpenVPN's checks on the peer's certificate, beyond the CA chain.

    ``remote_cert_tls`` is shorthand for what that directive sets: ``remote_cert_ku`` =
    (KU_REQUIRED,) and ``remote_cert_eku`` = the TLS purpose; explicit values win.
    ``remote_cert_ku`` holds OpenVPN's list of accepted key-usage masks (``None``: not
    checked). ``username_fields`` are the x509-username-field fields (default the last CN).
    """

    remote_cert_tls: RemoteCertTls | None = None
    verify_x509_name: tuple[str, X509NameType] | None = None
    ns_cert_type: NsCertType | None = None
    remote_cert_eku: str | None = None
    remote_cert_ku: tuple[int, ...] | None = None
    username_fields: tuple[str, ...] = ("CN",)
    crl: CrlCheck | None = None
    # peer-fingerprint: SHA-256 digests one of which the peer's certificate must have
    fingerprints: tuple[bytes, ...] = ()
    # verify-hash: digests (issuer_hash: "sha1"/"sha256") one of which the CA certificate
    # that signed the peer's (chain depth 1) must have, looked up among ``issuers``
    issuer_fingerprints: tuple[bytes, ...] = ()
    issuer_hash: str = "sha1"
    issuers: tuple[x509.Certificate, ...] = ()

    @property
    def effective_eku(self) -> str | None:
        if self.remote_cert_eku is not None:
            return self.remote_cert_eku
        return REMOTE_CERT_TLS_EKU[self.remote_cert_tls] if self.remote_cert_tls else None

    @property
    def effective_ku(self) -> tuple[int, ...] | None:
        if self.remote_cert_ku is not None:
            return self.remote_cert_ku
        return (KU_REQUIRED,) if self.remote_cert_tls else None

    @property
    def checks_identity(self) -> bool:
        """True when some check tells a server certificate from another client's."""
        return bool(self.ns_cert_type or self.effective_eku or self.effective_ku
                    or self.verify_x509_name)


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the session learned about the peer's certificate."""

    subject: str
    common_name: str
    serial: int
    not_after_unix: float
    der: bytes = dataclass_field(default=b"", repr=False, compare=False)  # scripts' X509_0_*


def openssl_subject(name: x509.Name) -> str:
    """Subject text as OpenVPN prints it (``C=US, ST=CA, O=Example, CN=server``)."""
    parts = []
    for attr in name:
        short = OPENSSL_SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
        value = attr.value if isinstance(attr.value, str) else attr.value.hex()
        parts.append(f"{short}={value}")
    return ", ".join(parts)


def remap_name(text: str) -> str:
    """OpenVPN's character remapping of names taken from certificates (ssl_verify.c
    string_mod_remap_name): control characters (below 0x20, and DEL) become ``_``, so a name
    can never break a status-file, management or ifconfig-pool-persist line."""
    return "".join("_" if ord(c) < 0x20 or c == "\x7f" else c for c in text)


def peer_subject(name: x509.Name) -> str:
    """The subject as OpenVPN compares and logs it: remapped, no leading ``-``."""
    subject = remap_name(openssl_subject(name))
    return "_" + subject[1:] if subject.startswith("-") else subject


def attribute_oid(field: str) -> x509.ObjectIdentifier | None:
    """The OID a subject field name stands for, the way OpenSSL's OBJ_txt2obj reads it (short
    name, long name or dotted OID); None for a name OpenSSL does not know."""
    try:
        return x509.ObjectIdentifier(ssl._ASN1Object.fromname(field).oid)
    except ValueError:
        return x509.ObjectIdentifier(field) if _DOTTED.fullmatch(field) else None


def username_field_extension(field: str) -> str | None:
    """For ``ext:NAME`` fields: the extension's OID if it is one OpenVPN takes a name from
    (subjectAltName, issuerAltName), else None."""
    try:
        oid = ssl._ASN1Object.fromname(field).oid
    except ValueError:
        return None
    return oid if oid in (_SAN_OID, _IAN_OID) else None


def check_peer_certificate(der: bytes, policy: PeerVerification, *,
                           unix_now: float | None = None) -> PeerCertificate:
    """Apply OpenVPN's certificate checks in its order; raise HandshakeError naming what failed.

    ``unix_now`` (seconds since the epoch) is the time CRL validity is judged at; it is
    required when ``policy.crl`` is set.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise HandshakeError(f"peer certificate does not parse: {exc}", "tls",
                             reason=CAUSE_CERT_VERIFY_FAILED) from exc
    subject = peer_subject(cert.subject)
    common_name = remap_name(peer_username(cert, policy.username_fields, subject))
    if policy.fingerprints:  # ssl_verify.c, verify_cert: first, at depth 0
        digest = hashlib.sha256(der).digest()
        if not any(hmac.compare_digest(digest, fp) for fp in policy.fingerprints):
            raise _rejected(f"certificate of {subject} does not match any peer-fingerprint "
                            f"(its SHA256 fingerprint is {format_fingerprint(digest)})", cert,
                            common_name, "peer_fingerprint")
    if policy.issuer_fingerprints:
        _check_issuer_hash(cert, policy, subject, common_name)
    if policy.crl is not None:
        if unix_now is None:
            raise ValueError("crl-verify needs the current time")
        _check_crl(cert, policy.crl, unix_now, common_name)
    if policy.ns_cert_type is not None and not ns_cert_type_ok(cert, policy.ns_cert_type):
        raise _rejected(f"certificate of {subject} is not an SSL {policy.ns_cert_type} "
                        f"certificate (ns-cert-type {policy.ns_cert_type})", cert, common_name,
                        "ns_cert_type")
    ku = policy.effective_ku
    if ku is not None:
        _check_ku(cert, ku, subject, common_name)
    eku = policy.effective_eku
    if eku is not None and not eku_ok(cert, eku):
        raise _rejected(f"certificate of {subject} lacks extended key usage {eku}"
                        f"{_tls_hint(policy, eku)}", cert, common_name, "remote_cert_eku")
    if policy.verify_x509_name is not None:
        _check_x509_name(subject, common_name, *policy.verify_x509_name)
    return PeerCertificate(subject, common_name, cert.serial_number,
                           cert.not_valid_after_utc.timestamp(), der)


def _tls_hint(policy: PeerVerification, eku: str) -> str:
    if policy.remote_cert_tls and REMOTE_CERT_TLS_EKU[policy.remote_cert_tls] == eku:
        return f" (remote-cert-tls {policy.remote_cert_tls})"
    return " (remote-cert-eku)"


def _rejected(message: str, cert: x509.Certificate, common_name: str, check: str,
              reason: str = CAUSE_CERT_VERIFY_FAILED) -> CertificateRejected:
    return CertificateRejected(message, "tls", reason=reason, check=check,
                               serial=cert.serial_number, common_name=common_name)


def _check_issuer_hash(cert: x509.Certificate, policy: PeerVerification, subject: str,
                       common_name: str) -> None:
    """verify-hash (ssl_verify.c, verify_cert at depth 1): the CA from ``ca`` that signed
    ``cert`` must have a listed fingerprint."""
    for issuer in policy.issuers:
        if issuer.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        der = issuer.public_bytes(Encoding.DER)
        digest = hashlib.new(policy.issuer_hash, der).digest()
        if any(hmac.compare_digest(digest, fp) for fp in policy.issuer_fingerprints):
            return
        raise _rejected(f"the CA that signed the certificate of {subject} does not match "
                        f"verify-hash (its {policy.issuer_hash.upper()} fingerprint is "
                        f"{format_fingerprint(digest)})", cert, common_name, "verify_hash")
    raise _rejected(f"the CA that signed the certificate of {subject} is not in 'ca', so "
                    "verify-hash cannot check it", cert, common_name, "verify_hash")


def format_fingerprint(digest: bytes) -> str:
    """``AB:CD:...``, the form peer-fingerprint takes and OpenVPN prints."""
    return ":".join(f"{b:02X}" for b in digest)


# --- x509-username-field -------------------------------------------------------------------

def peer_username(cert: x509.Certificate, fields: tuple[str, ...], subject: str = "") -> str:
    """The name OpenVPN takes from a certificate (before remapping): each field's value
    (the last occurrence in the subject; the last e-mail of ext:subjectAltName /
    ext:issuerAltName; ``serialNumber`` as 0x-hex), joined with ``_``."""
    parts = []
    for field in fields:
        value = _username_field(cert, field)
        if value is None or len(value.encode()) > USERNAME_FIELD_MAX:
            raise HandshakeError(
                f"could not extract {field} from X509 subject string ('{subject}') -- note "
                f"that the field length is limited to {USERNAME_FIELD_MAX} characters",
                "tls", reason=CAUSE_CERT_VERIFY_FAILED)
        parts.append(value)
    name = "_".join(parts)
    if len(name.encode()) > USERNAME_MAX:
        raise HandshakeError(f"the name taken from {' '.join(fields)} is longer than "
                             f"{USERNAME_MAX} bytes", "tls", reason=CAUSE_CERT_VERIFY_FAILED)
    return name


def _username_field(cert: x509.Certificate, field: str) -> str | None:
    if field.startswith("ext:"):
        oid = username_field_extension(field[4:])
        if oid is None:
            return None
        try:
            ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except (x509.ExtensionNotFound, ValueError):
            return None
        assert isinstance(ext, x509.SubjectAlternativeName | x509.IssuerAlternativeName)
        emails = [e for e in ext.get_values_for_type(x509.RFC822Name) if "\0" not in e]
        return emails[-1] if emails else None
    if field == "serialNumber":
        # The integer's magnitude bytes in upper-case hex, as OpenVPN formats it.
        magnitude = abs(cert.serial_number)
        return "0x" + magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8)).hex().upper()
    attr = attribute_oid(field)
    if attr is None:
        return None
    values = cert.subject.get_attributes_for_oid(attr)
    if not values:
        return None
    value = values[-1].value
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return text.split("\0", 1)[0]  # OpenVPN copies it as a C string


# --- ns-cert-type, remote-cert-ku, remote-cert-eku -----------------------------------------

def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _ns_cert_type_bits(cert: x509.Certificate) -> int | None:
    """The first byte of the Netscape cert type bit string, or None without the extension."""
    try:
        ext = cert.extensions.get_extension_for_oid(_NS_CERT_TYPE_OID).value
    except x509.ExtensionNotFound:
        return None
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    # DER BIT STRING: 03, short length, unused-bits count, then the bits.
    if len(raw) < 3 or raw[0] != 0x03 or raw[1] & 0x80:
        return None
    return raw[3] if raw[1] >= 2 and len(raw) > 3 else 0


def key_usage_bits(cert: x509.Certificate) -> int | None:
    """Key usage as OpenVPN numbers it (digitalSignature 0x80 ... encipherOnly 0x01), None
    without the extension."""
    ku = _extension(cert, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage):
        return None
    bits = [ku.digital_signature, ku.content_commitment, ku.key_encipherment,
            ku.data_encipherment, ku.key_agreement, ku.key_cert_sign, ku.crl_sign,
            ku.key_agreement and ku.encipher_only]
    return sum(1 << (7 - i) for i, on in enumerate(bits) if on)


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    eku = _extension(cert, x509.ExtendedKeyUsage)
    return list(eku) if isinstance(eku, x509.ExtendedKeyUsage) else None


def ns_cert_type_ok(cert: x509.Certificate, want: NsCertType) -> bool:
    """OpenVPN's ``ns-cert-type``: OpenSSL's SSL client/server purpose check on the leaf, or
    failing that the Netscape cert type extension's client/server bit."""
    ekus = _ekus(cert)
    ku = key_usage_bits(cert)
    ns = _ns_cert_type_bits(cert)
    if want == "server":
        eku_ok_ = ekus is None or any(o == ExtendedKeyUsageOID.SERVER_AUTH or o in _SGC_OIDS
                                      for o in ekus)
        ns_bit, ku_mask = _NS_SSL_SERVER, 0x80 | 0x20 | 0x08
    else:
        eku_ok_ = ekus is None or ExtendedKeyUsageOID.CLIENT_AUTH in ekus
        ns_bit, ku_mask = _NS_SSL_CLIENT, 0x80 | 0x08
    purpose = (eku_ok_ and (ns is None or bool(ns & ns_bit))
               and (ku is None or bool(ku & ku_mask)))
    return purpose or (ns is not None and bool(ns & ns_bit))


def _check_ku(cert: x509.Certificate, expected: tuple[int, ...], subject: str,
              common_name: str) -> None:
    have = key_usage_bits(cert)
    if have is None:
        raise _rejected(f"certificate of {subject} does not have the key usage extension",
                        cert, common_name, "remote_cert_ku")
    if expected[0] == KU_REQUIRED:
        return
    if not any(want != 0 and have & want == want for want in expected):
        wanted = ", ".join(f"{w:04x}" for w in expected if w)
        raise _rejected(f"certificate of {subject} has key usage {have:04x}, expected one of: "
                        f"{wanted}", cert, common_name, "remote_cert_ku")


def eku_name(oid: x509.ObjectIdentifier) -> str:
    """OpenSSL's text for an OID (its long name, else the dotted form)."""
    try:
        obj = ssl._ASN1Object.fromname(oid.dotted_string)
    except ValueError:
        return oid.dotted_string
    return obj.longname or obj.shortname or oid.dotted_string


def eku_ok(cert: x509.Certificate, expected: str) -> bool:
    """OpenVPN's ``remote-cert-eku``: some EKU's OpenSSL long name or dotted OID equals
    ``expected`` exactly."""
    return any(expected in (eku_name(o), o.dotted_string) for o in _ekus(cert) or ())


# --- crl-verify ----------------------------------------------------------------------------

_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----\r?\n.*?-----END X509 CRL-----", re.S)


def parse_crls(pem: bytes, source: str = "crl-verify") -> RevocationLists:
    """Every PEM CRL in ``pem`` up to the first malformed one (what OpenVPN loads)."""
    crls = []
    for block in _CRL_PEM.finditer(pem):
        try:
            crls.append(x509.load_pem_x509_crl(block.group(0)))
        except ValueError:
            break
    return RevocationLists(tuple(crls), source)


def _chain(cert: x509.Certificate, cas: tuple[x509.Certificate, ...]) -> list[x509.Certificate]:
    """The peer's certificate and its issuers among the ``ca`` certificates."""
    chain = [cert]
    while len(chain) < _MAX_CHAIN and chain[-1].issuer != chain[-1].subject:
        issuer = next((ca for ca in cas if ca.subject == chain[-1].issuer), None)
        if issuer is None or issuer in chain:
            break
        chain.append(issuer)
    return chain


def _issuer_of(cert: x509.Certificate, cas: tuple[x509.Certificate, ...]
               ) -> x509.Certificate | None:
    if cert.issuer == cert.subject:
        return cert
    return next((ca for ca in cas if ca.subject == cert.issuer), None)


def _check_crl(cert: x509.Certificate, check: CrlCheck, unix_now: float,
               common_name: str) -> None:
    chain = _chain(cert, check.ca_certs)
    if check.revoked_serial is not None:
        for depth, member in enumerate(chain):
            if check.revoked_serial(member.serial_number):
                raise _revoked(cert, common_name, depth, member, "is revoked (crl-verify dir)")
        return
    assert check.lists is not None
    lists = check.lists()
    if not lists.crls:
        raise _rejected(f"no CRL could be read from {lists.source}: every peer is refused",
                        cert, common_name, "crl_verify", CAUSE_CERT_REVOKED)
    now = datetime.fromtimestamp(unix_now, UTC)
    for depth, member in enumerate(chain):
        candidates = [c for c in lists.crls if c.issuer == member.issuer]
        if not candidates:
            continue  # no CRL from this issuer: OpenVPN only warns
        current = [c for c in candidates if _crl_time_error(c, now) is None]
        crl = (current or candidates)[0]
        issuer = _issuer_of(member, check.ca_certs)
        if issuer is None or not _signed_by(crl, issuer):
            raise _revoked(cert, common_name, depth, member, "CRL signature failure")
        problem = _crl_time_error(crl, now)
        if problem is not None:
            raise _revoked(cert, common_name, depth, member, problem)
        if crl.get_revoked_certificate_by_serial_number(member.serial_number) is not None:
            raise _revoked(cert, common_name, depth, member, "certificate revoked")


def revoked_serials(lists: RevocationLists, cas: tuple[x509.Certificate, ...]) -> frozenset[int]:
    """The serials revoked by those of ``lists``' CRLs that one of ``cas`` signed (for
    re-checking peers already connected when the CRL changes)."""
    found: set[int] = set()
    for crl in lists.crls:
        issuer = next((ca for ca in cas if ca.subject == crl.issuer), None)
        if issuer is not None and _signed_by(crl, issuer):
            found.update(entry.serial_number for entry in crl)
    return frozenset(found)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:  # is_signature_valid raises for key types that cannot sign a CRL (X25519...)
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _crl_time_error(crl: x509.CertificateRevocationList, now: datetime) -> str | None:
    if crl.last_update_utc > now:
        return "CRL is not yet valid"
    next_update = crl.next_update_utc
    if next_update is not None and next_update < now:
        return "CRL has expired"
    return None


def _revoked(peer: x509.Certificate, common_name: str, depth: int,
             member: x509.Certificate, problem: str) -> CertificateRejected:
    return CertificateRejected(
        f"crl-verify: depth={depth}, {peer_subject(member.subject)}, "
        f"serial={member.serial_number}: {problem}", "tls", reason=CAUSE_CERT_REVOKED,
        check="crl_verify", serial=peer.serial_number, common_name=common_name)


def _check_x509_name(subject: str, common_name: str, name: str, kind: X509NameType) -> None:
    if kind == "subject":
        ok = subject == name
    elif kind == "name":
        ok = common_name == name
    else:
        ok = common_name.startswith(name)
    if not ok:
        raise HandshakeError(f"peer {subject} does not match verify-x509-name {name} {kind}",
                             "tls", reason=CAUSE_CERT_VERIFY_FAILED)


def _classify(exc: ssl.SSLError) -> HandshakeError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        return HandshakeError(f"peer certificate verification failed: {detail}", "tls",
                              reason=CAUSE_CERT_VERIFY_FAILED)
    text = (exc.reason or str(exc)).upper()
    if any(alert in text for alert in _PEER_CERT_ALERTS):
        return HandshakeError(f"peer rejected our certificate: TLS alert {exc.reason}", "tls",
                              reason=CAUSE_PEER_REJECTED_CERT)
    if "ALERT" in text:
        return HandshakeError(f"TLS alert from peer: {exc.reason}", "tls", reason=CAUSE_TLS_ALERT)
    return HandshakeError(f"TLS error: {exc.reason or exc}", "tls", reason=CAUSE_TLS_ALERT)


# RFC 5705 keying-material export on an SSL object: (object, label, length) -> bytes; raises
# ValueError when it fails. The ssl module has none: the runtime injects one (tlsnative.py).
KeyExporter = Callable[[ssl.SSLObject, bytes, int], bytes]


class TlsEndpoint:
    """One TLS session (one per key id) over memory BIOs."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 exporter: KeyExporter | None = None) -> None:
        self._exporter = exporter
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=None)
        self.handshake_complete = False

    def feed(self, ciphertext: bytes) -> None:
        self._incoming.write(ciphertext)

    def export_keying_material(self, label: bytes, length: int) -> bytes:
        """RFC 5705 keying material of this TLS session (TLS-EKM); ValueError without an
        exporter or when it fails."""
        if self._exporter is None or not self.handshake_complete:
            raise ValueError("no keying-material exporter for this TLS session")
        return self._exporter(self._obj, label, length)

    def take_ciphertext(self) -> bytes:
        return self._outgoing.read()

    def advance(self) -> bool:
        """Drive the handshake as far as the input allows. True once it is complete."""
        if self.handshake_complete:
            return True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise _classify(exc) from exc
        self.handshake_complete = True
        return True

    def read(self) -> bytes:
        """All plaintext available now (may be empty)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(16384)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLError as exc:
                raise _classify(exc) from exc
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, plaintext: bytes) -> None:
        try:
            self._obj.write(plaintext)
        except ssl.SSLError as exc:
            raise _classify(exc) from exc

    def peer_certificate_der(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)

    def describe(self) -> str:
        cipher = self._obj.cipher()
        version = self._obj.version() or "?"
        return f"{version}, cipher {cipher[0]}" if cipher else version
