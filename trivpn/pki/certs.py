"""X.509 certificates for OpenVPN-style TLS: a CA and the server/client leaves it signs.

Profile (what OpenVPN's ``remote-cert-tls`` checks need, docs/protocol.md §4.3):

* CA: BasicConstraints CA:TRUE (critical), KeyUsage keyCertSign+cRLSign (critical), SKI.
* server leaf: EKU serverAuth, KeyUsage digitalSignature plus keyEncipherment (RSA) or
  keyAgreement (EC), SAN DNS:name (plus IP:name when the name is an IP address).
* client leaf: EKU clientAuth, KeyUsage digitalSignature.
* every leaf: BasicConstraints CA:FALSE, SKI, AKI from the CA's SKI, subject CN = name.

Pure functions: nothing here touches files; ``now`` may be passed for reproducible validity.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trivpn.pki.errors import PkiError
from trivpn.pki.keys import DEFAULT_KEY_TYPE, KeyType, PrivateKey, generate_private_key

CertKind = Literal["server", "client"]
CERT_KINDS: tuple[CertKind, ...] = ("server", "client")

DEFAULT_CA_CN = "trivpn CA"
DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 825
# Validity starts a little in the past so a peer whose clock lags ours still accepts the cert.
BACKDATE = timedelta(hours=1)
MAX_CN_LENGTH = 64  # X.509 upper bound, and OpenVPN's limit for the common name it uses

DEFAULT_EKU: dict[CertKind, tuple[x509.ObjectIdentifier, ...]] = {
    "server": (ExtendedKeyUsageOID.SERVER_AUTH,),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}


@dataclass(frozen=True, slots=True)
class Credential:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        check_key_matches(self.cert, self.key)

    @property
    def common_name(self) -> str:
        return common_name(self.cert)


def check_key_matches(cert: x509.Certificate, key: PrivateKey, where: str = "") -> None:
    """Raise unless ``key`` is the private half of ``cert``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER, spki)
    if ours != theirs:
        raise PkiError(f"private key does not match certificate {common_name(cert)!r}", where)


def common_name(cert: x509.Certificate) -> str:
    """The subject CN, or ``""`` when there is none."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def create_ca(
    cn: str = DEFAULT_CA_CN,
    *,
    key_type: KeyType = DEFAULT_KEY_TYPE,
    days: int = DEFAULT_CA_DAYS,
    now: datetime | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Credential:
    """A new key and a self-signed CA certificate for it.

    Validity runs from ``now - BACKDATE`` for ``days`` days unless ``not_before`` /
    ``not_after`` override either end.
    """
    _check_cn(cn)
    key = generate_private_key(key_type)
    start, end = _validity(days, now, not_before, not_after)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
        )
    )
    return Credential(builder.sign(key, _hash_for(key)), key)


def issue_cert(
    ca: Credential,
    kind: CertKind,
    name: str,
    *,
    key_type: KeyType = DEFAULT_KEY_TYPE,
    days: int = DEFAULT_LEAF_DAYS,
    now: datetime | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    key_usage: bool = True,
    key: PrivateKey | None = None,
    subject: x509.Name | None = None,
) -> Credential:
    """A new key (or ``key`` when given) and a ``kind`` leaf certificate for ``name``
    signed by ``ca``.

    Overrides for tests and diagnostics: ``not_before`` / ``not_after`` (expired or not yet
    valid certs), ``eku`` (``None`` = the kind's default, an empty sequence = no EKU extension,
    otherwise exactly these purposes) and ``key_usage=False`` (no KeyUsage extension).
    ``subject`` replaces the subject ``CN=name`` (renewing a certificate keeps its whole DN).
    """
    if kind not in CERT_KINDS:
        raise PkiError(f"unknown certificate kind {kind!r}; expected server or client")
    _check_cn(name)
    if key is None:
        key = generate_private_key(key_type)
    public = key.public_key()
    start, end = _validity(days, now, not_before, not_after)
    purposes = DEFAULT_EKU[kind] if eku is None else tuple(eku)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None
                      else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_authority_key_id(ca.cert), critical=False)
    )
    if key_usage:
        if kind == "client":
            usage = _key_usage(digital_signature=True)
        elif isinstance(key, rsa.RSAPrivateKey):
            usage = _key_usage(digital_signature=True, key_encipherment=True)
        else:
            usage = _key_usage(digital_signature=True, key_agreement=True)
        builder = builder.add_extension(usage, critical=True)
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if kind == "server":
        builder = builder.add_extension(_subject_alt_name(name), critical=False)
    return Credential(builder.sign(ca.key, _hash_for(ca.key)), key)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def request_pem(cred: Credential) -> bytes:
    """A PKCS#10 request for ``cred``'s subject signed by its key (easy-rsa's reqs/NAME.req)."""
    csr = (x509.CertificateSigningRequestBuilder().subject_name(cred.cert.subject)
           .sign(cred.key, _hash_for(cred.key)))
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificates(text: str, where: str = "certificate") -> tuple[x509.Certificate, ...]:
    """Parse every ``-----BEGIN CERTIFICATE-----`` block in ``text`` (a chain), in order.

    Raises :class:`PkiError` naming ``where`` when there is none or one is malformed.
    """
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise PkiError("no PEM certificate found", where)
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii", "replace"))
    except ValueError as exc:
        raise PkiError(f"malformed PEM certificate ({exc})", where) from None
    return tuple(certs)


def load_certificate(text: str, where: str = "certificate") -> x509.Certificate:
    """Exactly one PEM certificate."""
    certs = load_certificates(text, where)
    if len(certs) != 1:
        raise PkiError(f"expected one certificate, found {len(certs)}", where)
    return certs[0]


def _check_cn(cn: str) -> None:
    if not cn or len(cn) > MAX_CN_LENGTH:
        raise PkiError(f"common name must be 1..{MAX_CN_LENGTH} characters, got {len(cn)}")


def _validity(
    days: int, now: datetime | None, not_before: datetime | None, not_after: datetime | None
) -> tuple[datetime, datetime]:
    if days <= 0:
        raise PkiError(f"validity must be a positive number of days, got {days}")
    now = now if now is not None else datetime.now(UTC)
    start = not_before if not_before is not None else now - BACKDATE
    end = not_after if not_after is not None else now + timedelta(days=days)
    if end <= start:
        raise PkiError(f"not_after ({end.isoformat()}) is not after not_before "
                       f"({start.isoformat()})")
    return start, end


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Use the CA's own SKI when it has one (the AKI must match it); otherwise derive it.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _subject_alt_name(name: str) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = [x509.DNSName(name)]
    with contextlib.suppress(ValueError):
        entries.append(x509.IPAddress(ipaddress.ip_address(name)))
    return x509.SubjectAlternativeName(entries)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign without a separate digest; everything else uses SHA-256.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()
