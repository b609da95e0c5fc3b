"""Generating OpenVPN static key files (for ``tls-auth`` and ``tls-crypt``)."""

from __future__ import annotations

import secrets
from pathlib import Path

from trivpn.pki.files import PRIVATE_FILE_MODE, write_file
from trivpn.protocol.authtoken import KEY_LEN as AUTH_TOKEN_KEY_LEN
from trivpn.protocol.authtoken import format_secret_pem
from trivpn.protocol.statickey import KEY_BYTES, StaticKey, format_static_key


def generate_static_key() -> StaticKey:
    """256 bytes from the OS CSPRNG, the same amount ``openvpn --genkey secret`` makes."""
    return StaticKey(secrets.token_bytes(KEY_BYTES))


def write_static_key(path: Path, key: StaticKey, *, force: bool = False) -> None:
    """Write ``key`` in OpenVPN's text format, mode 0600; refuses to overwrite unless
    ``force``."""
    text = format_static_key(key)
    write_file(path, text.encode("ascii"), mode=PRIVATE_FILE_MODE, overwrite=force)


def write_auth_token_key(path: Path, *, force: bool = False) -> None:
    """An ``auth-gen-token-secret`` file: 128 random bytes as an ``OpenVPN auth-token server
    key`` PEM block, what ``openvpn --genkey auth-token`` writes; mode 0600."""
    text = format_secret_pem(secrets.token_bytes(AUTH_TOKEN_KEY_LEN))
    write_file(path, text.encode("ascii"), mode=PRIVATE_FILE_MODE, overwrite=force)
