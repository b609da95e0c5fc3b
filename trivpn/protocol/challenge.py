"""Challenge/response and auth-token formats of a 2.6 client (pure: no I/O).

* Static challenge (``static-challenge TEXT ECHO``): the password sent is
  ``SCRV1:base64(password):base64(response)`` (OpenVPN src/openvpn/misc.c, get_user_pass_cr).
* Dynamic challenge: the server refuses with ``AUTH_FAILED,CRV1:FLAGS:STATE_ID:BASE64_USER:TEXT``
  (flags: ``E`` echo the response, ``R`` a response is required); the client asks the user and
  reconnects with the decoded username and the password ``CRV1::STATE_ID::RESPONSE``
  (misc.c, get_auth_challenge and get_user_pass_cr).
* ``auth-token TOKEN`` (and ``auth-token-user BASE64_USER``) pushed by the server: the client
  sends the token as its password from then on, with the username it used (or the decoded
  ``auth-token-user``), on renegotiations and reconnects, until an AUTH_FAILED makes it forget
  the token (ssl.c, key_method_2_write; misc.c, set_auth_token/set_auth_token_user; push.c,
  receive_auth_failed).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

CRV1 = "CRV1"
SCRV1 = "SCRV1"
CHALLENGE_PROMPT = "CHALLENGE: "
"""What OpenVPN shows before a challenge's text (misc.c, ``"CHALLENGE: %s"``)."""


@dataclass(frozen=True, slots=True)
class DynamicChallenge:
    """A parsed ``CRV1:`` challenge (the text after ``AUTH_FAILED,``)."""

    echo: bool
    response_required: bool
    state_id: str
    username: str
    text: str

    @property
    def prompt(self) -> str:
        return CHALLENGE_PROMPT + self.text


@dataclass(frozen=True, slots=True)
class AuthToken:
    """The token the server pushed and the username to send with it. Never in ``repr``."""

    username: str
    token: str = field(repr=False)


def _b64decode_text(text: str) -> str | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw.decode("utf-8", "replace")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def parse_dynamic_challenge(reason: str | None) -> DynamicChallenge | None:
    """The challenge in an AUTH_FAILED reason ``CRV1:flags:state_id:base64user:text``;
    ``None`` if the reason is not one (or is malformed: too few fields, a username that is
    not base64). The text may itself contain colons."""
    if reason is None:
        return None
    parts = reason.split(":", 4)
    if len(parts) != 5 or parts[0] != CRV1:
        return None
    flags, state_id, user64, text = parts[1], parts[2], parts[3], parts[4]
    username = _b64decode_text(user64)
    if username is None:
        return None
    return DynamicChallenge(echo="E" in flags, response_required="R" in flags,
                            state_id=state_id, username=username, text=text)


def dynamic_challenge_password(challenge: DynamicChallenge, response: str) -> str:
    """The password answering ``challenge``: ``CRV1::STATE_ID::RESPONSE``."""
    return f"{CRV1}::{challenge.state_id}::{response}"


def static_challenge_password(password: str, response: str) -> str:
    """``SCRV1:base64(password):base64(response)``."""
    return f"{SCRV1}:{_b64(password)}:{_b64(response)}"


def pushed_auth_token(token: str | None, token_user: str | None,
                      username: str | None, previous: AuthToken | None) -> AuthToken | None:
    """The auth-token to use after a push: ``token`` (if non-empty) with the decoded
    ``auth-token-user`` when given, else the username the client authenticated with (or the
    previous token's). ``None`` while neither a token nor a username is known."""
    if not token:
        return previous
    user = (_b64decode_text(token_user) if token_user else None) or username or (
        previous.username if previous is not None else None)
    if not user:
        return None
    return AuthToken(user, token)
