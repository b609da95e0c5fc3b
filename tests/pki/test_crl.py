"""build_crl: a CRL signed by the CA, listing the revoked serials (what crl-verify reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from trivpn.pki.certs import create_ca
from trivpn.pki.crl import DEFAULT_CRL_DAYS, build_crl, crl_pem
from trivpn.pki.errors import PkiError


def test_crl_is_signed_by_the_ca_and_lists_each_serial_once():
    ca = create_ca("crl CA")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    crl = x509.load_pem_x509_crl(crl_pem(build_crl(ca, [5, 3, 5], now=now)))
    assert crl.issuer == ca.cert.subject
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in crl) == [3, 5]
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + timedelta(days=DEFAULT_CRL_DAYS)


def test_crl_refuses_impossible_times_and_serials():
    ca = create_ca("crl CA")
    now = datetime.now(UTC)
    with pytest.raises(PkiError, match="not after"):
        build_crl(ca, [], now - timedelta(days=1), now=now)
    with pytest.raises(PkiError, match="positive"):
        build_crl(ca, [0])
