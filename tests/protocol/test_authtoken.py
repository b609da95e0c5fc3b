"""auth-gen-token tokens in OpenVPN's format (trivpn/protocol/authtoken.py; OpenVPN
src/openvpn/auth_token.c)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from trivpn.protocol import authtoken as at

SECRET = bytes(range(128))
KEY = at.hmac_key(SECRET)
SID = b"S" * 12
NOW = 1_800_000_000


def test_token_layout_is_prefix_then_base64_of_sessid_times_and_hmac() -> None:
    token = at.generate(KEY, "alice", now=NOW, session_id=SID)
    assert token.startswith("SESS_ID_AT_") and len(token) == at.TOKEN_LEN == 91
    data = base64.b64decode(token[len("SESS_ID_AT_"):])
    assert data[:12] == SID
    assert struct.unpack(">QQ", data[12:28]) == (NOW, NOW)
    expected = hmac.new(SECRET[64:96], b"alice" + data[:28], hashlib.sha256).digest()
    assert data[28:] == expected


def test_a_fresh_token_is_valid_for_its_user_only() -> None:
    token = at.generate(KEY, "alice", now=NOW, session_id=SID)
    check = at.verify(KEY, token, "alice", now=NOW + 10, renewal=3600, lifetime=0)
    assert check.state is at.TokenState.VALID and check.session_id == SID
    assert at.verify(KEY, token, "bob", now=NOW, renewal=3600,
                     lifetime=0).state is at.TokenState.INVALID


def test_a_token_from_another_key_is_invalid() -> None:
    token = at.generate(at.hmac_key(bytes(128)), "alice", now=NOW, session_id=SID)
    assert at.verify(KEY, token, "alice", now=NOW, renewal=3600,
                     lifetime=0).state is at.TokenState.INVALID


def test_a_token_made_for_the_empty_user_is_marked_so() -> None:
    token = at.generate(KEY, "", now=NOW, session_id=SID)
    assert at.verify(KEY, token, "alice", now=NOW, renewal=3600,
                     lifetime=0).state is at.TokenState.VALID_EMPTY_USER


@pytest.mark.parametrize(("now", "lifetime", "state"), [
    (NOW + 7199, 0, at.TokenState.VALID),  # within two renewal periods
    (NOW + 7200, 0, at.TokenState.EXPIRED),
    (NOW - 1, 0, at.TokenState.EXPIRED),  # from the future
    (NOW + 100, 60, at.TokenState.EXPIRED),  # past its lifetime
])
def test_token_time_window(now: int, lifetime: int, state: at.TokenState) -> None:
    token = at.generate(KEY, "alice", now=NOW, session_id=SID)
    assert at.verify(KEY, token, "alice", now=now, renewal=3600,
                     lifetime=lifetime).state is state


def test_a_renewed_token_keeps_session_id_and_initial_time() -> None:
    token = at.generate(KEY, "alice", now=NOW + 500, session_id=SID, initial=NOW)
    check = at.verify(KEY, token, "alice", now=NOW + 600, renewal=3600, lifetime=0)
    assert (check.state, check.session_id, check.initial, check.timestamp) == (
        at.TokenState.VALID, SID, NOW, NOW + 500)


@pytest.mark.parametrize("password", ["s3cret", "SESS_ID_AT_" + "A" * 79,
                                      "SESS_ID_AT_" + "!" * 80])
def test_passwords_that_are_not_tokens_are_invalid(password: str) -> None:
    assert at.verify(KEY, password, "alice", now=NOW, renewal=3600,
                     lifetime=0).state is at.TokenState.INVALID


def test_secret_pem_round_trips_and_rejects_other_blocks() -> None:
    assert at.parse_secret_pem(at.format_secret_pem(SECRET)) == SECRET
    with pytest.raises(at.TokenKeyError):
        at.parse_secret_pem("-----BEGIN OpenVPN Static key V1-----\nab\n"
                            "-----END OpenVPN Static key V1-----\n")
    with pytest.raises(at.TokenKeyError):
        at.parse_secret_pem(at.format_secret_pem(bytes(16)))
