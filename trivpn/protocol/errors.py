"""The protocol layer's one exception family.

Every codec raises a subclass of :class:`ProtocolError` carrying *what* was wrong and *where*
(the field or offset). The session boundary turns these into counted drops; they never escape
into the runtime.
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


class DecodeError(ProtocolError):
    """Malformed bytes: truncated, an impossible length, an unknown opcode."""

    reason = "malformed"


class AuthenticationError(ProtocolError):
    """An HMAC, tls-crypt tag or AEAD tag did not verify."""

    reason = "auth_failed"


class ReplayError(ProtocolError):
    """A packet id was already seen or is too old for the replay window."""

    reason = "replay"


class StateError(ProtocolError):
    """A well-formed packet that is not acceptable in the current state."""

    reason = "unexpected"


class HandshakeError(ProtocolError):
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
