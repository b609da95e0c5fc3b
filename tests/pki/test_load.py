"""Reading PEM certificates and private keys from text, with errors that say where."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from trivpn.pki.certs import (
    Credential,
    certificate_pem,
    create_ca,
    issue_cert,
    load_certificate,
    load_certificates,
)
from trivpn.pki.errors import PkiError
from trivpn.pki.keys import load_private_key, private_key_pem


@pytest.fixture(scope="module")
def ca() -> Credential:
    return create_ca()


def test_chain_loads_in_order(ca: Credential) -> None:
    leaf = issue_cert(ca, "server", "s")
    text = (certificate_pem(leaf.cert) + certificate_pem(ca.cert)).decode()
    assert load_certificates("# comment\n" + text) == (leaf.cert, ca.cert)


def test_single_certificate_loads(ca: Credential) -> None:
    assert load_certificate(certificate_pem(ca.cert).decode()) == ca.cert


def test_single_certificate_refuses_a_chain(ca: Credential) -> None:
    text = (certificate_pem(ca.cert) * 2).decode()
    with pytest.raises(PkiError, match="expected one certificate, found 2"):
        load_certificate(text, "ca.crt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no PEM certificate found"),
        ("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
         "malformed PEM certificate"),
    ],
)
def test_bad_certificate_text_names_the_source(text, message) -> None:
    with pytest.raises(PkiError, match=message) as caught:
        load_certificates(text, "server.conf:<ca>")
    assert caught.value.where == "server.conf:<ca>"
    assert str(caught.value).startswith("server.conf:<ca>: ")


@pytest.mark.parametrize(
    "encoding",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
)
def test_private_key_loads_in_pkcs8_and_traditional_form(ca: Credential, encoding) -> None:
    pem = ca.key.private_bytes(serialization.Encoding.PEM, encoding, serialization.NoEncryption())
    loaded = load_private_key(pem.decode())
    assert private_key_pem(loaded) == private_key_pem(ca.key)


def test_written_key_is_unencrypted_pkcs8(ca: Credential) -> None:
    assert private_key_pem(ca.key).startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_encrypted_private_key_is_refused(ca: Credential) -> None:
    pem = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(PkiError, match="encrypted") as caught:
        load_private_key(pem.decode(), "client.key")
    assert caught.value.where == "client.key"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no PEM private key found"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "malformed"),
    ],
)
def test_bad_private_key_text_names_the_source(text, message) -> None:
    with pytest.raises(PkiError, match=message) as caught:
        load_private_key(text, "client.key")
    assert caught.value.where == "client.key"
