"""Faulty certificates for the certificate tests, made with ``cryptography``: an RSA CA and
leaves with chosen purposes, dates, key sizes and signature digests, and CRLs.

``cryptography`` refuses to sign certificates with SHA-1 or MD5; :func:`resign` builds the
certificate with SHA-256, swaps the signature algorithm's OID (same length for RSA) and signs
the TBS bytes again with the weak digest — the certificate OpenSSL would have produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(UTC)
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")  # sha256WithRSAEncryption
_WEAK_RSA = {"sha1": 0x05, "md5": 0x04}  # sha1WithRSAEncryption, md5WithRSAEncryption
_KEYS: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A cached RSA key per size (key generation is the slow part)."""
    if bits not in _KEYS:
        _KEYS[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS[bits]


@dataclass(frozen=True)
class Made:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    def write(self, directory: Path, name: str) -> None:
        (directory / f"{name}.crt").write_bytes(self.cert.public_bytes(
            serialization.Encoding.PEM))
        path = directory / f"{name}.key"
        path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "cert-test CA", *, days: int = 3650,
            not_after: datetime | None = None) -> Made:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1))
               .not_valid_after(not_after or NOW + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), critical=True))
    return Made(builder.sign(key, hashes.SHA256()), key)


def make_leaf(ca: Made, cn: str, *, eku: Sequence[x509.ObjectIdentifier] | None = (SERVER_AUTH,),
              key_usage: bool = True, bits: int = 2048, not_before: datetime | None = None,
              not_after: datetime | None = None, digest: str = "sha256") -> Made:
    key = rsa_key(bits)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - timedelta(hours=1))
               .not_valid_after(not_after or NOW + timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                              critical=True))
    if key_usage:
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False,
                                                      False, False, False), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    if digest != "sha256":
        cert = resign(cert, ca.key, digest)
    return Made(cert, key)


def resign(cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, digest: str) -> x509.Certificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(_SHA256_RSA) == 2
    der = der.replace(_SHA256_RSA, _SHA256_RSA[:-1] + bytes([_WEAK_RSA[digest]]))
    start, _ = _header(der, 0)
    tbs_start, tbs_len = _header(der, start)
    tbs = der[start:tbs_start + tbs_len]
    algo = hashes.SHA1() if digest == "sha1" else hashes.MD5()
    signature = ca_key.sign(tbs, padding.PKCS1v15(), algo)
    alg_start, alg_len = _header(der, tbs_start + tbs_len)
    bits_start, bits_len = _header(der, alg_start + alg_len)
    assert bits_len == len(signature) + 1  # unused-bits byte, then the signature
    der = der[:bits_start + 1] + signature + der[bits_start + bits_len:]
    return x509.load_der_x509_certificate(der)


def _header(der: bytes, at: int) -> tuple[int, int]:
    """(start of the content, its length) of the DER element at ``at``."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2, first
    n = first & 0x7F
    return at + 2 + n, int.from_bytes(der[at + 2:at + 2 + n], "big")


def make_crl(ca: Made, revoked: Sequence[int] = (), *, this_update: datetime | None = None,
             next_update: datetime | None = None) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(this_update or NOW - timedelta(days=1))
               .next_update(next_update or NOW + timedelta(days=180)))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - timedelta(days=1)).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
