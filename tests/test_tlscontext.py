"""Building the control channel's SSLContext the way OpenVPN 2.6 configures OpenSSL."""

from __future__ import annotations

import ssl

import pytest

from tests.protocol.sessionkit import make_test_pki
from trivpn.pki.certs import certificate_pem
from trivpn.pki.keys import private_key_pem
from trivpn.tlscontext import TlsContextError, build_context


def _pem(which: str) -> tuple[str, str, str]:
    pki = make_test_pki()
    cred = getattr(pki, which)
    return (certificate_pem(pki.ca.cert).decode(), certificate_pem(cred.cert).decode(),
            private_key_pem(cred.key).decode())


def test_context_requires_peer_certificates_and_tls12_without_hostname_checks():
    ca, cert, key = _pem("client")
    ctx = build_context(server_side=False, ca_pem=ca, cert_pem=cert, key_pem=key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_TICKET


def test_mismatched_key_and_certificate_is_a_clear_error():
    ca, cert, _ = _pem("client")
    _, _, other_key = _pem("server")
    with pytest.raises(TlsContextError, match="does the key match"):
        build_context(server_side=False, ca_pem=ca, cert_pem=cert, key_pem=other_key)


def test_unreadable_ca_is_a_clear_error():
    _, cert, key = _pem("client")
    with pytest.raises(TlsContextError, match="CA certificate"):
        build_context(server_side=False, ca_pem="not a cert", cert_pem=cert, key_pem=key)


def test_unknown_tls_version_is_rejected():
    ca, cert, key = _pem("client")
    with pytest.raises(TlsContextError, match="unknown TLS version"):
        build_context(server_side=False, ca_pem=ca, cert_pem=cert, key_pem=key,
                      tls_version_min="2.0")
