"""tls-crypt-v2: per-client tls-crypt keys wrapped by the server's key (docs/protocol.md §3.4).

OpenVPN ``src/openvpn/tls_crypt.c``. Each client holds its own tls-crypt key Kc (256 bytes,
the layout of a static key) and WKc, that key and some metadata wrapped with the server key:

    WKc = tag || AES-256-CTR(Ke, IV=tag[:16], Kc || metadata) || len
    tag = HMAC-SHA256(Ka, len || Kc || metadata)          len = uint16 length of WKc

Ke / Ka are the first 32 bytes of the server key's cipher and HMAC halves (64 + 64 bytes).
The metadata starts with a type byte: 0 user-defined (what follows is the operator's data), 1
a 64-bit big-endian Unix timestamp (the key's creation time, what ``--tls-crypt-v2-max-age``
checks).

On the wire the control channel is plain tls-crypt under Kc (:class:`~trivpn.protocol.wrap.
TlsCrypt`); the client appends WKc to its ``P_CONTROL_HARD_RESET_CLIENT_V3`` and, when the
server asks (the early-negotiation TLV of its stateless reset, OpenVPN ``ssl_pkt.c``
``tls_reset_standalone``), to its first ``P_CONTROL_WKC_V1``, so a server keeps no state
before the client has proven its HMAC cookie.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trivpn.protocol.errors import AuthenticationError, DecodeError
from trivpn.protocol.packets import OPCODE_SHIFT, ControlPacket, Opcode
from trivpn.protocol.statickey import KEY_BYTES, StaticKey
from trivpn.protocol.wrap import TlsCrypt, Unwrapped

SERVER_KEY_BYTES = 128  # struct key: cipher[64] || hmac[64]
TAG_LEN = 32
MAX_WKC_LEN = 1024  # TLS_CRYPT_V2_MAX_WKC_LEN
MAX_METADATA_LEN = MAX_WKC_LEN - (KEY_BYTES + TAG_LEN + 2)  # 734
METADATA_USER = 0x00
METADATA_TIMESTAMP = 0x01
EARLY_NEG_MASK = 0xFF000000
EARLY_NEG_START = 0x0F000000  # the client's first replay id: "I do early negotiation"
TLV_EARLY_NEG_FLAGS = 0x0001
EARLY_NEG_FLAG_RESEND_WKC = 0x0001
# the payload of a server reset asking the client to resend WKc with its first control packet
RESEND_WKC_TLV = struct.pack(">HHH", TLV_EARLY_NEG_FLAGS, 2, EARLY_NEG_FLAG_RESEND_WKC)
_WKC_OPCODES = frozenset({int(Opcode.CONTROL_HARD_RESET_CLIENT_V3), int(Opcode.CONTROL_WKC_V1)})


def carries_wkc(data: bytes) -> bool:
    """Is ``data`` a packet the client appends WKc to (a v3 reset or a P_CONTROL_WKC_V1)?"""
    return bool(data) and data[0] >> OPCODE_SHIFT in _WKC_OPCODES


def split_wkc(data: bytes) -> tuple[bytes, bytes]:
    """(the tls-crypt packet, WKc): WKc is the tail whose length its last two bytes give."""
    if len(data) < 1 + 2:
        raise DecodeError("packet too short for a tls-crypt-v2 client key", "tls-crypt-v2",
                          reason="truncated")
    wkc_len = int.from_bytes(data[-2:], "big")
    if not TAG_LEN + KEY_BYTES + 2 <= wkc_len <= min(MAX_WKC_LEN, len(data) - 1):
        raise DecodeError(f"tls-crypt-v2 client key length {wkc_len} does not fit the packet",
                          "tls-crypt-v2", reason="bad_client_key")
    return data[:-wkc_len], data[-wkc_len:]


def parse_early_negotiation(payload: bytes) -> bool:
    """Does a server reset's payload (TLVs) ask the client to resend WKc? DecodeError when
    the TLVs are malformed (OpenVPN ``ssl.c``, ``parse_early_negotiation_tlvs``)."""
    pos, resend = 0, False
    while pos < len(payload):
        if len(payload) - pos < 4:
            raise DecodeError("truncated early-negotiation TLV", "server reset",
                              reason="bad_tlv")
        kind, length = struct.unpack_from(">HH", payload, pos)
        pos += 4
        if len(payload) - pos < length:
            raise DecodeError("truncated early-negotiation TLV", "server reset",
                              reason="bad_tlv")
        if kind == TLV_EARLY_NEG_FLAGS:
            if length != 2:
                raise DecodeError("early-negotiation flags of a wrong length", "server reset",
                                  reason="bad_tlv")
            resend = resend or bool(int.from_bytes(payload[pos:pos + 2], "big")
                                    & EARLY_NEG_FLAG_RESEND_WKC)
        pos += length
    return resend


class TlsCryptV2(TlsCrypt):
    """tls-crypt under a client's own key; the client appends ``wkc`` to its v3 reset and
    P_CONTROL_WKC_V1 packets, and both roles strip it from them before unwrapping (a server
    set up its key from the first one: later copies are ignored, as OpenVPN does)."""

    __slots__ = ("wkc",)

    def __init__(self, client_key: StaticKey, is_server: bool, wkc: bytes = b"") -> None:
        super().__init__(client_key, is_server)
        self.wkc = wkc

    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes:
        wire = super().wrap(plain, packet_id, timestamp)
        return wire + self.wkc if carries_wkc(plain) else wire

    def unwrap(self, wire: bytes) -> Unwrapped:
        if carries_wkc(wire):
            wire = split_wkc(wire)[0]
        return super().unwrap(wire)

    def __repr__(self) -> str:
        return "TlsCryptV2(<key>)"


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client's key file: its tls-crypt key and the wrapped copy it sends the server."""

    key: StaticKey
    wkc: bytes

    def __repr__(self) -> str:
        return f"ClientKey(<key>, wkc={len(self.wkc)} bytes)"


