"""auth-gen-token session tokens in OpenVPN's format (src/openvpn/auth_token.c):
``SESS_ID_AT_`` + base64(session id (12) | initial time (8, big-endian) | time (8) |
HMAC-SHA256(username | session id | initial time | time)). The HMAC key is the ``hmac`` half of
the 128-byte ``struct key`` in the ``OpenVPN auth-token server key`` PEM file
(auth_token_init_secret()): a token signed with a kept secret survives a server restart.

Pure: the caller passes the Unix time and the random session id.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

SESSION_ID_PREFIX = "SESS_ID_AT_"
SESSION_ID_LEN = 12
_HMAC_LEN = 32
_DATA_LEN = SESSION_ID_LEN + 8 + 8 + _HMAC_LEN  # 60 bytes: 80 base64 characters
TOKEN_LEN = len(SESSION_ID_PREFIX) + _DATA_LEN * 4 // 3
PEM_NAME = "OpenVPN auth-token server key"
KEY_LEN = 128  # sizeof(struct key): cipher[64] | hmac[64]
_TIMES = struct.Struct(">QQ")


class TokenKeyError(ValueError):
    """The auth-token secret file is not an ``OpenVPN auth-token server key``."""


def hmac_key(secret: bytes) -> bytes:
    """The HMAC-SHA256 key out of the 128-byte key: the first 32 bytes of its hmac half."""
    if len(secret) < KEY_LEN:
        raise TokenKeyError("not enough data in auth-token secret")
    return secret[64:64 + 32]


def parse_secret_pem(text: str) -> bytes:
    """The key bytes of an ``openvpn --genkey auth-token`` file."""
    begin, end = f"-----BEGIN {PEM_NAME}-----", f"-----END {PEM_NAME}-----"
    start = text.find(begin)
    stop = text.find(end, start + 1)
    if start < 0 or stop < 0:
        raise TokenKeyError(f"no '{begin}' block")
    try:
        data = base64.b64decode("".join(text[start + len(begin):stop].split()), validate=True)
    except ValueError:  # binascii.Error
        raise TokenKeyError("the key block is not valid base64") from None
    hmac_key(data)
    return data


def format_secret_pem(secret: bytes) -> str:
    b64 = base64.b64encode(secret).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {PEM_NAME}-----", *lines, f"-----END {PEM_NAME}-----"]) + "\n"


def is_token(password: str) -> bool:
    return len(password) == TOKEN_LEN and password.startswith(SESSION_ID_PREFIX)


def _mac(key: bytes, username: str, body: bytes) -> bytes:
    return hmac.new(key, username.encode("utf-8", "surrogateescape") + body,
                    hashlib.sha256).digest()


def generate(key: bytes, username: str, *, now: int, session_id: bytes,
             initial: int | None = None) -> str:
    """A token for ``username``; ``initial`` (the first token's time) and ``session_id`` stay
    the same when a token is renewed."""
    assert len(session_id) == SESSION_ID_LEN
    body = session_id + _TIMES.pack(now if initial is None else initial, now)
    data = body + _mac(key, username, body)
    return SESSION_ID_PREFIX + base64.b64encode(data).decode()


class TokenState(enum.Enum):
    VALID = "Authenticated"  # OpenVPN's session_state names
    VALID_EMPTY_USER = "AuthenticatedEmptyUser"
    EXPIRED = "Expired"
    INVALID = "Invalid"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    state: TokenState
    session_id: bytes = b""
    initial: int = 0
    timestamp: int = 0


def verify(key: bytes, token: str, username: str, *, now: int, renewal: int,
           lifetime: int) -> TokenCheck:
    """OpenVPN's verify_auth_token(): the HMAC (over the username, else the empty username),
    then the time: ``timestamp <= now < timestamp + 2 * renewal``, never before the initial
    time, and (``lifetime`` > 0) not after ``initial + lifetime``."""
    if not is_token(token):
        return TokenCheck(TokenState.INVALID)
    try:
        data = base64.b64decode(token[len(SESSION_ID_PREFIX):], validate=True)
    except ValueError:  # binascii.Error
        return TokenCheck(TokenState.INVALID)
    if len(data) != _DATA_LEN:
        return TokenCheck(TokenState.INVALID)
    body, mac = data[:-_HMAC_LEN], data[-_HMAC_LEN:]
    if hmac.compare_digest(_mac(key, username, body), mac):
        state = TokenState.VALID
    elif hmac.compare_digest(_mac(key, "", body), mac):
        state = TokenState.VALID_EMPTY_USER
    else:
        return TokenCheck(TokenState.INVALID)
    session_id = body[:SESSION_ID_LEN]
    initial, timestamp = _TIMES.unpack(body[SESSION_ID_LEN:])
    expired = (not timestamp <= now < timestamp + 2 * renewal or timestamp < initial
               or (lifetime > 0 and now > initial + lifetime))
    return TokenCheck(TokenState.EXPIRED if expired else state, session_id, initial, timestamp)


EXPIRED_REASON = "SESSION: token expired"  # auth_set_client_reason() in verify_auth_token()
