"""Ping and OCC payloads (docs/protocol.md §9)."""

from __future__ import annotations

import pytest

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.occ import (
    OCC_MAGIC,
    PING_MAGIC,
    OccOpcode,
    build_occ,
    is_ping,
    parse_occ,
)


def test_magics_match_openvpn() -> None:
    assert PING_MAGIC.hex(" ") == "2a 18 7b f3 64 1e b4 cb 07 ed 2d 0a 98 1f c7 48"
    assert OCC_MAGIC.hex(" ") == "28 7f 34 6b d4 ef 7a 81 2d 56 b8 d3 af c5 45 9c"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(PING_MAGIC, True), (PING_MAGIC + b"\x00", False), (PING_MAGIC[:15], False),
     (b"\x45" + bytes(19), False), (b"", False)],
)
def test_is_ping_only_for_exact_magic(payload: bytes, expected: bool) -> None:
    assert is_ping(payload) is expected


def test_occ_exit_is_magic_then_opcode_6() -> None:
    wire = build_occ(OccOpcode.EXIT)
    assert wire == OCC_MAGIC + b"\x06"
    assert parse_occ(wire) == (OccOpcode.EXIT, b"")


def test_occ_reply_carries_options_string() -> None:
    body = b"V4,dev-type tun,link-mtu 1541\x00"
    assert parse_occ(build_occ(OccOpcode.REPLY, body)) == (OccOpcode.REPLY, body)


@pytest.mark.parametrize("payload", [PING_MAGIC, b"\x45\x00\x00\x14" + bytes(16), b""])
def test_non_occ_payload_is_none(payload: bytes) -> None:
    assert parse_occ(payload) is None


@pytest.mark.parametrize("payload", [OCC_MAGIC, OCC_MAGIC + b"\x07", OCC_MAGIC + b"\xff"])
def test_truncated_or_unknown_occ_is_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_occ(payload)
