"""Private keys for certificates: generation, PEM encoding and loading.

Keys are PEM, PKCS#8 and unencrypted: OpenVPN reads them at start without a passphrase prompt.
"""

from __future__ import annotations

from typing import Literal, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from trivpn.pki.errors import PkiError

KeyType = Literal["ec", "rsa2048", "rsa3072"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)
DEFAULT_KEY_TYPE: KeyType = "ec"

# Every key type that can sign a certificate; loaded keys of another type are refused.
PrivateKey = CertificateIssuerPrivateKeyTypes
_SIGNING_KEY_CLASSES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


def generate_private_key(key_type: KeyType = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh key: ECDSA P-256 (``ec``) or RSA with 2048 / 3072 bit modulus."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise PkiError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(text: str, where: str = "private key") -> PrivateKey:
    """Parse one unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1).

    ``where`` names the source in errors. Error messages never quote the key text.
    """
    if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
        raise PkiError("no PEM private key found", where)
    try:
        key = serialization.load_pem_private_key(text.encode("ascii", "replace"), password=None)
    except TypeError:
        raise PkiError(
            "private key is encrypted; an unencrypted key is needed", where
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise PkiError("private key is malformed or of an unsupported type", where) from None
    if not isinstance(key, _SIGNING_KEY_CLASSES):
        raise PkiError(
            f"private key type {type(key).__name__} cannot be used for certificates", where
        )
    return key
