"""Opcode byte, plain control layout, data headers (docs/protocol.md §1.2-§1.4, §2.4, §7.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.packets import (
    CONTROL_OPCODES,
    MAX_CONTROL_ACKS,
    ControlPacket,
    Opcode,
    data_header,
    decode_control,
    encode_control,
    make_byte0,
    parse_data_header,
    split_byte0,
)

CLIENT_SID = bytes.fromhex("31e7f7c06bd93f39")
SERVER_SID = bytes.fromhex("2f4bbbc2b6136626")

# §1.4, captured from OpenVPN 2.6.14
CLIENT_RESET = bytes.fromhex("38 31e7f7c06bd93f39 00 00000000")
SERVER_RESET = bytes.fromhex("40 2f4bbbc2b6136626 01 00000000 31e7f7c06bd93f39 00000000")
CLIENT_HELLO_HEAD = bytes.fromhex(
    "20 31e7f7c06bd93f39 01 00000000 2f4bbbc2b6136626 00000001 1603010110010001 0c0303")


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(
    ("byte0", "opcode", "key_id"),
    [
        (0x08, Opcode.CONTROL_HARD_RESET_CLIENT_V1, 0),
        (0x10, Opcode.CONTROL_HARD_RESET_SERVER_V1, 0),
        (0x18, Opcode.CONTROL_SOFT_RESET_V1, 0),
        (0x19, Opcode.CONTROL_SOFT_RESET_V1, 1),
        (0x20, Opcode.CONTROL_V1, 0),
        (0x21, Opcode.CONTROL_V1, 1),
        (0x28, Opcode.ACK_V1, 0),
        (0x29, Opcode.ACK_V1, 1),
        (0x30, Opcode.DATA_V1, 0),
        (0x38, Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0),
        (0x40, Opcode.CONTROL_HARD_RESET_SERVER_V2, 0),
        (0x48, Opcode.DATA_V2, 0),
        (0x49, Opcode.DATA_V2, 1),
        (0x50, Opcode.CONTROL_HARD_RESET_CLIENT_V3, 0),
        (0x58, Opcode.CONTROL_WKC_V1, 0),
        (0x5F, Opcode.CONTROL_WKC_V1, 7),
    ],
)
def test_byte0_table_matches_openvpn(byte0: int, opcode: Opcode, key_id: int) -> None:
    assert split_byte0(byte0) == (opcode, key_id)
    assert make_byte0(opcode, key_id) == byte0


@pytest.mark.parametrize("byte0", [0x00, 0x07, 0x60, 0x67, 0xF8, 0xFF])
def test_split_byte0_rejects_opcodes_outside_1_to_11(byte0: int) -> None:
    with pytest.raises(DecodeError) as info:
        split_byte0(byte0)
    assert info.value.reason == "bad_opcode"


def test_client_reset_example_decodes_and_reencodes() -> None:
    p = decode_control(CLIENT_RESET)
    assert p == ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, CLIENT_SID, message_id=0)
    assert encode_control(p) == CLIENT_RESET


def test_server_reset_example_acks_client_reset() -> None:
    p = decode_control(SERVER_RESET)
    assert p == ControlPacket(Opcode.CONTROL_HARD_RESET_SERVER_V2, 0, SERVER_SID, acks=(0,),
                              remote_session_id=CLIENT_SID, message_id=0)
    assert encode_control(p) == SERVER_RESET
    assert len(SERVER_RESET) == 26


def test_first_control_v1_example_carries_ack_and_tls_record() -> None:
    p = decode_control(CLIENT_HELLO_HEAD)
    assert p.opcode is Opcode.CONTROL_V1
    assert p.session_id == CLIENT_SID
    assert p.acks == (0,)
    assert p.remote_session_id == SERVER_SID
    assert p.message_id == 1
    assert p.payload == unhex("1603010110010001 0c0303")
    assert encode_control(p) == CLIENT_HELLO_HEAD


def test_ack_v1_with_mru_acks_example() -> None:
    # §2.4: "28 … 04 00000004 00000003 00000002 00000001 <sid>"
    wire = (b"\x28" + CLIENT_SID + unhex("04 00000004 00000003 00000002 00000001")
            + SERVER_SID)
    p = decode_control(wire)
    assert p == ControlPacket(Opcode.ACK_V1, 0, CLIENT_SID, acks=(4, 3, 2, 1),
                              remote_session_id=SERVER_SID)
    assert encode_control(p) == wire


def test_ack_list_tolerates_duplicate_ids() -> None:
    wire = b"\x28" + CLIENT_SID + unhex("03 00000002 00000002 00000001") + SERVER_SID
    assert decode_control(wire).acks == (2, 2, 1)


def test_ack_v1_ignores_trailing_bytes_like_openvpn() -> None:
    wire = b"\x28" + CLIENT_SID + unhex("01 00000007") + SERVER_SID + b"junk"
    p = decode_control(wire)
    assert p.message_id is None
    assert p.payload == b""


def test_eight_acks_are_accepted_nine_rejected() -> None:
    acks8 = b"".join(i.to_bytes(4, "big") for i in range(8))
    assert decode_control(b"\x28" + CLIENT_SID + b"\x08" + acks8 + SERVER_SID).acks == tuple(
        range(8))
    wire9 = b"\x28" + CLIENT_SID + b"\x09" + acks8 + bytes(4) + SERVER_SID
    with pytest.raises(DecodeError) as info:
        decode_control(wire9)
    assert info.value.reason == "too_many_acks"


@pytest.mark.parametrize(("good", "header_len"),
                         [(CLIENT_RESET, 14), (SERVER_RESET, 26), (CLIENT_HELLO_HEAD, 26)])
def test_every_truncation_inside_the_header_is_rejected(good: bytes, header_len: int) -> None:
    for cut in range(header_len):
        with pytest.raises(DecodeError):
            decode_control(good[:cut])
    assert decode_control(good[:header_len]).payload == b""


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x38" + bytes(8) + unhex("00 00000000"), id="zero-own-sid"),
        pytest.param(b"\x40" + SERVER_SID + unhex("01 00000000") + bytes(8) + bytes(4),
                     id="zero-remote-sid"),
        pytest.param(b"\x30" + CLIENT_SID + unhex("00 00000000"), id="data-v1-opcode"),
        pytest.param(b"\x48" + CLIENT_SID + unhex("00 00000000"), id="data-v2-opcode"),
        pytest.param(b"\x08" + CLIENT_SID + unhex("00 00000000"), id="key-method-1-reset"),
        pytest.param(b"\x60" + CLIENT_SID + unhex("00 00000000"), id="opcode-12"),
    ],
)
def test_decode_control_rejects_invalid_packets(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_control(wire)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, CLIENT_SID, acks=tuple(range(9)),
                                   remote_session_id=SERVER_SID, message_id=1), id="9-acks"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, b"short", message_id=1), id="sid-len"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, bytes(8), message_id=1), id="zero-sid"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, CLIENT_SID), id="no-message-id"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 8, CLIENT_SID, message_id=1), id="key-id"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, CLIENT_SID, acks=(1,), message_id=1),
                     id="acks-without-remote-sid"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, CLIENT_SID, remote_session_id=SERVER_SID,
                                   message_id=1), id="remote-sid-without-acks"),
        pytest.param(ControlPacket(Opcode.ACK_V1, 0, CLIENT_SID, acks=(1,),
                                   remote_session_id=SERVER_SID, message_id=3), id="ack-with-id"),
        pytest.param(ControlPacket(Opcode.ACK_V1, 0, CLIENT_SID, acks=(1,),
                                   remote_session_id=SERVER_SID, payload=b"x"),
                     id="ack-with-payload"),
        pytest.param(ControlPacket(Opcode.DATA_V2, 0, CLIENT_SID, message_id=1), id="data-op"),
        pytest.param(ControlPacket(Opcode.CONTROL_V1, 0, CLIENT_SID, message_id=2**32),
                     id="message-id-range"),
    ],
)
def test_encode_control_rejects_invalid_packets(packet: ControlPacket) -> None:
    with pytest.raises(ValueError):
        encode_control(packet)


sids = st.binary(min_size=8, max_size=8).filter(any)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def control_packets(draw: st.DrawFn) -> ControlPacket:
    opcode = draw(st.sampled_from(sorted(CONTROL_OPCODES)))
    acks = tuple(draw(st.lists(u32, max_size=MAX_CONTROL_ACKS)))
    remote = draw(sids) if acks else None
    if opcode is Opcode.ACK_V1:
        return ControlPacket(opcode, draw(st.integers(0, 7)), draw(sids), acks, remote)
    return ControlPacket(opcode, draw(st.integers(0, 7)), draw(sids), acks, remote, draw(u32),
                         draw(st.binary(max_size=64)))


@given(control_packets())
def test_encode_then_decode_control_round_trips(packet: ControlPacket) -> None:
    wire = encode_control(packet)
    assert decode_control(wire) == packet
    expected_len = (1 + 8 + 1 + 4 * len(packet.acks) + (8 if packet.acks else 0)
                    + (0 if packet.message_id is None else 4) + len(packet.payload))
    assert len(wire) == expected_len


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"\x30", (Opcode.DATA_V1, 0, None, 1)),
        (b"\x37rest", (Opcode.DATA_V1, 7, None, 1)),
        (unhex("48000000 00000001"), (Opcode.DATA_V2, 0, 0, 4)),
        (unhex("49000000"), (Opcode.DATA_V2, 1, 0, 4)),
        (unhex("4a123456"), (Opcode.DATA_V2, 2, 0x123456, 4)),
        (unhex("48ffffff"), (Opcode.DATA_V2, 0, 0xFFFFFF, 4)),
    ],
)
def test_parse_data_header(wire: bytes, expected: tuple[Opcode, int, int | None, int]) -> None:
    assert parse_data_header(wire) == expected


@pytest.mark.parametrize("wire", [b"", b"\x48", unhex("480000"), b"\x20", b"\x38", b"\x00"])
def test_parse_data_header_rejects_bad_headers(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_data_header(wire)


@pytest.mark.parametrize(
    ("key_id", "peer_id", "expected"),
    [
        (0, None, b"\x30"),
        (3, None, b"\x33"),
        (0, 0, unhex("48000000")),
        (1, 0, unhex("49000000")),
        (0, 0xABCDEF, unhex("48abcdef")),
    ],
)
def test_data_header(key_id: int, peer_id: int | None, expected: bytes) -> None:
    assert data_header(key_id, peer_id) == expected
    assert parse_data_header(expected)[1:3] == (key_id, peer_id)


@pytest.mark.parametrize(("key_id", "peer_id"), [(8, None), (-1, 0), (0, 0x1000000), (0, -1)])
def test_data_header_rejects_out_of_range_values(key_id: int, peer_id: int | None) -> None:
    with pytest.raises(ValueError):
        data_header(key_id, peer_id)


def test_data_byte0_is_exactly_the_first_bytes_of_data_packets():
    from trivpn.protocol.packets import DATA_BYTE0, DATA_OPCODES
    for b in range(256):
        try:
            opcode, _ = split_byte0(b)
        except DecodeError:
            assert b not in DATA_BYTE0
            continue
        assert (b in DATA_BYTE0) == (opcode in DATA_OPCODES)


def test_peek_header_reads_session_id_of_control_and_peer_id_of_data_v2():
    from trivpn.protocol.packets import peek_header
    header = peek_header(CLIENT_RESET)
    assert header.is_client_reset and header.session_id == CLIENT_SID
    assert header.peer_id is None and not header.is_data
    assert peek_header(SERVER_RESET).is_server_reset
    v2 = peek_header(data_header(3, 0x0A0B0C) + b"payload")
    assert (v2.opcode, v2.key_id, v2.peer_id, v2.session_id) == (Opcode.DATA_V2, 3, 0x0A0B0C,
                                                                 None)
    assert v2.is_data and peek_header(data_header(1, None)).peer_id is None
    assert peek_header(CLIENT_RESET[:5]).session_id is None  # too short for one
    assert peek_header(data_header(0, 7)[:2]).peer_id is None


@given(st.binary(max_size=40))
def test_peek_header_never_raises_anything_but_decode_error(data: bytes):
    from trivpn.protocol.packets import looks_like_server_reset, peek_header
    try:
        header = peek_header(data)
    except DecodeError as exc:
        assert exc.reason in ("empty_packet", "bad_opcode")
        assert not looks_like_server_reset(data)
        return
    assert header.key_id == data[0] & 7
    assert looks_like_server_reset(data) == header.is_server_reset
