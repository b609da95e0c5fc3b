"""PKCS#12 bundles for ``pkcs12 FILE`` / ``<pkcs12>`` (OpenVPN ssl_openssl.c,
``tls_ctx_load_pkcs12``): the certificate, its private key and the CA certificates.

OpenVPN first tries the empty password and then asks for one; trivpn reads bundles without a
password (or with the empty one) and refuses a protected bundle with a clear error: a password
from ``askpass`` is not wired to PKCS#12 here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)

from trivpn.pki.errors import PkiError


@dataclass(frozen=True, slots=True)
class Pkcs12Bundle:
    """PEM texts: the certificate, its key (never logged) and the other certificates."""

    cert_pem: str
    key_pem: str
    ca_pem: str | None

    def __repr__(self) -> str:
        return "Pkcs12Bundle(<cert>, <key>, <ca>)"


def decode_inline(text: str, where: str) -> bytes:
    """An inline ``<pkcs12>`` block is the bundle in base64."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise PkiError(f"not base64: {exc}", where) from exc


def load_pkcs12(data: bytes, where: str) -> Pkcs12Bundle:
    """The bundle's certificate, key and CA certificates; PkiError naming ``where``."""
    loaded = None
    for password in (None, b""):
        try:
            loaded = pkcs12.load_pkcs12(data, password)
            break
        except ValueError:
            continue
    if loaded is None:
        raise PkiError("cannot decode the PKCS#12 bundle: it is password-protected (trivpn "
                       "reads only bundles without a password) or not PKCS#12", where)
    if loaded.cert is None or loaded.key is None:
        raise PkiError("the PKCS#12 bundle holds no certificate with its private key", where)
    cert = loaded.cert.certificate.public_bytes(Encoding.PEM).decode()
    key = loaded.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    others = "".join(c.certificate.public_bytes(Encoding.PEM).decode()
                     for c in loaded.additional_certs)
    return Pkcs12Bundle(cert, key, others or None)
