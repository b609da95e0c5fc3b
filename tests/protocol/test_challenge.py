"""Static/dynamic challenge and auth-token formats (protocol/challenge.py) and the session's
use of a pushed auth-token."""

from __future__ import annotations

import base64

import pytest

from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.challenge import (
    AuthToken,
    DynamicChallenge,
    dynamic_challenge_password,
    parse_dynamic_challenge,
    pushed_auth_token,
    static_challenge_password,
)

PUSH = ("topology subnet", "ifconfig 198.18.8.2 255.255.255.0")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.directive("static-challenge")
def test_static_challenge_password_is_scrv1_with_both_parts_base64():
    assert static_challenge_password("s3cret", "123456") == (
        f"SCRV1:{_b64('s3cret')}:{_b64('123456')}")
    assert static_challenge_password("pä:ss", "") == f"SCRV1:{_b64('pä:ss')}:"


def test_dynamic_challenge_is_parsed_from_the_auth_failed_reason():
    reason = f"CRV1:R,E:Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l:{_b64('alice')}:Enter PIN: (6 digits)"
    assert parse_dynamic_challenge(reason) == DynamicChallenge(
        echo=True, response_required=True, state_id="Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l",
        username="alice", text="Enter PIN: (6 digits)")


def test_dynamic_challenge_without_echo_flag_hides_the_response():
    challenge = parse_dynamic_challenge(f"CRV1:R:sid:{_b64('bob')}:Token")
    assert challenge is not None and not challenge.echo and challenge.prompt == "CHALLENGE: Token"


@pytest.mark.parametrize("reason", [None, "Wrong password", "CRV1:R:sid", "CRV1:R:sid:%%%:t",
                                    "XRV1:R:sid:YWxpY2U=:t"])
def test_malformed_or_other_reasons_are_no_dynamic_challenge(reason: str | None):
    assert parse_dynamic_challenge(reason) is None


def test_dynamic_challenge_answer_is_crv1_state_and_response():
    challenge = DynamicChallenge(False, True, "sid42", "alice", "PIN")
    assert dynamic_challenge_password(challenge, "9876") == "CRV1::sid42::9876"


@pytest.mark.directive("auth-token", "auth-token-user")
def test_pushed_token_pairs_with_the_decoded_token_user_or_the_username_sent():
    assert pushed_auth_token("tok", None, "alice", None) == AuthToken("alice", "tok")
    assert pushed_auth_token("tok", _b64("carol"), "alice", None) == AuthToken("carol", "tok")
    previous = AuthToken("alice", "old")
    assert pushed_auth_token(None, None, "alice", previous) is previous
    assert pushed_auth_token("new", None, None, previous) == AuthToken("alice", "new")
    assert "tok" not in repr(AuthToken("alice", "tok"))


@pytest.mark.directive("auth-token")
def test_session_sends_the_pushed_token_instead_of_the_password_when_it_renegotiates():
    pair = Pair.create(client_config(username="alice", password="real-password"),
                       server_config())
    pair.admit = lambda server, now: server.accept(now, (*PUSH, "auth-token SESS_tok3n"),
                                                   peer_id=0)
    assert pair.run_until(pair.established, seconds=10)
    assert pair.server is not None
    first = pair.server._keys[0].remote_km
    assert first is not None and first.password == "real-password"
    assert events_of(pair.client_events, ev.AuthTokenReceived)[0].username == "alice"

    server = pair.server
    pair.client.renegotiate(pair.now)
    assert pair.run_until(lambda: 1 in server._keys and server._keys[1].remote_km is not None,
                          seconds=10)
    second = server._keys[1].remote_km
    assert second is not None
    assert (second.username, second.password) == ("alice", "SESS_tok3n")


@pytest.mark.directive("auth-token")
def test_session_started_with_a_token_sends_it_from_the_first_handshake():
    pair = Pair.create(client_config(username="alice", password="real-password",
                                     auth_token=AuthToken("alice", "T0K")), server_config())
    pair.admit = lambda server, now: server.accept(now, PUSH, peer_id=0)
    assert pair.run_until(pair.established, seconds=10)
    assert pair.server is not None
    km = pair.server._keys[0].remote_km
    assert km is not None and (km.username, km.password) == ("alice", "T0K")
