"""peer-fingerprint on the peer's certificate (sans-IO)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.protocol.sessionkit import make_test_pki
from trivpn.protocol.errors import CertificateRejected
from trivpn.protocol.tls import PeerVerification, check_peer_certificate, format_fingerprint


@pytest.mark.directive("peer-fingerprint")
def test_certificate_passes_only_with_a_listed_sha256_fingerprint():
    der = make_test_pki().client.cert.public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).digest()
    ok = check_peer_certificate(der, PeerVerification(fingerprints=(bytes(32), digest)))
    assert ok.common_name == "client1"
    with pytest.raises(CertificateRejected) as info:
        check_peer_certificate(der, PeerVerification(fingerprints=(bytes(32),)))
    assert info.value.check == "peer_fingerprint"
    assert format_fingerprint(digest) in str(info.value)
