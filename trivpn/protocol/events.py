"""What a :class:`~trivpn.protocol.session.Session` tells its caller.

Events are frozen dataclasses; the runtime logs them under stable snake_case names (``name``)
and acts on them. Times are the ``now`` values the caller passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trivpn.protocol.peerinfo import PeerInfo
from trivpn.protocol.push import PushedOptions
from trivpn.protocol.tls import PeerCertificate

# Handshake phases in the order they happen; the doctor reports the last one reached.
PHASE_RESET_SENT = "reset_sent"
PHASE_RESET_RECEIVED = "reset_received"
PHASE_TLS_STARTED = "tls_started"
PHASE_TLS_COMPLETE = "tls_complete"
PHASE_KEY_METHOD_SENT = "key_method_sent"
PHASE_KEY_METHOD_RECEIVED = "key_method_received"
PHASE_PUSH_REQUEST_SENT = "push_request_sent"
PHASE_PUSH_REPLY_RECEIVED = "push_reply_received"
PHASE_DATA_CHANNEL_READY = "data_channel_ready"

# Causes of a failed handshake (HandshakeFailed.cause).
CAUSE_NO_RESET_REPLY = "no_reset_reply"
CAUSE_TIMEOUT = "timeout"
CAUSE_AUTH_FAILED = "auth_failed"
CAUSE_NO_COMMON_CIPHER = "no_common_cipher"
CAUSE_BAD_PUSH = "bad_push"
CAUSE_KEY_EXPIRED = "key_expired"  # the old key's transition window ended, no new key
CAUSE_CONTROL_STALLED = "control_stalled"  # the peer acknowledged none of our control data
CAUSE_KEY_EXPORT = "key_export_failed"  # TLS-EKM was agreed but the export failed


@dataclass(frozen=True, slots=True)
class Event:
    name: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True)
class PhaseReached(Event):
    name: ClassVar[str] = "handshake_phase"
    key_id: int
    phase: str
    at: float


@dataclass(frozen=True, slots=True)
class TlsHandshakeComplete(Event):
    name: ClassVar[str] = "tls_handshake_complete"
    key_id: int
    description: str
    peer: PeerCertificate


@dataclass(frozen=True, slots=True)
class PeerCertificateRejected(Event):
    """A check on the peer's certificate failed (a HandshakeFailed follows); ``check`` is
    crl_verify, ns_cert_type, remote_cert_ku, remote_cert_eku or tls_verify."""

    name: ClassVar[str] = "peer_cert_rejected"
    key_id: int
    check: str
    serial: int
    common_name: str
    detail: str


@dataclass(frozen=True, slots=True)
class ClientAuthenticated(Event):
    """Server side: a client finished key method 2; call ``accept()`` or ``reject()``."""

    name: ClassVar[str] = "client_authenticated"
    peer: PeerCertificate
    peer_info: PeerInfo
    username: str | None
    password: str | None = field(default=None, repr=False)  # for auth-user-pass-verify
    options: str = ""  # the client's options string (opt-verify compares it)


@dataclass(frozen=True, slots=True)
class ClientReauthenticating(Event):
    """Server side: a renegotiation's key method 2 brought the client's credentials again
    (OpenVPN checks them at every key, key_method_2_read()); the key is already in use, the
    runtime refuses the client if they no longer pass."""

    name: ClassVar[str] = "client_reauthenticating"
    key_id: int
    username: str | None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PushReceived(Event):
    name: ClassVar[str] = "push_reply_received"
    options: PushedOptions


@dataclass(frozen=True, slots=True)
class DataChannelReady(Event):
    name: ClassVar[str] = "key_method_complete"
    key_id: int
    cipher: str
    peer_id: int | None
    renegotiated: bool
    key_derivation: str = "prf"  # or "tls-ekm" (docs/protocol.md §6.3)


@dataclass(frozen=True, slots=True)
class HandshakeFailed(Event):
    name: ClassVar[str] = "handshake_failed"
    key_id: int
    cause: str
    detail: str
    phase: str


@dataclass(frozen=True, slots=True)
class AuthFailed(Event):
    name: ClassVar[str] = "auth_failed"
    reason: str | None


@dataclass(frozen=True, slots=True)
class AuthTokenReceived(Event):
    """Client: the server pushed an auth-token; it is sent instead of the password from now
    on (the token itself is never in an event)."""

    name: ClassVar[str] = "auth_token_received"
    username: str


@dataclass(frozen=True, slots=True)
class RestartRequested(Event):
    name: ClassVar[str] = "restart_requested"
    message: str
    advance: bool


@dataclass(frozen=True, slots=True)
class HaltRequested(Event):
    name: ClassVar[str] = "halt_requested"
    message: str


@dataclass(frozen=True, slots=True)
class PeerExited(Event):
    name: ClassVar[str] = "peer_exited"
    how: str


@dataclass(frozen=True, slots=True)
class KeepaliveTimeout(Event):
    name: ClassVar[str] = "ping_restart"
    silent_for: float


@dataclass(frozen=True, slots=True)
class KeyExpired(Event):
    """The data key in use reached the end of its transition window before a renegotiated key
    replaced it (OpenVPN: "killed expiring key"); data is dropped until a new key is ready."""

    name: ClassVar[str] = "key_expired"
    key_id: int
    at: float


@dataclass(frozen=True, slots=True)
class ServerPollTimeout(Event):
    """Client: nothing came back from the server within server-poll-timeout (connect-timeout)
    seconds; OpenVPN moves on to the next remote (forward.c, check_server_poll_timeout)."""

    name: ClassVar[str] = "server_poll_timeout"
    seconds: float


#: ``TimeoutExit.cause`` values: OpenVPN's SIGTERM reasons (forward.c, ping.c), with ``_``.
TIMEOUT_PING_EXIT = "ping_exit"  # nothing received for ping-exit seconds
TIMEOUT_INACTIVE = "inactive"  # too little tunnel traffic for inactive seconds
TIMEOUT_SESSION = "session_timeout"  # session-timeout seconds since the timers started


@dataclass(frozen=True, slots=True)
class TimeoutExit(Event):
    """A timer that ends the session for good (OpenVPN raises SIGTERM): a client exits, a
    server drops this client. ``after`` is how long the timer ran."""

    name: ClassVar[str] = "timeout_exit"
    cause: str
    after: float
