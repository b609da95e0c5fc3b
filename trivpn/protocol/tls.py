"""TLS inside the control channel: ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` (digest §4).

Ciphertext from reassembled P_CONTROL_V1 payloads goes into the incoming BIO; whatever the
outgoing BIO holds is cut into control packets by the session. This mirrors OpenVPN's
bio_write/bio_read design. The ``ssl.SSLContext`` is built outside the protocol layer
(``trivpn.tlscontext``) because loading certificates touches files.

On top of chain validation (done by OpenSSL through the context) OpenVPN checks the peer's leaf
certificate for ``remote-cert-tls`` and ``verify-x509-name``; :func:`check_peer_certificate` does
the same on the DER bytes.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trivpn.protocol.errors import HandshakeError

RemoteCertTls = Literal["server", "client"]
X509NameType = Literal["subject", "name", "name-prefix"]

# Causes used in HandshakeError.reason; the doctor reports these words.
CAUSE_CERT_VERIFY_FAILED = "cert_verify_failed"
CAUSE_PEER_REJECTED_CERT = "peer_rejected_cert"
CAUSE_TLS_ALERT = "tls_alert"

_PEER_CERT_ALERTS = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_DECRYPT_ERROR",
)

_SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}


@dataclass(frozen=True, slots=True)
class PeerVerification:
    """OpenVPN's checks on the peer's leaf certificate, beyond the CA chain."""

    remote_cert_tls: RemoteCertTls | None = None
    verify_x509_name: tuple[str, X509NameType] | None = None


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the session learned about the peer's certificate."""

    subject: str
    common_name: str
    serial: int
    not_after_unix: float


def openssl_subject(name: x509.Name) -> str:
    """Subject text as OpenVPN prints it (``C=US, ST=CA, O=Example, CN=server``)."""
    parts = []
    for attr in name:
        short = _SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
        value = attr.value if isinstance(attr.value, str) else attr.value.hex()
        parts.append(f"{short}={value}")
    return ", ".join(parts)


def check_peer_certificate(der: bytes, policy: PeerVerification) -> PeerCertificate:
    """Apply remote-cert-tls and verify-x509-name; raise HandshakeError naming what failed."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise HandshakeError(f"peer certificate does not parse: {exc}", "tls",
                             reason=CAUSE_CERT_VERIFY_FAILED) from exc
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    subject = openssl_subject(cert.subject)
    if policy.remote_cert_tls is not None:
        _check_remote_cert_tls(cert, policy.remote_cert_tls, subject)
    if policy.verify_x509_name is not None:
        _check_x509_name(subject, common_name, *policy.verify_x509_name)
    return PeerCertificate(subject, common_name, cert.serial_number,
                           cert.not_valid_after_utc.timestamp())


def _check_remote_cert_tls(cert: x509.Certificate, want: RemoteCertTls, subject: str) -> None:
    try:
        cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise HandshakeError(
            f"certificate of {subject} does not have the key usage extension "
            f"(remote-cert-tls {want})", "tls", reason=CAUSE_CERT_VERIFY_FAILED) from None
    wanted = (ExtendedKeyUsageOID.SERVER_AUTH if want == "server"
              else ExtendedKeyUsageOID.CLIENT_AUTH)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if wanted not in eku:
        purpose = "TLS Web Server Authentication" if want == "server" else \
            "TLS Web Client Authentication"
        raise HandshakeError(
            f"certificate of {subject} lacks extended key usage {purpose} "
            f"(remote-cert-tls {want})", "tls", reason=CAUSE_CERT_VERIFY_FAILED)


def _check_x509_name(subject: str, common_name: str, name: str, kind: X509NameType) -> None:
    if kind == "subject":
        ok = subject == name
    elif kind == "name":
        ok = common_name == name
    else:
        ok = common_name.startswith(name)
    if not ok:
        raise HandshakeError(f"peer {subject} does not match verify-x509-name {name} {kind}",
                             "tls", reason=CAUSE_CERT_VERIFY_FAILED)


def _classify(exc: ssl.SSLError) -> HandshakeError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        return HandshakeError(f"peer certificate verification failed: {detail}", "tls",
                              reason=CAUSE_CERT_VERIFY_FAILED)
    text = (exc.reason or str(exc)).upper()
    if any(alert in text for alert in _PEER_CERT_ALERTS):
        return HandshakeError(f"peer rejected our certificate: TLS alert {exc.reason}", "tls",
                              reason=CAUSE_PEER_REJECTED_CERT)
    if "ALERT" in text:
        return HandshakeError(f"TLS alert from peer: {exc.reason}", "tls", reason=CAUSE_TLS_ALERT)
    return HandshakeError(f"TLS error: {exc.reason or exc}", "tls", reason=CAUSE_TLS_ALERT)


class TlsEndpoint:
    """One TLS session (one per key id) over memory BIOs."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=None)
        self.handshake_complete = False

    def feed(self, ciphertext: bytes) -> None:
        self._incoming.write(ciphertext)

    def take_ciphertext(self) -> bytes:
        return self._outgoing.read()

    def advance(self) -> bool:
        """Drive the handshake as far as the input allows. True once it is complete."""
        if self.handshake_complete:
            return True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise _classify(exc) from exc
        self.handshake_complete = True
        return True

    def read(self) -> bytes:
        """All plaintext available now (may be empty)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(16384)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLError as exc:
                raise _classify(exc) from exc
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, plaintext: bytes) -> None:
        try:
            self._obj.write(plaintext)
        except ssl.SSLError as exc:
            raise _classify(exc) from exc

    def peer_certificate_der(self) -> bytes | None:
        return self._obj.getpeercert(binary_form=True)

    def describe(self) -> str:
        cipher = self._obj.cipher()
        version = self._obj.version() or "?"
        return f"{version}, cipher {cipher[0]}" if cipher else version
