"""Data-channel key material: the legacy OpenVPN PRF (docs/protocol.md §6.2) and key slicing (§6.1).

The 256-byte key block has the static-key layout: ``key[0] = cipher[64] || hmac[64]`` (client
to server) then ``key[1]`` (server to client). TLS-EKM output (§6.3) has the same layout and
goes through :func:`directional_keys` as well.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from trivpn.protocol.errors import HandshakeError

KEY_BLOCK_LEN = 256
SLOT_LEN = 64
MASTER_LEN = 48
PRE_MASTER_LEN = 48
RANDOM_LEN = 32
SESSION_ID_LEN = 8
MASTER_LABEL = b"OpenVPN master secret"
EXPANSION_LABEL = b"OpenVPN key expansion"
_HMAC_BLOCK = 64  # MD5 and SHA-1 block size
_IPAD = bytes(b ^ 0x36 for b in range(256))  # byte -> byte XOR 0x36, for bytes.translate
_OPAD = bytes(b ^ 0x5C for b in range(256))


class _Hash(Protocol):
    def copy(self) -> _Hash: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _hash_constructor(builtin: str, name: str) -> Callable[[bytes], _Hash]:
    """CPython's own MD5/SHA-1 where built in: one PRF computes about 70 HMACs, and copying an
    OpenSSL hash context (EVP) costs several times the hashing itself. hashlib's otherwise."""
    try:
        ctor: Callable[[bytes], _Hash] = getattr(importlib.import_module(builtin), name)
    except (ImportError, AttributeError):
        ctor = getattr(hashlib, name)
    return ctor


_DIGESTS = {"md5": _hash_constructor("_md5", "md5"),
            "sha1": _hash_constructor("_sha1", "sha1")}


def _p_hash(digest: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 2246 P_hash: HMAC(secret, A(i) || seed) for A(0) = seed, A(i) = HMAC(A(i-1)).

    HMAC (RFC 2104) is spelled out over hash states keyed once, so that each of the many HMACs
    is two state copies and two short hashes."""
    new = _DIGESTS[digest]
    key = new(secret).digest() if len(secret) > _HMAC_BLOCK else secret
    key = key.ljust(_HMAC_BLOCK, b"\0")
    inner_copy = new(key.translate(_IPAD)).copy
    outer_copy = new(key.translate(_OPAD)).copy

    def mac(message: bytes) -> bytes:
        inner = inner_copy()
        inner.update(message)
        outer = outer_copy()
        outer.update(inner.digest())
        return outer.digest()

    out: list[bytes] = []
    produced = 0
    a = seed
    while produced < length:
        a = mac(a)
        block = mac(a + seed)
        out.append(block)
        produced += len(block)
    return b"".join(out)[:length]


def tls1_prf(secret: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.0/1.1 PRF: ``P_MD5(S1, seed) XOR P_SHA1(S2, seed)``.

    S1 is the first ceil(len/2) bytes of ``secret``, S2 the last ceil(len/2) bytes (they share
    the middle byte when the length is odd). OpenVPN's label is simply the start of ``seed``.
    """
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half:], seed, length)
    return (int.from_bytes(md5, "big") ^ int.from_bytes(sha1, "big")).to_bytes(length, "big")


# RFC 5705 label of the data-channel key block with TLS-EKM (ssl.c, EXPORT_KEY_DATA_LABEL)
EKM_LABEL = b"EXPORTER-OpenVPN-datakeys"


@dataclass(frozen=True, slots=True, repr=False)
class KeySource:
    """One side's randoms from its key-method-2 block; ``pre_master`` only from the client."""

    random1: bytes
    random2: bytes
    pre_master: bytes | None = None

    def __repr__(self) -> str:
        return f"KeySource(<randoms>, pre_master={'<48 bytes>' if self.pre_master else None})"


def _need(value: bytes | None, size: int, what: str) -> bytes:
    if value is None or len(value) != size:
        raise HandshakeError(f"{what} must be {size} bytes", "key derivation",
                             reason="bad_key_source")
    return value


def derive_key_block_prf(client: KeySource, server: KeySource, client_sid: bytes,
                         server_sid: bytes) -> bytes:
    """The 256-byte key block via the legacy PRF (§6.2); HandshakeError on bad input sizes.

    ``client_sid``/``server_sid`` are the control-channel session ids of the TLS client and the
    TLS server.
    """
    for src, name in ((client, "client"), (server, "server")):
        _need(src.random1, RANDOM_LEN, f"{name} random1")
        _need(src.random2, RANDOM_LEN, f"{name} random2")
    _need(client_sid, SESSION_ID_LEN, "client session id")
    _need(server_sid, SESSION_ID_LEN, "server session id")
    master = master_secret(client, server)
    seed = EXPANSION_LABEL + client.random2 + server.random2 + client_sid + server_sid
    return tls1_prf(master, seed, KEY_BLOCK_LEN)


@dataclass(frozen=True, slots=True, repr=False)
class DirectionalKeys:
    """The two 128-byte keys of a key block, assigned to send/receive (64-byte slots)."""

    encrypt_cipher: bytes
    encrypt_hmac: bytes
    decrypt_cipher: bytes
    decrypt_hmac: bytes

    def __repr__(self) -> str:
        return "DirectionalKeys(<key material>)"


def directional_keys(key_block: bytes, is_server: bool) -> DirectionalKeys:
    """Client encrypts with key[0] and decrypts with key[1]; the server the reverse."""
    if len(key_block) != KEY_BLOCK_LEN:
        raise HandshakeError(f"key block must be {KEY_BLOCK_LEN} bytes", "key derivation",
                             reason="bad_key_source")
    k0, k1 = key_block[:128], key_block[128:]
    enc, dec = (k1, k0) if is_server else (k0, k1)
    return DirectionalKeys(enc[:SLOT_LEN], enc[SLOT_LEN:], dec[:SLOT_LEN], dec[SLOT_LEN:])


def master_secret(client: KeySource, server: KeySource) -> bytes:
    """The 48-byte PRF master secret (exposed for tests and diagnostics)."""
    pre_master = _need(client.pre_master, PRE_MASTER_LEN, "client pre_master")
    return tls1_prf(pre_master, MASTER_LABEL + client.random1 + server.random1, MASTER_LEN)