def parse_client_key_bytes(data: bytes) -> ClientKey:
    """Kc (256 bytes) || WKc, the decoded body of a client key file."""
    if len(data) < KEY_BYTES + TAG_LEN + 2:
        raise DecodeError(f"tls-crypt-v2 client key of {len(data)} bytes is too short",
                          "tls-crypt-v2 client key", reason="bad_client_key")
    wkc = data[KEY_BYTES:]
    if len(wkc) > MAX_WKC_LEN or int.from_bytes(wkc[-2:], "big") != len(wkc):
        raise DecodeError("the wrapped key's length field does not match its size",
                          "tls-crypt-v2 client key", reason="bad_client_key")
    return ClientKey(StaticKey(data[:KEY_BYTES]), wkc)


def client_wrap(client: ClientKey) -> TlsCryptV2:
    """The client's control-channel wrapper."""
    return TlsCryptV2(client.key, is_server=False, wkc=client.wkc)


@dataclass(frozen=True, slots=True)
class Unwrapped2:
    """What a server learns from a WKc: the client's key and its metadata."""

    key: StaticKey
    metadata: bytes

    def __repr__(self) -> str:
        return f"Unwrapped2(<key>, metadata={len(self.metadata)} bytes)"


class ServerKey:
    """The server's tls-crypt-v2 key: wraps client keys (genkey) and unwraps them (server).

    As a control wrapper it authenticates nothing by itself (every packet needs the client's
    key from its WKc): :meth:`unwrap` refuses, and the server's front door asks
    :meth:`session_wrap` for the client's wrapper first.
    """

    __slots__ = ("_aes", "_mac")
    overhead = 0

    def __init__(self, raw: bytes) -> None:
        if len(raw) != SERVER_KEY_BYTES:
            raise DecodeError(f"tls-crypt-v2 server key of {len(raw)} bytes, "
                              f"{SERVER_KEY_BYTES} expected", "tls-crypt-v2 server key",
                              reason="bad_server_key")
        self._aes = algorithms.AES256(raw[:32])
        self._mac = hmac.new(raw[64:96], digestmod="sha256")

    def _ctr(self, iv: bytes, data: bytes) -> bytes:
        ctx = Cipher(self._aes, modes.CTR(iv)).encryptor()
        return ctx.update(data) + ctx.finalize()

    def wrap_client_key(self, key: StaticKey, metadata: bytes) -> bytes:
        """WKc for ``key`` with ``metadata`` (type byte included)."""
        if len(metadata) > MAX_METADATA_LEN:
            raise ValueError(f"metadata of {len(metadata)} bytes, at most "
                             f"{MAX_METADATA_LEN}")
        length = (TAG_LEN + KEY_BYTES + len(metadata) + 2).to_bytes(2, "big")
        mac = self._mac.copy()
        mac.update(length + key.data + metadata)
        tag = mac.digest()
        return tag + self._ctr(tag[:16], key.data + metadata) + length

    def unwrap_client_key(self, wkc: bytes) -> Unwrapped2:
        """The client key and metadata in ``wkc``; AuthenticationError for a key this server
        key did not wrap."""
        if not TAG_LEN + KEY_BYTES + 2 <= len(wkc) <= MAX_WKC_LEN \
                or int.from_bytes(wkc[-2:], "big") != len(wkc):
            raise DecodeError("malformed tls-crypt-v2 client key", "tls-crypt-v2",
                              reason="bad_client_key")
        tag = wkc[:TAG_LEN]
        plain = self._ctr(tag[:16], wkc[TAG_LEN:-2])
        mac = self._mac.copy()
        mac.update(wkc[-2:] + plain)
        if not hmac.compare_digest(mac.digest(), tag):
            raise AuthenticationError("tls-crypt-v2 client key authentication failed",
                                      "tls-crypt-v2", reason="bad_client_key")
        return Unwrapped2(StaticKey(plain[:KEY_BYTES]), plain[KEY_BYTES:])

    def session_wrap(self, wire: bytes) -> tuple[TlsCryptV2, bytes]:
        """The server's wrapper for the client whose WKc ends ``wire`` (a v3 reset or a
        P_CONTROL_WKC_V1), and the client key's metadata."""
        if not carries_wkc(wire):
            raise DecodeError("a tls-crypt-v2 server needs the client's wrapped key",
                              "tls-crypt-v2", reason="no_client_key")
        client = self.unwrap_client_key(split_wkc(wire)[1])
        return TlsCryptV2(client.key, is_server=True), client.metadata

    # ControlWrap: nothing passes without the client's key
    def wrap(self, plain: bytes, packet_id: int, timestamp: int) -> bytes:
        raise ValueError("a tls-crypt-v2 server wraps with each client's own key")

    def unwrap(self, wire: bytes) -> Unwrapped:
        raise DecodeError("a tls-crypt-v2 server needs the client's wrapped key",
                          "tls-crypt-v2", reason="no_client_key")

    def __repr__(self) -> str:
        return "ServerKey(<key>)"


