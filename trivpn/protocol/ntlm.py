"""NTLM authentication to an HTTP proxy, as OpenVPN 2.6 does it (OpenVPN src/openvpn/ntlm.c):
``http-proxy ... ntlm`` (NTLMv1) and ``ntlm2`` (NTLMv2). Bytes only (sans-IO): the caller
passes the time and the random client nonce.

Flow (proxy.c, establish_http_proxy_passthru()): CONNECT with ``Proxy-Authorization: NTLM``
and :data:`NEGOTIATE` (ntlm_phase_1(): only "negotiate NTLM" and "negotiate OEM"); the proxy
answers 407 with ``Proxy-Authenticate: NTLM <challenge>``; the client sends CONNECT again on
the same connection with :func:`authenticate` (ntlm_phase_3()).

The username may be ``DOMAIN\\user``. The authenticate message carries the user and domain in
OEM (8-bit) form, no workstation, no session key, and only the NT response: 24 bytes of DES
of the server challenge under the MD4 password hash (v1), or HMAC-MD5 over the challenge
and a blob with the time, the nonce and the challenge's target information (v2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from trivpn.protocol.errors import PeerViolation
from trivpn.protocol.md4 import md4

NEGOTIATE = "TlRMTVNTUAABAAAAAgIAAA=="
"""The type 1 message OpenVPN sends (ntlm_phase_1())."""

_TARGET_INFO_FLAG = 0x00800000
_FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01
_MAX_MESSAGE = 464  # OpenVPN's phase 3 buffer


class NtlmError(PeerViolation):
    """The proxy's NTLM challenge cannot be used."""

    reason = "bad_ntlm_challenge"


def _widen(text: str) -> bytes:
    """OpenVPN's unicodize(): each byte of the (UTF-8) text becomes a 16-bit unit; equal to
    UTF-16LE for ASCII."""
    return b"".join(bytes((c, 0)) for c in text.encode("utf-8"))


def _upper_ascii(text: str) -> str:
    """toupper() in the C locale: ASCII letters only."""
    return "".join(c.upper() if c.isascii() else c for c in text)


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4 of the widened password."""
    return md4(_widen(password))


def _des_key(seven: bytes) -> bytes:
    """7 key bytes spread over 8 (create_des_keys(); parity bits left zero)."""
    h = seven
    return bytes([
        h[0], ((h[0] & 1) << 7) | (h[1] >> 1), ((h[1] & 3) << 6) | (h[2] >> 2),
        ((h[2] & 7) << 5) | (h[3] >> 3), ((h[3] & 15) << 4) | (h[4] >> 4),
        ((h[4] & 31) << 3) | (h[5] >> 5), ((h[5] & 63) << 2) | (h[6] >> 6),
        (h[6] & 127) << 1])


def _des(key8: bytes, block: bytes) -> bytes:
    # single DES as three-key 3DES with K1 = K2 = K3
    enc = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def ntlmv1_response(password: str, challenge: bytes) -> bytes:
    """The 24-byte NTLMv1 response to an 8-byte server challenge."""
    h = nt_hash(password) + b"\0" * 5
    return b"".join(_des(_des_key(h[i:i + 7]), challenge) for i in (0, 7, 14))


def ntlmv2_hash(username: str, domain: str, password: str) -> bytes:
    """NTOWFv2: HMAC-MD5 under the NT hash of upper(user) + domain in UTF-16LE."""
    text = _widen(_upper_ascii(username) + domain)
    return hmac.new(nt_hash(password), text, hashlib.md5).digest()


def ntlmv2_response(username: str, domain: str, password: str, challenge: bytes, *,
                    target_info: bytes, unix_time: int, nonce: bytes) -> bytes:
    """HMAC-MD5(NTOWFv2, challenge + blob) + blob, the blob as OpenVPN builds it."""
    stamp = (unix_time + _FILETIME_EPOCH) * 10_000_000
    blob = (b"\x01\x01\0\0" + b"\0" * 4 + struct.pack("<Q", stamp) + nonce[:8].ljust(8, b"\0")
            + b"\0" * 4 + target_info + b"\0" * 4)
    proof = hmac.new(ntlmv2_hash(username, domain, password), challenge + blob,
                     hashlib.md5).digest()
    return proof + blob


def split_username(username: str) -> tuple[str, str]:
    """``DOMAIN\\user`` → (user, DOMAIN); a name without a backslash has no domain."""
    domain, sep, user = username.partition("\\")
    return (user, domain) if sep else (username, "")


def parse_challenge(text: str) -> tuple[bytes, int, bytes]:
    """(server challenge, flags, target information) of a base64 type 2 message; bytes
    missing from a short message read as zero, as in OpenVPN."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise NtlmError(f"challenge is not base64: {exc}", "ntlm challenge") from None
    buf = raw.ljust(512, b"\0")
    if len(raw) > 512:
        raise NtlmError("challenge longer than 512 bytes", "ntlm challenge")
    flags = struct.unpack_from("<I", buf, 0x14)[0]
    target = b""
    if flags & _TARGET_INFO_FLAG:
        length, offset = buf[0x28], buf[0x2C]
        if length + 0x1C + 16 > 256 or offset + length > 512:
            raise NtlmError("target information too long", "ntlm challenge")
        target = buf[offset:offset + length]
    return buf[24:32], flags, target


def authenticate(challenge_b64: str, username: str, password: str, *, v2: bool,
                 unix_time: int, nonce: bytes) -> str:
    """The base64 type 3 message answering the proxy's challenge (ntlm_phase_3())."""
    challenge, _, target = parse_challenge(challenge_b64)
    user, domain = split_username(username)
    if v2:
        response = ntlmv2_response(user, domain, password, challenge, target_info=target,
                                   unix_time=unix_time, nonce=nonce)
    else:
        response = ntlmv1_response(password, challenge)
    msg = bytearray(0x40)
    msg[0:8] = b"NTLMSSP\0"
    msg[8] = 3
    pos = 0x40
    for offset, data in ((0x14, response), (0x24, user.encode("utf-8")),
                         (0x1C, domain.encode("utf-8"))):
        if pos + len(data) > _MAX_MESSAGE:
            raise NtlmError("username or domain too long for the NTLM message",
                            "ntlm authenticate")
        struct.pack_into("<HHH", msg, offset, len(data), len(data), pos)
        msg += data
        pos += len(data)
    msg[0x10] = msg[0x30] = msg[0x38] = pos & 0xFF  # LM, workstation, session key: empty
    msg[0x3C], msg[0x3D] = 0x02, 0x02  # negotiate OEM, negotiate NTLM
    return base64.b64encode(bytes(msg)).decode("ascii")
