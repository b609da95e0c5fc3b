"""OpenVPN static key files (``tls-auth``, ``tls-crypt``) and tls-crypt-v2 key files."""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from trivpn.pki.errors import PkiError
from trivpn.pki.files import PRIVATE_FILE_MODE, write_file
from trivpn.protocol.authtoken import KEY_LEN as AUTH_TOKEN_KEY_LEN
from trivpn.protocol.authtoken import format_secret_pem
from trivpn.protocol.errors import DecodeError
from trivpn.protocol.statickey import KEY_BYTES, StaticKey, format_static_key
from trivpn.protocol.tlscryptv2 import (
    MAX_METADATA_LEN,
    METADATA_USER,
    SERVER_KEY_BYTES,
    ClientKey,
    ServerKey,
    parse_client_key_bytes,
    timestamp_metadata,
)


def generate_static_key() -> StaticKey:
    """256 bytes from the OS CSPRNG, the same amount ``openvpn --genkey secret`` makes."""
    return StaticKey(secrets.token_bytes(KEY_BYTES))


def write_static_key(path: Path, key: StaticKey, *, force: bool = False) -> None:
    """Write ``key`` in OpenVPN's text format, mode 0600; refuses to overwrite unless
    ``force``."""
    text = format_static_key(key)
    write_file(path, text.encode("ascii"), mode=PRIVATE_FILE_MODE, overwrite=force)


# --- tls-crypt-v2 key files (OpenVPN tls_crypt.c: PEM bodies named below) ---------------------

TLS_CRYPT_V2_SERVER_PEM = "OpenVPN tls-crypt-v2 server key"
TLS_CRYPT_V2_CLIENT_PEM = "OpenVPN tls-crypt-v2 client key"


class KeyFileError(PkiError):
    """A tls-crypt-v2 key file that is not what it should be."""


def pem_encode(name: str, data: bytes) -> str:
    """The PEM text OpenSSL (and so ``openvpn --genkey``) writes: 64-character lines."""
    body = base64.b64encode(data).decode("ascii")
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {name}-----\n{lines}\n-----END {name}-----\n"


def pem_decode(text: str, name: str) -> bytes:
    """The bytes of the ``name`` PEM block in ``text``."""
    begin, end = f"-----BEGIN {name}-----", f"-----END {name}-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if start < 0 or stop < 0:
        raise KeyFileError(f"no '{begin}' ... '{end}' block")
    body = "".join(text[start + len(begin):stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"bad base64 in the {name}: {exc}") from exc


def parse_tls_crypt_v2_server_key(text: str) -> ServerKey:
    """A ``tls-crypt-v2-server`` key file."""
    try:
        return ServerKey(pem_decode(text, TLS_CRYPT_V2_SERVER_PEM))
    except DecodeError as exc:
        raise KeyFileError(str(exc)) from exc


def parse_tls_crypt_v2_client_key(text: str) -> ClientKey:
    """A ``tls-crypt-v2-client`` key file: Kc || WKc."""
    try:
        return parse_client_key_bytes(pem_decode(text, TLS_CRYPT_V2_CLIENT_PEM))
    except DecodeError as exc:
        raise KeyFileError(str(exc)) from exc


def generate_tls_crypt_v2_server_key() -> str:
    """A new server key file's text (128 random bytes)."""
    return pem_encode(TLS_CRYPT_V2_SERVER_PEM, secrets.token_bytes(SERVER_KEY_BYTES))


def generate_tls_crypt_v2_client_key(server_key_text: str, *, unix_now: int,
                                     user_metadata: bytes | None = None) -> str:
    """A new client key file's text, wrapped by the server key: metadata type 0 with
    ``user_metadata``, or (the default, as ``openvpn --genkey``) type 1 with ``unix_now``."""
    server = parse_tls_crypt_v2_server_key(server_key_text)
    if user_metadata is None:
        metadata = timestamp_metadata(unix_now)
    else:
        metadata = bytes((METADATA_USER,)) + user_metadata
        if len(metadata) > MAX_METADATA_LEN:
            raise KeyFileError(f"metadata too long ({len(user_metadata)} bytes, max "
                               f"{MAX_METADATA_LEN - 1} bytes)")
    client = StaticKey(secrets.token_bytes(KEY_BYTES))
    return pem_encode(TLS_CRYPT_V2_CLIENT_PEM,
                      client.data + server.wrap_client_key(client, metadata))


def write_auth_token_key(path: Path, *, force: bool = False) -> None:
    """An ``auth-gen-token-secret`` file: 128 random bytes as an ``OpenVPN auth-token server
    key`` PEM block, what ``openvpn --genkey auth-token`` writes; mode 0600."""
    text = format_secret_pem(secrets.token_bytes(AUTH_TOKEN_KEY_LEN))
    write_file(path, text.encode("ascii"), mode=PRIVATE_FILE_MODE, overwrite=force)
