"""OpenVPN's checks on the peer certificate, bytes in: crl-verify, ns-cert-type, remote-cert-ku,
remote-cert-eku, and the name taken from the certificate (x509-username-field, remapping).

What OpenVPN itself decides for the same certificates is checked against the real binary in
tests/interop/test_cert_checks_vs_openvpn.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certkit import NS_CLIENT, NS_SERVER, leaf
from tests.protocol.sessionkit import Pair, client_config, events_of, make_test_pki, server_config
from trivpn.pki.certs import create_ca
from trivpn.pki.crl import build_crl, crl_pem
from trivpn.protocol import events as ev
from trivpn.protocol.errors import CertificateRejected, HandshakeError
from trivpn.protocol.tls import (
    KU_REQUIRED,
    CrlCheck,
    PeerVerification,
    RevocationLists,
    check_peer_certificate,
    parse_crls,
    remap_name,
    revoked_serials,
)

SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _check(cert: x509.Certificate, **policy: object) -> str:
    """The peer's common name, or raise."""
    pv = PeerVerification(**policy)  # type: ignore[arg-type]
    return check_peer_certificate(_der(cert), pv, unix_now=time.time()).common_name


def _ok(cert: x509.Certificate, **policy: object) -> bool:
    try:
        _check(cert, **policy)
    except HandshakeError:
        return False
    return True


# --- the name taken from the certificate -------------------------------------------------

@pytest.mark.directive("x509-username-field")
def test_common_name_is_the_last_cn_of_the_subject():
    ca = make_test_pki().ca
    cert = leaf(ca, [(NameOID.COMMON_NAME, "first"), (NameOID.ORGANIZATION_NAME, "org"),
                     (NameOID.COMMON_NAME, "second")]).cert
    assert _check(cert) == "second"


def test_control_characters_in_the_name_become_underscores_other_characters_stay():
    assert remap_name("a\nb\rc\td\x00e\x7ff, g;h=é") == "a_b_c_d_e_f, g;h=é"
    cert = leaf(make_test_pki().ca, "evil\nCLIENT_LIST,x\r").cert
    peer = check_peer_certificate(_der(cert), PeerVerification(), unix_now=time.time())
    assert peer.common_name == "evil_CLIENT_LIST,x_"
    assert "\n" not in peer.subject and peer.subject == "CN=evil_CLIENT_LIST,x_"


