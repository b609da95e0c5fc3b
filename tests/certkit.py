"""Certificates with exactly the extensions a test asks for (subject, KU, EKU, nsCertType, SAN).

``trivpn.pki.certs.issue_cert`` makes well-formed OpenVPN certificates; the certificate checks
(ns-cert-type, remote-cert-ku/eku, x509-username-field) need odd ones too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from trivpn.pki.certs import Credential

NS_CERT_TYPE = x509.ObjectIdentifier("2.16.840.1.113730.1.1")
NS_CLIENT, NS_SERVER = 0x80, 0x40

# OpenVPN's key-usage numbering (x509_verify_cert_ku): bit 0 of the extension is 0x80.
KU_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
            "key_agreement", "key_cert_sign", "crl_sign")


def key_usage(mask: int) -> x509.KeyUsage:
    """A KeyUsage from OpenVPN's mask (0x80 digitalSignature ... 0x02 cRLSign)."""
    flags = {name: bool(mask & (0x80 >> i)) for i, name in enumerate(KU_FLAGS)}
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


def ns_cert_type(bits: int) -> x509.UnrecognizedExtension:
    """The Netscape cert type extension (a one-byte DER BIT STRING)."""
    unused = (bits & -bits).bit_length() - 1 if bits else 0
    return x509.UnrecognizedExtension(NS_CERT_TYPE, bytes([0x03, 0x02, unused, bits]))


def leaf(ca: Credential, subject: Sequence[tuple[x509.ObjectIdentifier, str]] | str, *,
         ku: int | None = 0x80, eku: Sequence[x509.ObjectIdentifier] | None = None,
         ns_bits: int | None = None, san_emails: Sequence[str] = (),
         issuer_emails: Sequence[str] = (), serial: int | None = None,
         rsa_bits: int | None = None) -> Credential:
    """A P-256 (or ``rsa_bits`` RSA) leaf signed by ``ca``. ``subject`` is a CN or (oid,
    value) pairs in order; ``ku``/``eku``/``ns_bits`` None leave the extension out."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits) if rsa_bits
        else ec.generate_private_key(ec.SECP256R1()))
    attrs = [(NameOID.COMMON_NAME, subject)] if isinstance(subject, str) else list(subject)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if ku is not None:
        builder = builder.add_extension(key_usage(ku), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if ns_bits is not None:
        builder = builder.add_extension(ns_cert_type(ns_bits), critical=False)
    if san_emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in san_emails]),
            critical=False)
    if issuer_emails:
        builder = builder.add_extension(
            x509.IssuerAlternativeName([x509.RFC822Name(e) for e in issuer_emails]),
            critical=False)
    return Credential(builder.sign(ca.key, hashes.SHA256()), key)


def intermediate(ca: Credential, cn: str) -> Credential:
    """A sub-CA signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(0x06), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Credential(cert, key)
