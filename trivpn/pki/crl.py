"""Certificate revocation lists signed by a trivpn CA (what ``crl-verify`` reads).

Pure functions: nothing here touches files; ``now`` may be passed for reproducible times.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trivpn.pki.certs import Credential, _hash_for
from trivpn.pki.errors import PkiError

DEFAULT_CRL_DAYS = 180  # easy-rsa's default EASYRSA_CRL_DAYS


def build_crl(
    ca: Credential,
    revoked_serials: Iterable[int],
    next_update: datetime | None = None,
    *,
    now: datetime | None = None,
    last_update: datetime | None = None,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL issued and signed by ``ca`` listing ``revoked_serials`` (revoked at ``now``).

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
    for serial in sorted(set(revoked_serials)):
        if serial <= 0:
            raise PkiError(f"serial numbers are positive, got {serial}")
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start)
            .build())
    return builder.sign(ca.key, _hash_for(ca.key))


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
