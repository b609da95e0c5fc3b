"""OpenVPN packet headers: opcode byte, plain control-packet layout, data-packet headers.

docs/protocol.md §1.2 (byte0 = opcode << 3 | key_id), §1.3 (control layout, no tls-auth/crypt),
§7.1 (P_DATA_V1 / P_DATA_V2 headers). Wrapping (tls-auth, tls-crypt) lives in :mod:`wrap`; the
functions here see the *plain* control bytes: ``byte0 || own sid || acks || [remote sid] ||
[message id] || payload``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from trivpn.protocol.errors import DecodeError

OPCODE_SHIFT = 3
KEY_ID_MASK = 0x07
SESSION_ID_LEN = 8
MAX_CONTROL_ACKS = 8  # RELIABLE_ACK_SIZE: a receiver rejects longer ack lists
CONTROL_SEND_ACK_MAX = 4  # acks piggy-backed on a P_CONTROL_V1 / reset by OpenVPN
MAX_ID = 0xFFFFFFFF
MAX_PEER_ID = 0xFFFFFF
PEER_ID_UNSET = 0xFFFFFF  # "no peer-id" value in P_DATA_V2
ZERO_SESSION_ID = bytes(SESSION_ID_LEN)

_U32 = struct.Struct(">I")


class Opcode(IntEnum):
    CONTROL_HARD_RESET_CLIENT_V1 = 1
    CONTROL_HARD_RESET_SERVER_V1 = 2
    CONTROL_SOFT_RESET_V1 = 3
    CONTROL_V1 = 4
    ACK_V1 = 5
    DATA_V1 = 6
    CONTROL_HARD_RESET_CLIENT_V2 = 7
    CONTROL_HARD_RESET_SERVER_V2 = 8
    DATA_V2 = 9
    CONTROL_HARD_RESET_CLIENT_V3 = 10
    CONTROL_WKC_V1 = 11


_OPCODES: dict[int, Opcode] = {op.value: op for op in Opcode}

# Opcodes whose plain layout is §1.3. The key-method-1 resets (1, 2) are rejected by 2.6.
# For CLIENT_V3 / WKC_V1 the tls-crypt-v2 wrapped client key must already be stripped.
CONTROL_OPCODES = frozenset({
    Opcode.CONTROL_SOFT_RESET_V1,
    Opcode.CONTROL_V1,
    Opcode.ACK_V1,
    Opcode.CONTROL_HARD_RESET_CLIENT_V2,
    Opcode.CONTROL_HARD_RESET_SERVER_V2,
    Opcode.CONTROL_HARD_RESET_CLIENT_V3,
    Opcode.CONTROL_WKC_V1,
})
DATA_OPCODES = frozenset({Opcode.DATA_V1, Opcode.DATA_V2})
HARD_RESET_OPCODES = frozenset({
    Opcode.CONTROL_HARD_RESET_CLIENT_V2,
    Opcode.CONTROL_HARD_RESET_SERVER_V2,
    Opcode.CONTROL_HARD_RESET_CLIENT_V3,
})


def make_byte0(opcode: Opcode, key_id: int) -> int:
    """``opcode << 3 | key_id``."""
    if not 0 <= key_id <= KEY_ID_MASK:
        raise ValueError(f"key_id must be 0..7, got {key_id}")
    return (int(opcode) << OPCODE_SHIFT) | key_id


def split_byte0(b: int) -> tuple[Opcode, int]:
    """Split the first byte into (opcode, key_id); DecodeError for opcodes outside 1..11."""
    op = _OPCODES.get(b >> OPCODE_SHIFT)
    if op is None:
        raise DecodeError(f"unknown opcode {b >> OPCODE_SHIFT}", "byte0", reason="bad_opcode")
    return op, b & KEY_ID_MASK


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """A decoded plain control packet (§1.3).

    ``remote_session_id`` is present iff ``acks`` is non-empty; ``message_id`` is None only for
    P_ACK_V1 (which also has an empty payload).
    """

    opcode: Opcode
    key_id: int
    session_id: bytes
    acks: tuple[int, ...] = ()
    remote_session_id: bytes | None = None
    message_id: int | None = None
    payload: bytes = b""


def _check_sid(sid: bytes | None, field: str) -> bytes:
    if sid is None or len(sid) != SESSION_ID_LEN:
        raise ValueError(f"{field} must be {SESSION_ID_LEN} bytes")
    if sid == ZERO_SESSION_ID:
        raise ValueError(f"{field} must not be all zero")
    return sid


def encode_control(p: ControlPacket) -> bytes:
    """Encode ``p`` in the plain layout of §1.3.

    Raises ValueError for a packet that violates the layout's invariants (these are bugs of the
    caller, not malformed input): opcode not a control opcode, key_id outside 0..7, more than
    8 acks, session ids not 8 non-zero bytes, remote sid present iff acks, message id absent
    iff P_ACK_V1, a payload on P_ACK_V1, ids outside uint32.
    """
    if p.opcode not in CONTROL_OPCODES:
        raise ValueError(f"{p.opcode!r} is not a control opcode")
    parts = [bytes((make_byte0(p.opcode, p.key_id),)), _check_sid(p.session_id, "session_id")]
    if len(p.acks) > MAX_CONTROL_ACKS:
        raise ValueError(f"at most {MAX_CONTROL_ACKS} acks, got {len(p.acks)}")
    parts.append(bytes((len(p.acks),)))
    for ack in p.acks:
        if not 0 <= ack <= MAX_ID:
            raise ValueError(f"ack id {ack} outside uint32")
        parts.append(_U32.pack(ack))
    if p.acks:
        parts.append(_check_sid(p.remote_session_id, "remote_session_id"))
    elif p.remote_session_id is not None:
        raise ValueError("remote_session_id must be None when there are no acks")
    if p.opcode is Opcode.ACK_V1:
        if p.message_id is not None or p.payload:
            raise ValueError("P_ACK_V1 has no message id and no payload")
    else:
        if p.message_id is None or not 0 <= p.message_id <= MAX_ID:
            raise ValueError(f"{p.opcode.name} needs a uint32 message id")
        parts.append(_U32.pack(p.message_id))
        parts.append(p.payload)
    return b"".join(parts)


def decode_control(data: bytes) -> ControlPacket:
    """Decode plain (already unwrapped) control packet bytes.

    Raises DecodeError when truncated, for a non-control opcode, more than 8 acks, or an
    all-zero session id. Bytes after the ack block of a P_ACK_V1 are ignored, as OpenVPN does.
    """
    n = len(data)
    if n < 1 + SESSION_ID_LEN + 1:
        raise DecodeError(f"control packet of {n} bytes is truncated", "header",
                          reason="truncated")
    opcode, key_id = split_byte0(data[0])
    if opcode not in CONTROL_OPCODES:
        raise DecodeError(f"{opcode.name} is not a control opcode", "byte0", reason="bad_opcode")
    sid = data[1:9]
    if sid == ZERO_SESSION_ID:
        raise DecodeError("all-zero session id", "session id", reason="bad_session_id")
    count = data[9]
    if count > MAX_CONTROL_ACKS:
        raise DecodeError(f"{count} acks, at most {MAX_CONTROL_ACKS} allowed", "ack count",
                          reason="too_many_acks")
    pos = 10
    remote: bytes | None = None
    acks: tuple[int, ...] = ()
    if count:
        end = pos + 4 * count + SESSION_ID_LEN
        if n < end:
            raise DecodeError("ack block truncated", "acks", reason="truncated")
        acks = struct.unpack_from(f">{count}I", data, pos)
        remote = data[end - SESSION_ID_LEN:end]
        if remote == ZERO_SESSION_ID:
            raise DecodeError("all-zero remote session id", "remote session id",
                              reason="bad_session_id")
        pos = end
    if opcode is Opcode.ACK_V1:
        return ControlPacket(opcode, key_id, sid, acks, remote)
    if n < pos + 4:
        raise DecodeError("message id truncated", "message id", reason="truncated")
    (message_id,) = _U32.unpack_from(data, pos)
    return ControlPacket(opcode, key_id, sid, acks, remote, message_id, data[pos + 4:])


def parse_data_header(data: bytes) -> tuple[Opcode, int, int | None, int]:
    """Parse a data packet header: (opcode, key_id, peer_id or None for V1, header length)."""
    if not data:
        raise DecodeError("empty packet", "byte0", reason="truncated")
    opcode, key_id = split_byte0(data[0])
    if opcode is Opcode.DATA_V2:
        if len(data) < 4:
            raise DecodeError("P_DATA_V2 header truncated", "peer id", reason="truncated")
        return opcode, key_id, int.from_bytes(data[1:4], "big"), 4
    if opcode is Opcode.DATA_V1:
        return opcode, key_id, None, 1
    raise DecodeError(f"{opcode.name} is not a data opcode", "byte0", reason="bad_opcode")


def data_header(key_id: int, peer_id: int | None) -> bytes:
    """P_DATA_V1 header (1 byte) when ``peer_id`` is None, else P_DATA_V2 (4 bytes)."""
    if peer_id is None:
        return bytes((make_byte0(Opcode.DATA_V1, key_id),))
    if not 0 <= peer_id <= MAX_PEER_ID:
        raise ValueError(f"peer_id must be 0..0xFFFFFF, got {peer_id}")
    return _U32.pack((make_byte0(Opcode.DATA_V2, key_id) << 24) | peer_id)


# ---------------------------------------------------------------------------- header peek
#
# Everything outside this package that must tell packets apart before a session sees them (the
# server's demultiplexer, the client's data path, the doctor's probe) asks these names instead
# of slicing bytes or comparing opcode numbers. Every wrapping (none, tls-auth, tls-crypt) keeps
# ``byte0 || own session id`` in clear at the front of a control packet, and a data packet's
# header is ``byte0`` (P_DATA_V1) or ``byte0 || peer id`` (P_DATA_V2), so the peek needs no keys.

DATA_BYTE0 = frozenset(make_byte0(op, key_id) for op in DATA_OPCODES
                       for key_id in range(KEY_ID_MASK + 1))
"""Every first byte of a data packet. ``data[0] in DATA_BYTE0`` is the per-packet test of the
data paths: one set lookup, no call (as cheap as the shift-and-compare it replaces)."""


@dataclass(frozen=True, slots=True)
class Header:
    """What the first bytes of a packet say before it is unwrapped or decrypted.

    ``session_id``: the sender's session id of a control packet (None for data packets and for
    a control packet too short to carry one); ``peer_id``: the peer id of a P_DATA_V2 (None for
    anything else, and for P_DATA_V2 without the 3 bytes).
    """

    opcode: Opcode
    key_id: int
    session_id: bytes | None = None
    peer_id: int | None = None

    @property
    def is_data(self) -> bool:
        return self.opcode in DATA_OPCODES

    @property
    def is_client_reset(self) -> bool:
        """A client's hard reset (v2) with key id 0, what opens a session."""
        return self.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V2 and self.key_id == 0

    @property
    def is_server_reset(self) -> bool:
        """A server's hard reset (v2) with key id 0, what answers a client's."""
        return self.opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2 and self.key_id == 0

    @property
    def is_cookie_reply(self) -> bool:
        """A P_CONTROL_V1 / P_ACK_V1 with key id 0: what a client sends after a server's reset,
        and what proves a stateless cookie."""
        return self.opcode in (Opcode.CONTROL_V1, Opcode.ACK_V1) and self.key_id == 0


def peek_header(data: bytes) -> Header:
    """The outer header of ``data`` (no keys needed); DecodeError for an empty packet or an
    unknown opcode. The rest of the packet is not checked."""
    if not data:
        raise DecodeError("empty packet", "byte0", reason="empty_packet")
    opcode, key_id = split_byte0(data[0])
    if opcode is Opcode.DATA_V2:
        peer_id = int.from_bytes(data[1:4], "big") if len(data) >= 4 else None
        return Header(opcode, key_id, peer_id=peer_id)
    if opcode is Opcode.DATA_V1:
        return Header(opcode, key_id)
    sid = data[1:1 + SESSION_ID_LEN] if len(data) >= 1 + SESSION_ID_LEN else None
    return Header(opcode, key_id, session_id=sid)


def looks_like_server_reset(data: bytes) -> bool:
    """Does ``data`` start like a server's hard reset (key id 0)? Nothing else is checked: a
    probe uses it to tell a tls-auth/tls-crypt mismatch from a stranger."""
    try:
        return peek_header(data).is_server_reset
    except DecodeError:
        return False
