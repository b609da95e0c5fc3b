"""port-share: which first bytes of a TCP connection are an OpenVPN client (ps.c rules)."""

from __future__ import annotations

import pytest

from trivpn.protocol.packets import OPCODE_SHIFT, Opcode
from trivpn.protocol.portshare import FirstBytes, classify

pytestmark = pytest.mark.directive("port-share")

V2 = int(Opcode.CONTROL_HARD_RESET_CLIENT_V2) << OPCODE_SHIFT
V3 = int(Opcode.CONTROL_HARD_RESET_CLIENT_V3) << OPCODE_SHIFT


def test_an_http_request_is_foreign() -> None:
    assert classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is FirstBytes.FOREIGN


def test_a_tls_client_hello_is_foreign() -> None:
    assert classify(bytes.fromhex("160301020001")) is FirstBytes.FOREIGN


def test_a_client_hard_reset_v2_is_openvpn() -> None:
    assert classify((14).to_bytes(2, "big") + bytes([V2]) + bytes(13)) is FirstBytes.OPENVPN
    assert classify((255).to_bytes(2, "big") + bytes([V2])) is FirstBytes.OPENVPN


def test_a_v2_reset_with_a_length_outside_14_to_255_is_foreign() -> None:
    assert classify((13).to_bytes(2, "big") + bytes([V2])) is FirstBytes.FOREIGN
    assert classify((256).to_bytes(2, "big") + bytes([V2])) is FirstBytes.FOREIGN


def test_a_tls_crypt_v2_reset_needs_a_length_from_336_to_1278() -> None:
    assert classify((336).to_bytes(2, "big") + bytes([V3])) is FirstBytes.OPENVPN
    assert classify((1278).to_bytes(2, "big") + bytes([V3])) is FirstBytes.OPENVPN
    assert classify((335).to_bytes(2, "big") + bytes([V3])) is FirstBytes.FOREIGN
    assert classify((1279).to_bytes(2, "big") + bytes([V3])) is FirstBytes.FOREIGN


def test_another_opcode_or_a_nonzero_key_id_is_foreign() -> None:
    control_v1 = 4 << OPCODE_SHIFT
    assert classify((20).to_bytes(2, "big") + bytes([control_v1])) is FirstBytes.FOREIGN
    assert classify((20).to_bytes(2, "big") + bytes([V2 | 1])) is FirstBytes.FOREIGN


def test_two_bytes_decide_by_the_length_alone() -> None:
    assert classify((40).to_bytes(2, "big")) is FirstBytes.OPENVPN
    assert classify(b"GE") is FirstBytes.FOREIGN


def test_fewer_than_two_bytes_ask_for_more() -> None:
    assert classify(b"") is FirstBytes.MORE
    assert classify(b"G") is FirstBytes.MORE
