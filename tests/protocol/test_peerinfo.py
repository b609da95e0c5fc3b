"""Peer-info text (docs/protocol.md §5.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol import peerinfo as pi
from trivpn.protocol.peerinfo import PeerInfo, build_peer_info, parse_peer_info

DEFAULT_CIPHERS = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]

# Sent by a live OpenVPN 2.6.14 client with `client` and defaults (§5.4).
LIVE_2_6_14 = (
    "IV_VER=2.6.14\n"
    "IV_PLAT=linux\n"
    "IV_TCPNL=1\n"
    "IV_MTU=1600\n"
    "IV_NCP=2\n"
    "IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n"
    "IV_PROTO=990\n"
    "IV_LZO_STUB=1\n"
    "IV_COMP_STUB=1\n"
    "IV_COMP_STUBv2=1\n"
)


def test_bits_of_a_2_6_client_sum_to_990():
    bits = (pi.IV_PROTO_DATA_V2 | pi.IV_PROTO_REQUEST_PUSH | pi.IV_PROTO_TLS_KEY_EXPORT
            | pi.IV_PROTO_AUTH_PENDING_KW | pi.IV_PROTO_DNS_OPTION | pi.IV_PROTO_CC_EXIT_NOTIFY
            | pi.IV_PROTO_AUTH_FAIL_TEMP | pi.IV_PROTO_DYN_TLS_CRYPT)
    assert bits == 990 == pi.IV_PROTO_OPENVPN_26_CLIENT
    assert pi.IV_PROTO_NCP_P2P == 32


def test_default_peer_info_equals_live_2_6_14_text():
    built = build_peer_info(ciphers=DEFAULT_CIPHERS, iv_proto=pi.IV_PROTO_OPENVPN_26_CLIENT)
    assert built == LIVE_2_6_14


def test_live_text_parses():
    info = parse_peer_info(LIVE_2_6_14)
    assert (info.version, info.platform, info.iv_proto, info.ncp, info.mtu) == (
        "2.6.14", "linux", 990, 2, 1600)
    assert info.ciphers == tuple(DEFAULT_CIPHERS)
    assert info.announces_ciphers
    assert info.has_proto(pi.IV_PROTO_REQUEST_PUSH) and not info.has_proto(pi.IV_PROTO_NCP_P2P)
    assert info.raw["IV_COMP_STUBv2"] == "1"


@pytest.mark.parametrize(("ciphers", "has_ncp"), [
    (["AES-256-GCM", "AES-128-GCM"], True),
    (["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"], True),
    (["AES-256-GCM", "CHACHA20-POLY1305"], False),
    (["AES-128-GCM"], False),
    (["CHACHA20-POLY1305"], False),
])
def test_iv_ncp_only_when_both_aes_gcm_ciphers_are_offered(ciphers, has_ncp):
    text = build_peer_info(ciphers=ciphers, iv_proto=2)
    assert ("IV_NCP=2\n" in text) == has_ncp
    assert f"IV_CIPHERS={':'.join(ciphers)}\n" in text


def test_optional_lines_can_be_left_out_and_extra_lines_come_last():
    text = build_peer_info(ciphers=["AES-256-GCM"], iv_proto=6, mtu=None, comp_stubs=False,
                           extra={"IV_GUI_VER": "trivpn 0.1"})
    assert text == ("IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_CIPHERS=AES-256-GCM\n"
                    "IV_PROTO=6\nIV_GUI_VER=trivpn 0.1\n")


@pytest.mark.parametrize("kwargs", [
    dict(extra={"IV_VER": "again"}),
    dict(extra={"BAD KEY": "x"}),
    dict(extra={"IV_X": "line\nbreak"}),
    dict(version="2.6\n"),
    dict(ciphers=["AES:GCM"]),
])
def test_build_rejects_text_that_breaks_the_format(kwargs):
    args = dict(ciphers=DEFAULT_CIPHERS, iv_proto=2)
    args.update(kwargs)
    with pytest.raises(ValueError):
        build_peer_info(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [None, "", "garbage", "\n\n=\n"])
def test_absent_or_empty_peer_info_parses_to_defaults(text):
    assert parse_peer_info(text) == PeerInfo()


def test_first_occurrence_wins_and_numbers_are_read_like_sscanf():
    info = parse_peer_info("IV_PROTO=  6abc\nIV_PROTO=990\nIV_NCP=x\nIV_MTU=-5\r\n")
    assert (info.iv_proto, info.ncp, info.mtu) == (6, 0, -5)


def test_negative_iv_proto_counts_as_zero():
    assert parse_peer_info("IV_PROTO=-2\n").iv_proto == 0


def test_empty_iv_ciphers_still_counts_as_announced():
    info = parse_peer_info("IV_CIPHERS=\n")
    assert info.announces_ciphers and info.ciphers == ()


@given(st.text(max_size=300))
def test_parse_never_raises(text):
    assert isinstance(parse_peer_info(text), PeerInfo)


def test_a_10000_digit_iv_proto_is_no_number_and_parses_fast():
    import time

    text = "IV_PROTO=" + "9" * 10_000 + "\nIV_MTU=" + "1" * 100_000 + "\n"
    start = time.perf_counter()
    info = parse_peer_info(text)
    assert time.perf_counter() - start < 0.05
    assert (info.iv_proto, info.mtu) == (0, None)


def test_leading_zeros_do_not_count_towards_the_bound():
    assert parse_peer_info("IV_PROTO=" + "0" * 5000 + "990\n").iv_proto == 990


@pytest.mark.parametrize("value", ["\u0669\u0669\u0660", "\uff19\uff19\uff10", "\u00b2"])
def test_non_ascii_digits_are_not_numbers(value):
    """Python's int() reads Arabic-Indic and full-width digits; sscanf("%d") does not."""
    info = parse_peer_info(f"IV_PROTO={value}\nIV_NCP={value}\n")
    assert (info.iv_proto, info.ncp) == (0, 0)


def test_numbers_beyond_a_c_int_are_no_numbers():
    assert parse_peer_info("IV_PROTO=2147483647\n").iv_proto == 2**31 - 1
    assert parse_peer_info("IV_PROTO=2147483648\n").iv_proto == 0
