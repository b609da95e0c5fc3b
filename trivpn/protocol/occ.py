"""Keepalive ping and OCC messages carried as data-channel plaintext (docs/protocol.md §9)."""

from __future__ import annotations

from enum import IntEnum

from trivpn.protocol.errors import DecodeError

PING_MAGIC = bytes.fromhex("2a187bf3641eb4cb07ed2d0a981fc748")
OCC_MAGIC = bytes.fromhex("287f346bd4ef7a812d56b8d3afc5459c")
MAGIC_FIRST_BYTES = frozenset((PING_MAGIC[0], OCC_MAGIC[0]))
"""A payload whose first byte is not in here is neither a ping nor an OCC message (IP
packets never are: their first nibble is the version, 4 or 6)."""


class OccOpcode(IntEnum):
    REQUEST = 0
    REPLY = 1  # body: NUL-terminated options string
    MTU_LOAD_REQUEST = 2  # body: uint16 size
    MTU_LOAD = 3  # body: random filler
    MTU_REQUEST = 4
    MTU_REPLY = 5  # body: uint16 max_recv, uint16 max_send
    EXIT = 6


_OCC_OPS = {op.value: op for op in OccOpcode}


def is_ping(payload: bytes) -> bool:
    """True for exactly the 16-byte ping magic (after compression unframing)."""
    return payload == PING_MAGIC


def parse_occ(payload: bytes) -> tuple[OccOpcode, bytes] | None:
    """(opcode, body) for an OCC message, None when ``payload`` is not OCC.

    DecodeError when the magic is followed by no opcode or an unknown opcode.
    """
    if not payload.startswith(OCC_MAGIC):
        return None
    if len(payload) == len(OCC_MAGIC):
        raise DecodeError("OCC message without opcode", "occ", reason="truncated")
    op = _OCC_OPS.get(payload[len(OCC_MAGIC)])
    if op is None:
        raise DecodeError(f"unknown OCC opcode {payload[len(OCC_MAGIC)]}", "occ",
                          reason="bad_opcode")
    return op, payload[len(OCC_MAGIC) + 1:]


def build_occ(op: OccOpcode, body: bytes = b"") -> bytes:
    """Magic, opcode byte, body."""
    return OCC_MAGIC + bytes((op,)) + body
