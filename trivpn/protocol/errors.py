"""The protocol layer's one exception family, split by whose fault it is.

Every error is a :class:`ProtocolError` carrying *what* was wrong and *where* (the field or
offset). Two branches say who must act on it (the split h11 makes between its local and remote
protocol errors):

* :class:`PeerViolation` -- the bytes the peer sent break the protocol. The session boundary
  turns these into counted drops (``Session.drops``); they never escape into the runtime.
* :class:`CallerMisuse` -- the code driving a session asked for something its state does not
  allow (a server told to ``start()``, a message sent before there is a control channel, a
  state machine moved along an edge its transition table does not have). It is raised to the
  caller, a bug to fix there, and is never counted as a dropped packet.

A plain :class:`ProtocolError` comes from a codec that cannot tell who produced its input (a
packet too large to frame, a packet id that would wrap, a pushed option that does not parse);
where the session meets one, the packet or message concerned is dropped and counted.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Something on the wire or in a protocol message is not what OpenVPN 2.6 sends.

    ``reason`` is a short stable snake_case word used to aggregate drop counters
    (``truncated``, ``bad_opcode``, ``hmac_mismatch``, ``replay``...).
    """

    reason = "protocol_error"

    def __init__(self, what: str, where: str = "", *, reason: str | None = None) -> None:
        self.what = what
        self.where = where
        if reason is not None:
            self.reason = reason
        super().__init__(f"{where}: {what}" if where else what)


class PeerViolation(ProtocolError):
    """What the peer sent is not what OpenVPN 2.6 sends, or not in this state: drop, count."""

    reason = "peer_violation"


class CallerMisuse(ProtocolError):
    """The caller used the session API in a state that does not allow it (h11's
    ``LocalProtocolError``). Raised to the caller; never counted in ``Session.drops``."""

    reason = "caller_misuse"


class DecodeError(PeerViolation):
    """Malformed bytes: truncated, an impossible length, an unknown opcode."""

    reason = "malformed"


class AuthenticationError(PeerViolation):
    """An HMAC, tls-crypt tag or AEAD tag did not verify."""

    reason = "auth_failed"


class ReplayError(PeerViolation):
    """A packet id was already seen or is too old for the replay window."""

    reason = "replay"


class StateError(PeerViolation):
    """A well-formed packet that is not acceptable in the current state."""

    reason = "unexpected"


class HandshakeError(PeerViolation):
    """The TLS or key-method-2 handshake failed (certificate, alert, options)."""

    reason = "handshake_failed"


class CertificateRejected(HandshakeError):
    """The peer's certificate failed one of OpenVPN's checks (``check``: crl_verify,
    ns_cert_type, remote_cert_ku, remote_cert_eku); names the certificate for the log."""

    def __init__(self, what: str, where: str = "", *, reason: str | None = None,
                 check: str, serial: int, common_name: str) -> None:
        super().__init__(what, where, reason=reason)
        self.check = check
        self.serial = serial
        self.common_name = common_name
