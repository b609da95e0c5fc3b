"""Server-side username/password authentication: the pure decisions (no I/O, no time source).

What an ``auth-user-pass-verify`` script's exit code means, what the deferred-authentication
files say, how the credentials reach the script (environment or file) and which messages a
pending client gets. The runtime (trivpn/runtime/serverauth.py) runs the script and reads the
files; this module only interprets what it got.

Follows OpenVPN src/openvpn/ssl_verify.c: verify_user_pass(), verify_user_pass_script(),
set_verify_user_pass_env(), key_state_test_auth_control_file(),
key_state_check_auth_pending_file(), check_auth_pending_method(), and src/openvpn/push.c:
send_auth_pending_messages().
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from trivpn.protocol.peerinfo import IV_PROTO_AUTH_PENDING_KW, PeerInfo

# OpenVPN's string_mod_remap_name() keeps these in a username (CC_NAME: alnum plus "_-.@")
# and turns every other character into "_"; a password keeps printable characters, CR/LF
# become "_" (string_mod(up->password, CC_PRINT, CC_CRLF, '_')).
_NAME_EXTRA = frozenset("_-.@")
TLS_USERNAME_LEN = 64  # ssl_verify_username_length(): username-as-common-name limit
UNDEF_COMMON_NAME = "UNDEF"  # tls_common_name() of a client without certificate


def script_common_name(subject: str, common_name: str) -> str | None:
    """The common_name a script sees: none at all for a client without certificate (its
    subject is empty)."""
    return common_name if subject else None


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DEFERRED = "deferred"


def script_verdict(exit_code: int | None) -> Verdict:
    """An auth-user-pass-verify script's result: 0 accepts, 2 defers (the decision comes later
    through the auth_control_file), anything else (or a script killed by a signal: None)
    rejects."""
    if exit_code == 0:
        return Verdict.ACCEPT
    if exit_code == 2:
        return Verdict.DEFERRED
    return Verdict.REJECT


def control_file_verdict(content: bytes) -> Verdict:
    """The auth_control_file's first byte: '1' accepts, '0' rejects, else still pending."""
    if content[:1] == b"1":
        return Verdict.ACCEPT
    if content[:1] == b"0":
        return Verdict.REJECT
    return Verdict.DEFERRED


def failed_reason(content: bytes) -> str | None:
    """The auth_failed_reason_file's text, sent to the client as ``AUTH_FAILED,<text>``
    (OpenVPN sends the whole file; trivpn keeps its first line so the control message stays
    one line)."""
    text = content.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    return text or None


@dataclass(frozen=True, slots=True)
class PendingAuth:
    """What the script wrote to auth_pending_file: wait ``timeout`` s, by ``method``."""

    timeout: int
    method: str
    extra: str


class PendingFileError(ValueError):
    """The auth_pending_file is malformed; OpenVPN then fails the authentication."""


def parse_pending_file(content: bytes) -> PendingAuth | None:
    """None for an empty file (no pending request); three lines otherwise: timeout, method
    (e.g. ``webauth``, ``crtext``), extra (e.g. ``WEB_AUTH::https://...``)."""
    if not content:
        return None
    lines = content.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 3:
        raise PendingFileError("auth pending control file is not at least three lines long")
    timeout_text, method, extra = (line.rstrip("\r") for line in lines[:3])
    try:
        timeout = int(timeout_text.strip())
    except ValueError:
        raise PendingFileError("could not parse auth pending file timeout") from None
    if not 0 < timeout <= 0xFFFFFFFF:
        raise PendingFileError("could not parse auth pending file timeout")
    return PendingAuth(timeout, method, extra)


def pending_method_supported(info: PeerInfo, method: str) -> bool:
    """The client lists ``method`` in its IV_SSO peer-info (comma-separated)."""
    iv_sso = info.raw.get("IV_SSO")
    return iv_sso is not None and method in iv_sso.split(",")


def unsupported_method_reason(method: str) -> str:
    return f"Authentication failed, required pending auth method '{method}' not supported"


def pending_messages(pending: PendingAuth, info: PeerInfo, *, elapsed: float,
                     max_timeout: float) -> tuple[list[str], int] | None:
    """The control messages for a pending authentication and the timeout they grant, or None
    when the handshake already ran longer than ``max_timeout`` (OpenVPN: max(reneg-sec/2,
    hand-window))."""
    if elapsed < 0 or elapsed >= max_timeout:
        return None
    timeout = min(pending.timeout, int(max_timeout - elapsed))
    first = (f"AUTH_PENDING,timeout {timeout}" if info.iv_proto & IV_PROTO_AUTH_PENDING_KW
             else "AUTH_PENDING")
    return [first, f"INFO_PRE,{pending.extra}"], timeout


def clean_username(username: str) -> str:
    """OpenVPN's string_mod_remap_name(): characters outside alnum and ``_-.@`` become ``_``."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in _NAME_EXTRA else "_"
                   for c in username)


def clean_password(password: str) -> str:
    """Printable characters stay; control characters (CR, LF included) become ``_``."""
    return "".join(c if c.isprintable() else "_" for c in password)


def credentials_file(username: str, password: str) -> bytes:
    """The via-file temporary file: username and password, one per line."""
    return f"{username}\n{password}\n".encode("utf-8", "surrogateescape")


def username_as_common_name_ok(username: str) -> bool:
    return len(username.encode("utf-8", "surrogateescape")) <= TLS_USERNAME_LEN


def peer_info_env(info: PeerInfo) -> dict[str, str]:
    """The client's IV_* / UV_* peer-info lines, as OpenVPN's output_peer_info_env() exports
    them to scripts (only names of letters, digits and '_')."""
    env: dict[str, str] = {}
    for key, value in info.raw.items():
        if (key.startswith(("IV_", "UV_")) and all(c.isalnum() or c == "_" for c in key)
                and "\n" not in value):
            env[key] = value
    return env


def user_pass_env(*, username: str, password: str | None, common_name: str | None,
                  untrusted_ip: str, untrusted_port: int, info: PeerInfo,
                  control_files: Mapping[str, str],
                  extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of an auth-user-pass-verify script. ``password`` is None unless the
    script runs via-env with script-security 3 (OpenVPN's env_allowed() drops it below);
    ``common_name`` None (a client without certificate) leaves it out, as OpenVPN's
    setenv_str() of an unset name does."""
    env = dict(extra)
    env.update(peer_info_env(info))
    env.update({
        "script_type": "user-pass-verify",
        "username": username,
        "untrusted_ip": untrusted_ip,
        "untrusted_port": str(untrusted_port),
    })
    if common_name is not None:
        env["common_name"] = common_name
    env.update(control_files)
    if password is not None:
        env["password"] = password
    return env
