"""OpenVPN's peer-certificate checks (remote-cert-tls, verify-x509-name) on the leaf cert."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.protocol.sessionkit import make_test_pki
from trivpn.pki.certs import issue_cert
from trivpn.protocol.errors import HandshakeError
from trivpn.protocol.tls import PeerVerification, check_peer_certificate, openssl_subject


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


@pytest.mark.directive("remote-cert-tls")
def test_server_certificate_passes_remote_cert_tls_server():
    pki = make_test_pki()
    peer = check_peer_certificate(_der(pki.server.cert), PeerVerification("server"))
    assert peer.common_name == "server"
    assert peer.subject == "CN=server"


@pytest.mark.directive("remote-cert-tls")
def test_client_certificate_fails_remote_cert_tls_server():
    pki = make_test_pki()
    with pytest.raises(HandshakeError) as info:
        check_peer_certificate(_der(pki.client.cert), PeerVerification("server"))
    assert info.value.reason == "cert_verify_failed"
    assert "TLS Web Server Authentication" in info.value.what


@pytest.mark.directive("remote-cert-tls")
def test_certificate_without_key_usage_fails_remote_cert_tls():
    pki = make_test_pki()
    bare = issue_cert(pki.ca, "server", "bare", key_usage=False)
    with pytest.raises(HandshakeError, match="key usage extension"):
        check_peer_certificate(_der(bare.cert), PeerVerification("server"))


@pytest.mark.directive("remote-cert-tls")
def test_certificate_without_eku_fails_remote_cert_tls():
    pki = make_test_pki()
    no_eku = issue_cert(pki.ca, "server", "noeku", eku=())
    with pytest.raises(HandshakeError, match="extended key usage"):
        check_peer_certificate(_der(no_eku.cert), PeerVerification("server"))


@pytest.mark.directive("remote-cert-tls")
def test_both_purposes_satisfy_either_role():
    pki = make_test_pki()
    both = issue_cert(pki.ca, "server", "both",
                      eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    for role in ("server", "client"):
        check_peer_certificate(_der(both.cert), PeerVerification(role))


@pytest.mark.directive("verify-x509-name")
@pytest.mark.parametrize(("name", "kind", "ok"), [
    ("CN=server", "subject", True),
    ("CN=serv", "subject", False),
    ("server", "name", True),
    ("Server", "name", False),
    ("ser", "name-prefix", True),
    ("xer", "name-prefix", False),
])
def test_verify_x509_name(name, kind, ok):
    pki = make_test_pki()
    policy = PeerVerification(verify_x509_name=(name, kind))
    if ok:
        check_peer_certificate(_der(pki.server.cert), policy)
    else:
        with pytest.raises(HandshakeError, match="verify-x509-name"):
            check_peer_certificate(_der(pki.server.cert), policy)


def test_subject_is_printed_like_openssl_in_certificate_order():
    name = x509.Name.from_rfc4514_string("CN=vpn,O=Example,ST=CA,C=US")
    assert openssl_subject(name) == "C=US, ST=CA, O=Example, CN=vpn"


def test_garbage_certificate_is_a_handshake_error():
    with pytest.raises(HandshakeError):
        check_peer_certificate(b"\x30\x03garbage", PeerVerification())
