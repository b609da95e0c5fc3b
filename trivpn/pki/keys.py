"""Private keys for certificates: generation, PEM encoding and loading.

Keys trivpn writes are PEM, PKCS#8 and unencrypted: OpenVPN reads them at start without a
passphrase prompt. A CA key made by easy-rsa may be encrypted; :func:`load_private_key` takes
its passphrase.
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


class PassphraseError(PkiError):
    """The key is encrypted and no passphrase, or a wrong one, was given."""


def load_private_key(text: str, where: str = "private key",
                     passphrase: bytes | None = None) -> PrivateKey:
    """Parse one PEM private key (PKCS#8, PKCS#1 or SEC1), decrypting it with ``passphrase``
    when it is encrypted (easy-rsa encrypts ``ca.key`` unless built with ``nopass``).

    ``where`` names the source in errors. Error messages never quote the key text.
    """
    if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
        raise PkiError("no PEM private key found", where)
    data = text.encode("ascii", "replace")
    try:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError:
            if passphrase is None:
                raise PassphraseError(
                    "private key is encrypted; its passphrase is needed", where) from None
            # A passphrase was given for a key that is not encrypted: read it without one.
            key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        if passphrase is not None and "ENCRYPTED" in text:
            raise PassphraseError("wrong passphrase for the encrypted private key",
                                  where) from None
        raise PkiError("private key is malformed or of an unsupported type", where) from None
    except UnsupportedAlgorithm:
        raise PkiError("private key is malformed or of an unsupported type", where) from None
    if not isinstance(key, _SIGNING_KEY_CLASSES):
        raise PkiError(
            f"private key type {type(key).__name__} cannot be used for certificates", where
        )
    return key


def generate_like(public: object) -> PrivateKey:
    """A fresh key of the same type as ``public``: RSA of the same size, EC on the same curve,
    Ed25519 or Ed448 (what ``trivpn pki renew`` keeps)."""
    if isinstance(public, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=public.key_size)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public.curve)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(public, ed448.Ed448PublicKey):
        return ed448.Ed448PrivateKey.generate()
    raise PkiError(f"cannot make a new key like a {type(public).__name__}")


def describe_key(public: object) -> str:
    """``RSA 2048``, ``EC secp256r1``, ``Ed25519``: the key type for messages."""
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    return type(public).__name__.removesuffix("PublicKey").lstrip("_")
