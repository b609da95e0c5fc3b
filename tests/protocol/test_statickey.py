"""The OpenVPN static key file format (docs/protocol.md §3.1)."""

from __future__ import annotations

import pytest

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.statickey import (
    FOOTER,
    HEADER,
    StaticKey,
    format_static_key,
    parse_static_key,
)

KEY = StaticKey(bytes(range(256)))


def test_format_writes_sixteen_lines_of_32_hex_digits_between_the_markers():
    lines = format_static_key(KEY).splitlines()
    body = lines[lines.index(HEADER) + 1:lines.index(FOOTER)]
    assert len(body) == 16 and all(len(line) == 32 for line in body)
    assert body[0] == "000102030405060708090a0b0c0d0e0f"


def test_round_trip():
    assert parse_static_key(format_static_key(KEY)) == KEY


def test_comments_before_the_header_and_odd_line_lengths_are_accepted():
    hexed = KEY.data.hex()
    text = f"# a comment\n\n{HEADER}\n{hexed[:100]}\n  {hexed[100:]}  \n{FOOTER}\n"
    assert parse_static_key(text) == KEY


def test_key_slices_follow_the_cipher_hmac_layout():
    assert KEY.cipher(0) == bytes(range(0, 64))
    assert KEY.hmac(0) == bytes(range(64, 128))
    assert KEY.cipher(1) == bytes(range(128, 192))
    assert KEY.hmac(1) == bytes(range(192, 256))


@pytest.mark.parametrize(("text", "message"), [
    ("no key here\n", "missing '-----BEGIN OpenVPN Static key V1-----' line"),
    (f"{HEADER}\n00\n", "missing '-----END OpenVPN Static key V1-----' line"),
    (f"{HEADER}\n0011zz\n{FOOTER}\n", "non-hex character 'z' in key body"),
    (f"{HEADER}\n0011\n{FOOTER}\n", "key body must hold 256 bytes (512 hex digits), got 4 digits"),
])
def test_malformed_files_name_what_is_wrong(text, message):
    with pytest.raises(DecodeError) as info:
        parse_static_key(text, "ta.key")
    assert info.value.what == message
    assert info.value.where.startswith("ta.key")


def test_repr_never_shows_key_material():
    assert "00010203" not in repr(KEY)
