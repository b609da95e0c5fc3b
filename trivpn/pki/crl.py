"""Certificate revocation lists signed by a trivpn CA (what ``crl-verify`` reads).

Pure functions: nothing here touches files; ``now`` may be passed for reproducible times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trivpn.pki.certs import Credential, _hash_for
from trivpn.pki.errors import PkiError

DEFAULT_CRL_DAYS = 180  # easy-rsa's default EASYRSA_CRL_DAYS

# The revocation reasons easy-rsa's ``revoke`` accepts, as OpenSSL's ``ca`` spells them in
# index.txt, and their CRL reason codes.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "CACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
}


@dataclass(frozen=True, slots=True)
class Revocation:
    """One CRL entry: the serial, when it was revoked and why (a key of :data:`REASONS`)."""

    serial: int
    revoked_at: datetime
    reason: str | None = None


def build_crl(
    ca: Credential,
    revoked_serials: Iterable[int | Revocation],
    next_update: datetime | None = None,
    *,
    now: datetime | None = None,
    last_update: datetime | None = None,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL issued and signed by ``ca`` listing ``revoked_serials``: plain serials are
    revoked at ``now`` without a reason, :class:`Revocation` entries carry their own date and
    reason (a reason code extension except for ``unspecified``).

    ``next_update`` defaults to ``now + DEFAULT_CRL_DAYS`` days; ``last_update`` to ``now``.
    Pass a past ``next_update`` for an expired CRL.
    """
    now = now if now is not None else datetime.now(UTC)
    start = last_update if last_update is not None else now
    end = next_update if next_update is not None else now + timedelta(days=DEFAULT_CRL_DAYS)
    if end <= start:
        raise PkiError(f"CRL next update ({end.isoformat()}) is not after its last update "
                       f"({start.isoformat()})")
    if crl_number < 0:
        raise PkiError(f"CRL number must not be negative, got {crl_number}")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
    )
    entries: dict[int, Revocation] = {}
    for item in revoked_serials:
        entry = item if isinstance(item, Revocation) else Revocation(item, start)
        if entry.serial <= 0:
            raise PkiError(f"serial numbers are positive, got {entry.serial}")
        if entry.reason is not None and entry.reason not in REASONS:
            raise PkiError(f"unknown revocation reason {entry.reason!r}; expected one of "
                           f"{', '.join(REASONS)}")
        entries.setdefault(entry.serial, entry)
    for serial in sorted(entries):
        entry = entries[serial]
        revoked = (x509.RevokedCertificateBuilder().serial_number(serial)
                   .revocation_date(entry.revoked_at))
        if entry.reason is not None and entry.reason != "unspecified":
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]),
                                            critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(ca.key, _hash_for(ca.key))


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
