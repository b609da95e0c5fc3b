"""PKCS#12 bundles: certificate, key and CA out; a password-protected bundle refused clearly."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    NoEncryption,
    pkcs12,
)

from tests.protocol.sessionkit import make_test_pki
from trivpn.pki.certs import certificate_pem
from trivpn.pki.errors import PkiError
from trivpn.pki.pkcs12 import decode_inline, load_pkcs12


def _bundle(encryption: object = None) -> tuple[bytes, object]:
    pki = make_test_pki()
    data = pkcs12.serialize_key_and_certificates(
        b"client1", pki.client.key, pki.client.cert, [pki.ca.cert],  # type: ignore[arg-type]
        encryption or NoEncryption())  # type: ignore[arg-type]
    return data, pki


@pytest.mark.directive("pkcs12")
def test_bundle_gives_certificate_key_and_ca():
    data, pki = _bundle()
    bundle = load_pkcs12(data, "client.p12")
    assert bundle.cert_pem == certificate_pem(pki.client.cert).decode()  # type: ignore[attr-defined]
    assert bundle.ca_pem == certificate_pem(pki.ca.cert).decode()  # type: ignore[attr-defined]
    assert "PRIVATE KEY" in bundle.key_pem and "key" not in repr(bundle).lower().replace(
        "<key>", "")


def test_inline_bundle_is_base64():
    data, _ = _bundle()
    assert decode_inline(base64.encodebytes(data).decode(), "inline") == data
    with pytest.raises(PkiError):
        decode_inline("not base64 !", "inline")


def test_password_protected_bundle_is_refused_naming_the_file():
    data, _ = _bundle(BestAvailableEncryption(b"secret"))
    with pytest.raises(PkiError, match="password-protected") as info:
        load_pkcs12(data, "client.p12")
    assert "client.p12" in str(info.value)