def key_age_ok(metadata: bytes, max_days: int, unix_now: float) -> bool:
    """``--tls-crypt-v2-max-age`` (OpenVPN 2.7; 2.6 does not have it): a timestamp metadata
    no older than ``max_days`` days (``tls_crypt_v2_check_client_key_age``: a key without a
    timestamp fails)."""
    if len(metadata) < 9 or metadata[0] != METADATA_TIMESTAMP:
        return False
    created = int.from_bytes(metadata[1:9], "big", signed=True)
    return unix_now - created <= max_days * 86400


def timestamp_metadata(unix_now: int) -> bytes:
    """The metadata ``openvpn --genkey tls-crypt-v2-client`` writes without user data."""
    return bytes((METADATA_TIMESTAMP,)) + unix_now.to_bytes(8, "big", signed=True)


def from_v2(packet: ControlPacket) -> ControlPacket:
    """A tls-crypt-v2 client's v3 reset is its hard reset, a P_CONTROL_WKC_V1 a P_CONTROL_V1
    (once the WKc is stripped they carry what those carry)."""
    if packet.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V3:
        return replace(packet, opcode=Opcode.CONTROL_HARD_RESET_CLIENT_V2)
    if packet.opcode is Opcode.CONTROL_WKC_V1:
        return replace(packet, opcode=Opcode.CONTROL_V1)
    return packet


def has_early_negotiation(packet_id: int | None) -> bool:
    """Does a v3 reset's replay id say the client does early negotiation (mudp.c)?"""
    return packet_id is not None and packet_id & EARLY_NEG_MASK == EARLY_NEG_START
