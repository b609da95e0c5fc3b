"""Key method 2 block (docs/protocol.md §5.2) and options string (§5.3)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.errors import DecodeError, ProtocolError
from trivpn.protocol.keymethod import (
    CredentialsTooLongError,
    IncompleteError,
    KeyMethod2,
    decode_key_method2,
    encode_key_method2,
    options_string,
    options_string_value,
)

CLIENT_OPTIONS = ("V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,"
                  "keysize 128,key-method 2,tls-client")
SERVER_OPTIONS = CLIENT_OPTIONS.replace("tls-client", "tls-server")
PEER_INFO = "IV_VER=2.6.14\nIV_PLAT=linux\n"


def _client_block(**overrides: object) -> KeyMethod2:
    fields: dict[str, object] = dict(
        random1=b"\x11" * 32, random2=b"\x22" * 32, options=CLIENT_OPTIONS,
        pre_master=bytes(range(48)), username="alice", password="s3cret", peer_info=PEER_INFO)
    fields.update(overrides)
    return KeyMethod2(**fields)  # type: ignore[arg-type]


def _wire_string(text: bytes) -> bytes:
    return struct.pack("!H", len(text) + 1) + text + b"\x00"


def _hand_built_client_block() -> bytes:
    """Client → server layout of §5.2, written out field by field."""
    return (b"\x00\x00\x00\x00" + b"\x02" + bytes(range(48)) + b"\x11" * 32 + b"\x22" * 32
            + _wire_string(CLIENT_OPTIONS.encode()) + _wire_string(b"alice")
            + _wire_string(b"s3cret") + _wire_string(PEER_INFO.encode()))


def test_client_block_round_trips():
    km = _client_block()
    data = encode_key_method2(km, from_server=False)
    assert decode_key_method2(data, from_server=False) == (km, len(data))


def test_server_block_round_trips_without_pre_master_or_credentials():
    km = KeyMethod2(random1=b"\x33" * 32, random2=b"\x44" * 32, options=SERVER_OPTIONS)
    data = encode_key_method2(km, from_server=True)
    assert len(data) == 4 + 1 + 32 + 32 + 2 + len(SERVER_OPTIONS) + 1 + 2 + 2 + 2
    assert data.endswith(b"\x00\x00" * 3)
    assert decode_key_method2(data, from_server=True) == (km, len(data))


def test_encoding_matches_the_hand_built_layout():
    assert encode_key_method2(_client_block(), from_server=False) == _hand_built_client_block()


def test_hand_built_block_decodes():
    km, used = decode_key_method2(_hand_built_client_block(), from_server=False)
    assert used == len(_hand_built_client_block())
    assert (km.pre_master, km.random1, km.random2) == (bytes(range(48)), b"\x11" * 32,
                                                        b"\x22" * 32)
    assert (km.options, km.username, km.password, km.peer_info) == (
        CLIENT_OPTIONS, "alice", "s3cret", PEER_INFO)


def test_empty_strings_are_written_as_length_zero():
    data = encode_key_method2(_client_block(username=None, password="", peer_info=None),
                              from_server=False)
    assert data.endswith(b"\x00\x00\x00\x00\x00\x00")


def test_nul_only_string_reads_as_absent():
    data = _hand_built_client_block()
    user_at = 117 + 2 + len(CLIENT_OPTIONS) + 1
    patched = data[:user_at] + b"\x00\x01\x00" + data[user_at + 2 + len(b"alice") + 1:]
    km, _ = decode_key_method2(patched, from_server=False)
    assert km.username is None and km.password == "s3cret"


def test_trailing_bytes_are_not_consumed():
    data = _hand_built_client_block()
    assert decode_key_method2(data + b"PUSH_REQUEST\x00", from_server=False)[1] == len(data)


def test_key_method_flags_in_the_high_nibble_are_ignored():
    data = bytearray(_hand_built_client_block())
    data[4] = 0x12
    assert decode_key_method2(bytes(data), from_server=False)[0].options == CLIENT_OPTIONS


def test_repr_hides_key_material_and_password():
    text = repr(_client_block())
    assert "s3cret" not in text and "\\x11" not in text and "\\x00\\x01" not in text
    assert "alice" in text


_FIELD_ENDS = [
    ("zero", 4), ("key_method", 5), ("pre_master", 53), ("random1", 85), ("random2", 117),
    ("options", 117 + 2 + len(CLIENT_OPTIONS) + 1),
    ("username", 117 + 2 + len(CLIENT_OPTIONS) + 1 + 2 + 6),
    ("password", 117 + 2 + len(CLIENT_OPTIONS) + 1 + 2 + 6 + 2 + 7),
    ("peer_info", len(_hand_built_client_block())),
]


@pytest.mark.parametrize(("field_name", "end"), _FIELD_ENDS)
def test_truncation_inside_each_field_is_incomplete(field_name, end):
    data = _hand_built_client_block()[:end - 1]
    with pytest.raises(IncompleteError) as info:
        decode_key_method2(data, from_server=False)
    assert info.value.where == field_name
    assert isinstance(info.value, DecodeError)


def test_truncation_inside_a_string_length_names_that_string():
    data = _hand_built_client_block()[:118]
    with pytest.raises(IncompleteError) as info:
        decode_key_method2(data, from_server=False)
    assert info.value.where == "options"


@pytest.mark.parametrize("method", [0x00, 0x01, 0x03, 0x0F, 0x21])
def test_unknown_key_method_is_rejected(method):
    data = bytearray(_hand_built_client_block())
    data[4] = method
    with pytest.raises(DecodeError) as info:
        decode_key_method2(bytes(data), from_server=False)
    assert info.value.where == "key_method"
    assert not isinstance(info.value, IncompleteError)


def _with_options_length(size: int) -> bytes:
    head = _hand_built_client_block()[:117]
    return head + struct.pack("!H", size) + b"x" * (size - 1) + b"\x00" + b"\x00" * 6


def test_options_string_of_512_bytes_is_accepted():
    km, _ = decode_key_method2(_with_options_length(512), from_server=False)
    assert len(km.options) == 511


def test_options_string_over_512_bytes_is_rejected_before_waiting_for_it():
    with pytest.raises(DecodeError) as info:
        decode_key_method2(_with_options_length(513)[:130], from_server=False)
    assert info.value.where == "options"
    assert not isinstance(info.value, IncompleteError)


def test_oversized_username_is_a_credentials_error():
    head = _hand_built_client_block()[:117] + _wire_string(CLIENT_OPTIONS.encode())
    data = head + struct.pack("!H", 5000) + b"u" * 5000 + b"\x00" * 4
    with pytest.raises(CredentialsTooLongError) as info:
        decode_key_method2(data, from_server=False)
    assert info.value.where == "username"


@pytest.mark.parametrize(("km", "from_server"), [
    (KeyMethod2(random1=b"\x00" * 32, random2=b"\x00" * 32, options="V4"), False),
    (KeyMethod2(random1=b"\x00" * 32, random2=b"\x00" * 32, options="V4",
                pre_master=b"\x00" * 48), True),
    (KeyMethod2(random1=b"\x00" * 31, random2=b"\x00" * 32, options="V4"), True),
    (KeyMethod2(random1=b"\x00" * 32, random2=b"\x00" * 32, options="x" * 512), True),
])
def test_encoding_rejects_malformed_blocks(km, from_server):
    with pytest.raises(ProtocolError):
        encode_key_method2(km, from_server=from_server)


@given(st.binary(max_size=400), st.booleans())
def test_garbage_raises_only_decode_errors(data, from_server):
    try:
        km, used = decode_key_method2(data, from_server=from_server)
    except DecodeError:
        return
    assert used <= len(data)
    assert isinstance(km.options, str)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32),
       st.text(max_size=100).filter(lambda s: "\x00" not in s),
       st.one_of(st.none(), st.text(min_size=1, max_size=50).filter(lambda s: "\x00" not in s)))
def test_any_server_block_round_trips(r1, r2, options, peer_info):
    km = KeyMethod2(random1=r1, random2=r2, options=options, peer_info=peer_info)
    data = encode_key_method2(km, from_server=True)
    assert decode_key_method2(data, from_server=True) == (km, len(data))


# --- options string: every expected value below was printed by openvpn 2.6.14 --verb 7 -----

_LIVE = {
    "udp tun client": (dict(is_server=False), CLIENT_OPTIONS),
    "udp tun server": (dict(is_server=True), SERVER_OPTIONS),
    "udp tap": (dict(is_server=False, dev_type="tap"),
                "V4,dev-type tap,link-mtu 1573,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,"
                "key-method 2,tls-client"),
    "tcp tun client": (dict(is_server=False, proto="tcp-client"),
                       "V4,dev-type tun,link-mtu 1543,tun-mtu 1500,proto TCPv4_CLIENT,auth SHA1,"
                       "keysize 128,key-method 2,tls-client"),
    "tcp tun server": (dict(is_server=True, proto="TCPv4_SERVER"),
                       "V4,dev-type tun,link-mtu 1543,tun-mtu 1500,proto TCPv4_SERVER,auth SHA1,"
                       "keysize 128,key-method 2,tls-server"),
    "tcp tap": (dict(is_server=False, proto="tcp", dev_type="tap"),
                "V4,dev-type tap,link-mtu 1575,tun-mtu 1500,proto TCPv4_CLIENT,auth SHA1,"
                "keysize 128,key-method 2,tls-client"),
    "tls-auth 1": (dict(is_server=False, tls_auth=True, keydir=1),
                   "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,keydir 1,auth SHA1,"
                   "keysize 128,tls-auth,key-method 2,tls-client"),
    "tls-auth no direction": (dict(is_server=False, tls_auth=True),
                              "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,"
                              "keysize 128,tls-auth,key-method 2,tls-client"),
    "udp6 prints v4": (dict(is_server=False, proto="udp6"), CLIENT_OPTIONS),
    "tun-mtu 1400": (dict(is_server=False, tun_mtu=1400),
                     "V4,dev-type tun,link-mtu 1441,tun-mtu 1400,proto UDPv4,auth SHA1,"
                     "keysize 128,key-method 2,tls-client"),
    "tap tun-mtu 1400": (dict(is_server=False, dev_type="tap", tun_mtu=1400),
                         "V4,dev-type tap,link-mtu 1473,tun-mtu 1400,proto UDPv4,auth SHA1,"
                         "keysize 128,key-method 2,tls-client"),
    "tap tun-mtu-extra 40": (dict(is_server=False, dev_type="tap", tun_mtu_extra=40),
                             "V4,dev-type tap,link-mtu 1581,tun-mtu 1500,proto UDPv4,auth SHA1,"
                             "keysize 128,key-method 2,tls-client"),
    "comp-lzo no": (dict(is_server=False, comp_lzo=True),
                    "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,comp-lzo,auth SHA1,"
                    "keysize 128,key-method 2,tls-client"),
    "compress": (dict(is_server=False, compression="stub"),
                 "V4,dev-type tun,link-mtu 1542,tun-mtu 1500,proto UDPv4,comp-lzo,auth SHA1,"
                 "keysize 128,key-method 2,tls-client"),
    "fragment": (dict(is_server=False, fragment=True),
                 "V4,dev-type tun,link-mtu 1545,tun-mtu 1500,proto UDPv4,mtu-dynamic,auth SHA1,"
                 "keysize 128,key-method 2,tls-client"),
    "auth SHA256": (dict(is_server=False, auth="SHA256"),
                    "V4,dev-type tun,link-mtu 1553,tun-mtu 1500,proto UDPv4,auth SHA256,"
                    "keysize 128,key-method 2,tls-client"),
    "auth none": (dict(is_server=False, auth="none"),
                  "V4,dev-type tun,link-mtu 1521,tun-mtu 1500,proto UDPv4,auth [null-digest],"
                  "keysize 128,key-method 2,tls-client"),
    "cipher AES-256-GCM": (dict(is_server=False, cipher="AES-256-GCM"),
                           "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,"
                           "cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,"
                           "tls-client"),
    "cipher AES-128-GCM": (dict(is_server=False, cipher="AES-128-GCM"),
                           "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,"
                           "cipher AES-128-GCM,auth [null-digest],keysize 128,key-method 2,"
                           "tls-client"),
    "cipher CHACHA20-POLY1305": (dict(is_server=False, cipher="CHACHA20-POLY1305"),
                                 "V4,dev-type tun,link-mtu 1534,tun-mtu 1500,proto UDPv4,"
                                 "cipher CHACHA20-POLY1305,auth [null-digest],keysize 256,"
                                 "key-method 2,tls-client"),
    "cipher AES-256-CBC in data-ciphers": (
        dict(is_server=False, cipher="AES-256-CBC", data_ciphers=["AES-256-GCM", "AES-256-CBC"]),
        "V4,dev-type tun,link-mtu 1557,tun-mtu 1500,proto UDPv4,cipher AES-256-CBC,auth SHA1,"
        "keysize 256,key-method 2,tls-client"),
    "cipher AES-128-CBC not in data-ciphers": (
        dict(is_server=False, cipher="AES-128-CBC",
             data_ciphers=["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]),
        "V4,dev-type tun,link-mtu 1557,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,"
        "key-method 2,tls-client"),
    "cipher AES-192-GCM not in data-ciphers": (
        dict(is_server=False, cipher="AES-192-GCM",
             data_ciphers=["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]),
        "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,auth [null-digest],keysize 192,"
        "key-method 2,tls-client"),
}


@pytest.mark.parametrize("case", sorted(_LIVE))
def test_options_string_matches_openvpn_2_6_14(case):
    kwargs, expected = _LIVE[case]
    assert options_string(**kwargs) == expected  # type: ignore[arg-type]


def test_explicit_link_mtu_and_keysize_are_used_verbatim():
    text = options_string(is_server=False, link_mtu=1541, keysize=128)
    assert text == CLIENT_OPTIONS


@pytest.mark.parametrize("kwargs", [
    dict(dev_type="null"), dict(proto="sctp"), dict(cipher="BF-OFB"), dict(auth="WHIRLPOOL"),
    dict(compression="snappy"), dict(keydir=2),
])
def test_options_string_rejects_unsupported_settings(kwargs):
    with pytest.raises(ValueError):
        options_string(is_server=False, **kwargs)


@pytest.mark.parametrize(("options", "name", "expected"), [
    ("V4,dev-type tun,cipher AES-256-CBC,auth SHA1", "cipher", "AES-256-CBC"),
    (CLIENT_OPTIONS, "cipher", None),
    ("V4,cipher ,auth SHA1", "cipher", None),
    ("V4,ciphers X,cipher Y", "cipher", "Y"),
])
def test_options_string_value(options, name, expected):
    assert options_string_value(options, name) == expected


def test_every_proper_prefix_of_a_block_is_incomplete():
    data = _hand_built_client_block()
    for end in range(len(data)):
        with pytest.raises(IncompleteError):
            decode_key_method2(data[:end], from_server=False)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=400),
                          st.integers(min_value=0, max_value=255)), max_size=6),
       st.integers(min_value=0, max_value=400))
def test_mutated_blocks_raise_only_decode_errors(changes, cut):
    data = bytearray(_hand_built_client_block())
    for pos, value in changes:
        data[pos % len(data)] = value
    try:
        km, used = decode_key_method2(bytes(data[:len(data) - cut % 50]), from_server=False)
    except DecodeError:
        return
    assert used <= len(data)
    assert km.pre_master is not None and len(km.pre_master) == 48