@pytest.mark.directive("x509-username-field")
@pytest.mark.parametrize(("fields", "expected"), [
    (("emailAddress",), "second@example.org"),
    (("OU",), "ops"),
    (("CN", "OU"), "alice_ops"),
    (("ext:subjectAltName",), "san2@example.org"),
    (("ext:issuerAltName",), "ian@example.org"),
    (("serialNumber",), "0xC0FFEE"),
    (("2.5.4.11",), "ops"),
])
def test_x509_username_field_takes_the_name_from_the_named_field(fields, expected):
    cert = leaf(make_test_pki().ca, [
        (NameOID.EMAIL_ADDRESS, "first@example.org"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
        (NameOID.COMMON_NAME, "alice"), (NameOID.EMAIL_ADDRESS, "second@example.org")],
        san_emails=("san1@example.org", "san2@example.org"), issuer_emails=("ian@example.org",),
        serial=0xC0FFEE).cert
    assert _check(cert, username_fields=fields) == expected


def test_serial_number_field_is_upper_hex_of_the_integer_bytes():
    cert = leaf(make_test_pki().ca, "x", serial=0x80AB).cert
    assert _check(cert, username_fields=("serialNumber",)) == "0x80AB"


@pytest.mark.directive("x509-username-field")
def test_missing_username_field_refuses_the_peer():
    cert = leaf(make_test_pki().ca, "alice").cert
    with pytest.raises(HandshakeError, match="could not extract emailAddress"):
        _check(cert, username_fields=("emailAddress",))
    with pytest.raises(HandshakeError, match="could not extract ext:subjectAltName"):
        _check(cert, username_fields=("ext:subjectAltName",))


def test_a_name_longer_than_64_bytes_refuses_the_peer():
    ca = make_test_pki().ca
    assert _check(leaf(ca, "é" * 32).cert) == "é" * 32  # 64 bytes
    with pytest.raises(HandshakeError, match="limited to 64"):
        _check(leaf(ca, [(NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 65)]).cert,
               username_fields=("OU",))


@pytest.mark.directive("verify-x509-name", "x509-username-field")
def test_verify_x509_name_compares_the_name_from_x509_username_field():
    cert = leaf(make_test_pki().ca, [(NameOID.COMMON_NAME, "gw"),
                                     (NameOID.EMAIL_ADDRESS, "gw@example.org")]).cert
    assert _ok(cert, username_fields=("emailAddress",),
               verify_x509_name=("gw@example.org", "name"))
    assert not _ok(cert, username_fields=("emailAddress",), verify_x509_name=("gw", "name"))


# --- ns-cert-type -------------------------------------------------------------------------

@pytest.mark.directive("ns-cert-type")
@pytest.mark.parametrize(("want", "ku", "eku", "ns", "accepted"), [
    ("server", 0xA0, (SERVER_AUTH,), None, True),
    ("server", 0x80, (CLIENT_AUTH,), None, False),       # EKU without serverAuth
    ("server", 0x80, None, None, True),                 # no EKU, no nsCertType: purpose ok
    ("server", 0x04, None, None, False),                # KU without a TLS usage
    ("server", 0x80, None, NS_CLIENT, False),            # nsCertType says client
    ("server", 0x80, (CLIENT_AUTH,), NS_SERVER, True),   # nsCertType server bit rescues
    ("server", None, (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,), None, False),
    ("client", 0x80, (CLIENT_AUTH,), None, True),
    ("client", 0x20, (CLIENT_AUTH,), None, False),       # keyEncipherment alone: no
    ("client", 0x08, None, None, True),                 # keyAgreement is enough
    ("client", 0x80, (SERVER_AUTH,), NS_CLIENT, True),
    ("client", 0x80, None, NS_SERVER, False),
])
def test_ns_cert_type_is_openssl_purpose_check_or_netscape_bit(want, ku, eku, ns, accepted):
    cert = leaf(make_test_pki().ca, "peer", ku=ku, eku=eku, ns_bits=ns).cert
    assert _ok(cert, ns_cert_type=want) is accepted


# --- remote-cert-ku / remote-cert-eku / remote-cert-tls -----------------------------------

@pytest.mark.directive("remote-cert-ku")
@pytest.mark.parametrize(("ku", "expected", "accepted"), [
    (0xA0, (0xA0,), True),
    (0xA0, (0x80,), True),          # a subset of the certificate's usage is enough
    (0x80, (0xA0,), False),
    (0x80, (0x88, 0x80), True),     # any of the listed masks
    (0x88, (0x20, 0x10), False),
    (0x02, (KU_REQUIRED,), True),   # no argument: presence only
    (None, (KU_REQUIRED,), False),
    (None, (0x80,), False),
    (0x80, (0, 0x80), True),        # a zero mask never matches, the next one does
])
def test_remote_cert_ku_accepts_a_cert_holding_all_bits_of_one_mask(ku, expected, accepted):
    cert = leaf(make_test_pki().ca, "peer", ku=ku).cert
    assert _ok(cert, remote_cert_ku=expected) is accepted


@pytest.mark.directive("remote-cert-eku")
@pytest.mark.parametrize(("expected", "accepted"), [
    ("TLS Web Server Authentication", True),   # OpenSSL's long name
    ("1.3.6.1.5.5.7.3.1", True),               # the dotted OID
    ("serverAuth", False),                     # the short name is not compared
    ("Code Signing", False),
    ("1.2.3.4.5", True),                       # an OID OpenSSL has no name for
])
def test_remote_cert_eku_compares_long_name_or_dotted_oid(expected, accepted):
    cert = leaf(make_test_pki().ca, "peer",
                eku=(SERVER_AUTH, x509.ObjectIdentifier("1.2.3.4.5"))).cert
    assert _ok(cert, remote_cert_eku=expected) is accepted


@pytest.mark.directive("remote-cert-eku")
def test_remote_cert_eku_refuses_a_cert_without_the_extension():
    cert = leaf(make_test_pki().ca, "peer", eku=None).cert
    with pytest.raises(CertificateRejected, match="lacks extended key usage") as info:
        _check(cert, remote_cert_eku="TLS Web Server Authentication")
    assert info.value.check == "remote_cert_eku" and info.value.common_name == "peer"


@pytest.mark.directive("remote-cert-tls", "remote-cert-eku")
def test_explicit_remote_cert_eku_replaces_the_one_remote_cert_tls_implies():
    server = make_test_pki().server.cert
    assert _ok(server, remote_cert_tls="server")
    assert not _ok(server, remote_cert_tls="server", remote_cert_eku="Code Signing")


# --- crl-verify ---------------------------------------------------------------------------

def _crl_check(*pems: bytes) -> CrlCheck:
    pki = make_test_pki()
    lists = parse_crls(b"".join(pems))
    return CrlCheck((pki.ca.cert,), lists=lambda: lists)


@pytest.mark.directive("crl-verify")
def test_crl_verify_refuses_a_revoked_certificate_and_names_serial_and_cn():
    pki = make_test_pki()
    crl = crl_pem(build_crl(pki.ca, [pki.client.cert.serial_number]))
    with pytest.raises(CertificateRejected, match="certificate revoked") as info:
        _check(pki.client.cert, crl=_crl_check(crl))
    assert info.value.serial == pki.client.cert.serial_number
    assert info.value.common_name == "client1" and info.value.reason == "cert_revoked"
    assert _ok(pki.server.cert, crl=_crl_check(crl))


@pytest.mark.directive("crl-verify")
def test_crl_verify_refuses_everyone_while_the_crl_is_expired_or_not_yet_valid():
    pki = make_test_pki()
    now = datetime.now(UTC)
    expired = crl_pem(build_crl(pki.ca, [], now - timedelta(days=1),
                                last_update=now - timedelta(days=3)))
    future = crl_pem(build_crl(pki.ca, [], now + timedelta(days=3),
                               last_update=now + timedelta(days=1)))
    with pytest.raises(CertificateRejected, match="CRL has expired"):
        _check(pki.server.cert, crl=_crl_check(expired))
    with pytest.raises(CertificateRejected, match="CRL is not yet valid"):
        _check(pki.server.cert, crl=_crl_check(future))


@pytest.mark.directive("crl-verify")
def test_crl_verify_ignores_crls_of_other_cas_but_refuses_a_forged_one():
    pki = make_test_pki()
    serial = pki.client.cert.serial_number
    foreign = crl_pem(build_crl(pki.other_ca, [serial]))
    assert _ok(pki.client.cert, crl=_crl_check(foreign))
    # Same issuer name as our CA, signed by another key.
    impostor = create_ca("trivpn test CA")
    forged = crl_pem(build_crl(impostor, []))
    with pytest.raises(CertificateRejected, match="CRL signature failure"):
        _check(pki.client.cert, crl=_crl_check(forged))


@pytest.mark.directive("crl-verify")
def test_crl_verify_with_no_readable_crl_refuses_every_peer():
    pki = make_test_pki()
    with pytest.raises(CertificateRejected, match="no CRL could be read"):
        _check(pki.server.cert, crl=_crl_check(b"not a CRL\n"))


@pytest.mark.directive("crl-verify")
def test_crl_verify_checks_the_ca_itself_against_its_own_crl():
    pki = make_test_pki()
    crl = crl_pem(build_crl(pki.ca, [pki.ca.cert.serial_number]))
    with pytest.raises(CertificateRejected, match="depth=1"):
        _check(pki.server.cert, crl=_crl_check(crl))


def test_parse_crls_keeps_the_crls_before_a_malformed_one_and_skips_other_pem():
    pki = make_test_pki()
    good = crl_pem(build_crl(pki.ca, [7]))
    bad = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    other = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert len(parse_crls(other + good + bad + good).crls) == 1
    assert parse_crls(b"").crls == ()


@pytest.mark.directive("crl-verify")
def test_crl_verify_dir_refuses_a_serial_that_has_a_file():
    pki = make_test_pki()
    revoked = {pki.client.cert.serial_number}
    check = CrlCheck((pki.ca.cert,), revoked_serial=revoked.__contains__)
    with pytest.raises(CertificateRejected, match=f"serial={pki.client.cert.serial_number}"):
        _check(pki.client.cert, crl=check)
    assert _ok(pki.server.cert, crl=check)


@pytest.mark.directive("crl-verify")
def test_crl_is_consulted_at_every_handshake_so_a_renegotiation_is_refused_after_revocation():
    pki = make_test_pki()
    issued = datetime.now(UTC) - timedelta(minutes=1)
    current = [RevocationLists(parse_crls(crl_pem(build_crl(pki.ca, [], now=issued))).crls)]
    crl = CrlCheck((pki.ca.cert,), lists=lambda: current[0])
    verification = PeerVerification(remote_cert_tls="client", crl=crl)
    server = replace(server_config(unix_time_offset=time.time() - 1000),
                     verification=verification)
    pair = Pair.create(client_config(), server)
    assert pair.run_until(pair.established, seconds=30)
    revoked = build_crl(pki.ca, [pki.client.cert.serial_number], now=issued)
    current[0] = RevocationLists(parse_crls(crl_pem(revoked)).crls)
    pair.client.renegotiate(pair.now)
    pair.run_for(10)
    rejected = events_of(pair.server_events, ev.PeerCertificateRejected)
    assert [(r.key_id, r.check, r.serial, r.common_name) for r in rejected] == \
        [(1, "crl_verify", pki.client.cert.serial_number, "client1")]
    assert pair.server is not None and pair.server.primary_key_id == 0


@pytest.mark.directive("crl-verify")
def test_revoked_serials_come_only_from_crls_a_ca_signed():
    pki = make_test_pki()
    ours = crl_pem(build_crl(pki.ca, [pki.client.cert.serial_number, 7]))
    foreign = crl_pem(build_crl(pki.other_ca, [99]))
    lists = parse_crls(ours + foreign)
    assert revoked_serials(lists, (pki.ca.cert,)) == {pki.client.cert.serial_number, 7}
    assert revoked_serials(lists, (pki.ca.cert, pki.other_ca.cert)) == \
        {pki.client.cert.serial_number, 7, 99}
    assert revoked_serials(parse_crls(b""), (pki.ca.cert,)) == frozenset()
