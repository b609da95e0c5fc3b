"""Control-channel wrapping: none, tls-auth and tls-crypt (docs/protocol.md §1.5, §1.6, §3.2, §3.3).

Every wrapper works on the *plain* encoded control packet ``byte0 || own sid || rest`` (see
:func:`trivpn.protocol.packets.encode_control`) and on the 8-byte replay block
``packet_id(4) || timestamp(4)`` that tls-auth and tls-crypt add. ``unwrap`` authenticates but
does not check the replay block: the caller feeds ``packet_id``/``timestamp`` to a
:class:`trivpn.protocol.replay.ReplayWindow` (long form).
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import AuthenticationError, DecodeError
from trivpn.protocol.statickey import StaticKey

_HEAD = 9  # byte0 + own session id
_REPLAY = struct.Struct(">II")  # packet id, timestamp
_REPLAY_LEN = _REPLAY.size
_MAX_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """The plain control bytes plus the replay block (None for :class:`NoWrap`)."""

    plain: bytes
    packet_id: int | None
    timestamp: int | None


class ControlWrap(Protocol):
    """What the session needs from a wrapper."""

    @property
    def overhead(self) -> int:
        """Bytes added on the wire compared with the plain packet."""
        ...

    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes: ...

    def unwrap(self, wire: bytes) -> Unwrapped: ...


def _replay_block(packet_id: int, timestamp: int) -> bytes:
    if not 0 < packet_id <= _MAX_U32 or not 0 <= timestamp <= _MAX_U32:
        raise ValueError("replay packet id must be 1..2**32-1 and timestamp a uint32")
    return _REPLAY.pack(packet_id, timestamp)


def _check_plain(plain: bytes) -> None:
    if len(plain) < _HEAD:
        raise ValueError("plain control packet shorter than byte0 + session id")


class NoWrap:
    """No tls-auth / tls-crypt: the wire bytes are the plain bytes, no replay block."""

    __slots__ = ()
    overhead = 0

    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes:
        """Return ``plain``; ``packet_id``/``timestamp`` are not sent without a wrapper."""
        return plain

    def unwrap(self, wire: bytes) -> Unwrapped:
        return Unwrapped(wire, None, None)

    def __repr__(self) -> str:
        return "NoWrap()"


def tls_auth_keys(key: StaticKey, direction: int | None) -> tuple[bytes, bytes]:
    """(send hmac slot, receive hmac slot) per §3.2; each 64 bytes, truncate to digest size."""
    if direction is None:
        return key.hmac(0), key.hmac(0)
    if direction == 0:
        return key.hmac(0), key.hmac(1)
    if direction == 1:
        return key.hmac(1), key.hmac(0)
    raise ValueError(f"key direction must be None, 0 or 1, got {direction}")


class TlsAuth:
    """``--tls-auth``: HMAC over ``replay || byte0 || sid || rest``, placed after the sid.

    Wire: ``byte0 || sid || HMAC || packet_id || timestamp || rest``.
    """

    __slots__ = ("_hlen", "_recv", "_send", "overhead")

    def __init__(self, key: StaticKey, direction: int | None, digest: str = "SHA1") -> None:
        hname, self._hlen = digest_info(digest)
        send, recv = tls_auth_keys(key, direction)
        self._send = hmac.new(send[:self._hlen], digestmod=hname)
        self._recv = hmac.new(recv[:self._hlen], digestmod=hname)
        self.overhead = self._hlen + _REPLAY_LEN

    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes:
        _check_plain(plain)
        replay = _replay_block(packet_id, timestamp)
        mac = self._send.copy()
        mac.update(replay)
        mac.update(plain)
        return b"".join((plain[:_HEAD], mac.digest(), replay, plain[_HEAD:]))

    def unwrap(self, wire: bytes) -> Unwrapped:
        hend = _HEAD + self._hlen
        if len(wire) < hend + _REPLAY_LEN:
            raise DecodeError(f"tls-auth packet of {len(wire)} bytes is truncated", "tls-auth",
                              reason="truncated")
        replay = wire[hend:hend + _REPLAY_LEN]
        plain = wire[:_HEAD] + wire[hend + _REPLAY_LEN:]
        mac = self._recv.copy()
        mac.update(replay)
        mac.update(plain)
        if not hmac.compare_digest(mac.digest(), wire[_HEAD:hend]):
            raise AuthenticationError("packet HMAC authentication failed", "tls-auth",
                                      reason="hmac_mismatch")
        packet_id, timestamp = _REPLAY.unpack(replay)
        return Unwrapped(plain, packet_id, timestamp)

    def __repr__(self) -> str:
        return f"TlsAuth(<key>, hmac_len={self._hlen})"


TLS_CRYPT_TAG_LEN = 32
_AES_BLOCK = 16
_CTR_SHORT = 256  # bytes up to which a keystream from the ECB context beats a CTR context
_COUNTER_MOD = 1 << 128
# _COUNTER_STEPS[n]: the integer whose 16-byte big-endian blocks are 0, 1, ..., n-1
_COUNTER_STEPS = tuple(
    int.from_bytes(b"".join(i.to_bytes(_AES_BLOCK, "big") for i in range(n)), "big")
    for n in range(_CTR_SHORT // _AES_BLOCK + 1))


class _AesCtr:
    """AES-256-CTR as OpenSSL computes it: the whole 16-byte IV is a big-endian counter.

    A cipher context per packet (key schedule, provider lookup, the wrappers' checks) costs
    more than encrypting a short control packet, so inputs up to ``_CTR_SHORT`` bytes XOR a
    keystream made by the one ECB context of this key: the counter blocks IV, IV+1, ...
    encrypted in one call. Longer inputs get a CTR context.
    """

    __slots__ = ("_algorithm", "_ecb")

    def __init__(self, key: bytes) -> None:
        self._algorithm = algorithms.AES256(key)
        self._ecb = Cipher(self._algorithm, modes.ECB()).encryptor()

    def apply(self, iv: bytes, data: bytes) -> bytes:
        """Encrypt or decrypt ``data`` (the same operation in CTR mode)."""
        size = len(data)
        if size > _CTR_SHORT:
            ctx = Cipher(self._algorithm, modes.CTR(iv)).encryptor()
            return ctx.update(data) + ctx.finalize()
        if not size:
            return b""
        blocks = -(-size // _AES_BLOCK)
        start = int.from_bytes(iv, "big")
        if start + blocks <= _COUNTER_MOD:  # no block wraps: add 0..n-1 to n copies at once
            counters = (int.from_bytes(iv * blocks, "big")
                        + _COUNTER_STEPS[blocks]).to_bytes(blocks * _AES_BLOCK, "big")
        else:
            counters = b"".join(((start + i) % _COUNTER_MOD).to_bytes(_AES_BLOCK, "big")
                                for i in range(blocks))
        stream = self._ecb.update(counters)
        return (int.from_bytes(data, "big")
                ^ int.from_bytes(stream[:size], "big")).to_bytes(size, "big")


class TlsCrypt:
    """``--tls-crypt``: HMAC-SHA256 tag, then AES-256-CTR with IV = tag[:16].

    Wire: ``byte0 || sid || packet_id || timestamp || tag(32) || AES-256-CTR(rest)`` where
    ``tag = HMAC-SHA256(Ka, byte0 || sid || packet_id || timestamp || rest)``. Keys by role:
    the server sends with key[0], the client with key[1] (first 32 bytes of each slot).
    """

    __slots__ = ("_recv_aes", "_recv_mac", "_send_aes", "_send_mac", "overhead")

    def __init__(self, key: StaticKey, is_server: bool) -> None:
        send, recv = (0, 1) if is_server else (1, 0)
        self._send_aes = _AesCtr(key.cipher(send)[:32])
        self._recv_aes = _AesCtr(key.cipher(recv)[:32])
        self._send_mac = hmac.new(key.hmac(send)[:32], digestmod="sha256")
        self._recv_mac = hmac.new(key.hmac(recv)[:32], digestmod="sha256")
        self.overhead = _REPLAY_LEN + TLS_CRYPT_TAG_LEN

    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes:
        _check_plain(plain)
        header = plain[:_HEAD] + _replay_block(packet_id, timestamp)
        body = plain[_HEAD:]
        mac = self._send_mac.copy()
        mac.update(header)
        mac.update(body)
        tag = mac.digest()
        return b"".join((header, tag, self._send_aes.apply(tag[:16], body)))

    def unwrap(self, wire: bytes) -> Unwrapped:
        ct_start = _HEAD + _REPLAY_LEN + TLS_CRYPT_TAG_LEN
        if len(wire) < ct_start:
            raise DecodeError(f"tls-crypt packet of {len(wire)} bytes is truncated",
                              "tls-crypt", reason="truncated")
        header = wire[:_HEAD + _REPLAY_LEN]
        tag = wire[_HEAD + _REPLAY_LEN:ct_start]
        body = self._recv_aes.apply(tag[:16], wire[ct_start:])
        mac = self._recv_mac.copy()
        mac.update(header)
        mac.update(body)
        if not hmac.compare_digest(mac.digest(), tag):
            raise AuthenticationError("packet authentication failed", "tls-crypt",
                                      reason="hmac_mismatch")
        packet_id, timestamp = _REPLAY.unpack_from(header, _HEAD)
        return Unwrapped(wire[:_HEAD] + body, packet_id, timestamp)

    def __repr__(self) -> str:
        return "TlsCrypt(<key>)"
