"""Certificate profile: what create_ca / issue_cert put into certificates (checked with
cryptography)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trivpn.pki.certs import BACKDATE, Credential, create_ca, issue_cert
from trivpn.pki.errors import PkiError

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(scope="module")
def ca() -> Credential:
    return create_ca("Test CA", now=NOW)


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_ca_is_self_signed_with_the_given_cn(ca: Credential) -> None:
    cn = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "Test CA"
    assert ca.cert.issuer == ca.cert.subject
    ca.cert.verify_directly_issued_by(ca.cert)


def test_ca_basic_constraints_are_critical_ca_true(ca: Credential) -> None:
    bc = ext(ca.cert, x509.BasicConstraints)
    assert bc.critical
    assert isinstance(bc.value, x509.BasicConstraints)
    assert bc.value.ca is True


def test_ca_key_usage_is_critical_cert_and_crl_sign_only(ca: Credential) -> None:
    ku = ext(ca.cert, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature and not ku.value.key_encipherment


def test_ca_has_matching_ski_and_aki(ca: Credential) -> None:
    ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    aki = ext(ca.cert, x509.AuthorityKeyIdentifier).value
    assert isinstance(ski, x509.SubjectKeyIdentifier)
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ski.digest


def test_ca_key_defaults_to_ecdsa_p256(ca: Credential) -> None:
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"


@pytest.mark.parametrize(("key_type", "bits"), [("rsa2048", 2048), ("rsa3072", 3072)])
def test_ca_can_use_rsa(key_type, bits) -> None:
    ca = create_ca(key_type=key_type, now=NOW)
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    assert ca.key.key_size == bits


def test_ca_validity_defaults_to_days_from_now_backdated(ca: Credential) -> None:
    assert ca.cert.not_valid_before_utc == NOW - BACKDATE
    assert ca.cert.not_valid_after_utc == NOW + timedelta(days=3650)


@pytest.mark.parametrize(
    ("kind", "eku"),
    [("server", [SERVER_AUTH]), ("client", [CLIENT_AUTH])],
)
def test_leaf_has_eku_for_its_kind(ca: Credential, kind, eku) -> None:
    leaf = issue_cert(ca, kind, "peer", now=NOW)
    value = ext(leaf.cert, x509.ExtendedKeyUsage).value
    assert isinstance(value, x509.ExtendedKeyUsage)
    assert list(value) == eku


@pytest.mark.parametrize(
    ("kind", "key_type", "usages"),
    [
        ("server", "ec", {"digital_signature", "key_agreement"}),
        ("server", "rsa2048", {"digital_signature", "key_encipherment"}),
        ("client", "ec", {"digital_signature"}),
        ("client", "rsa2048", {"digital_signature"}),
    ],
)
def test_leaf_key_usage_is_critical_and_fits_the_key(ca: Credential, kind, key_type, usages):
    leaf = issue_cert(ca, kind, "peer", key_type=key_type, now=NOW)
    ku = ext(leaf.cert, x509.KeyUsage)
    assert ku.critical
    value = ku.value
    assert isinstance(value, x509.KeyUsage)
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign")
    assert {flag for flag in flags if getattr(value, flag)} == usages


@pytest.mark.parametrize("kind", ["server", "client"])
def test_leaf_is_not_a_ca_and_is_signed_by_the_ca(ca: Credential, kind) -> None:
    leaf = issue_cert(ca, kind, "peer", now=NOW)
    bc = ext(leaf.cert, x509.BasicConstraints).value
    assert isinstance(bc, x509.BasicConstraints)
    assert bc.ca is False
    assert leaf.cert.issuer == ca.cert.subject
    leaf.cert.verify_directly_issued_by(ca.cert)


def test_leaf_aki_is_the_ca_ski(ca: Credential) -> None:
    leaf = issue_cert(ca, "client", "alice", now=NOW)
    aki = ext(leaf.cert, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert isinstance(ca_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.digest


def test_leaf_subject_cn_is_the_name(ca: Credential) -> None:
    leaf = issue_cert(ca, "client", "alice@example", now=NOW)
    assert leaf.common_name == "alice@example"


@pytest.mark.parametrize(
    ("name", "dns", "ips"),
    [
        ("vpn.example.org", ["vpn.example.org"], []),
        ("198.18.0.1", ["198.18.0.1"], [ipaddress.ip_address("198.18.0.1")]),
        ("2001:db8::1", ["2001:db8::1"], [ipaddress.ip_address("2001:db8::1")]),
    ],
)
def test_server_san_has_dns_name_and_ip_when_name_is_an_ip(ca: Credential, name, dns, ips):
    leaf = issue_cert(ca, "server", name, now=NOW)
    san = ext(leaf.cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == dns
    assert san.get_values_for_type(x509.IPAddress) == ips


def test_client_has_no_san(ca: Credential) -> None:
    leaf = issue_cert(ca, "client", "alice", now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        ext(leaf.cert, x509.SubjectAlternativeName)


def test_serials_are_positive_random_and_large(ca: Credential) -> None:
    serials = {issue_cert(ca, "client", "alice", now=NOW).cert.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(0 < s < 2**160 and s.bit_length() > 64 for s in serials)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - timedelta(days=30), NOW - timedelta(days=1)),  # expired
        (NOW + timedelta(days=1), NOW + timedelta(days=30)),  # not yet valid
    ],
)
def test_leaf_validity_can_be_overridden(ca: Credential, not_before, not_after) -> None:
    leaf = issue_cert(ca, "server", "s", now=NOW, not_before=not_before, not_after=not_after)
    assert leaf.cert.not_valid_before_utc == not_before
    assert leaf.cert.not_valid_after_utc == not_after


def test_leaf_validity_defaults_to_days(ca: Credential) -> None:
    leaf = issue_cert(ca, "server", "s", now=NOW, days=10)
    assert leaf.cert.not_valid_after_utc == NOW + timedelta(days=10)


def test_eku_can_be_replaced(ca: Credential) -> None:
    leaf = issue_cert(ca, "server", "s", now=NOW, eku=[CLIENT_AUTH, SERVER_AUTH])
    value = ext(leaf.cert, x509.ExtendedKeyUsage).value
    assert isinstance(value, x509.ExtendedKeyUsage)
    assert list(value) == [CLIENT_AUTH, SERVER_AUTH]


def test_eku_can_be_omitted(ca: Credential) -> None:
    leaf = issue_cert(ca, "server", "s", now=NOW, eku=())
    with pytest.raises(x509.ExtensionNotFound):
        ext(leaf.cert, x509.ExtendedKeyUsage)


def test_key_usage_can_be_omitted(ca: Credential) -> None:
    leaf = issue_cert(ca, "client", "c", now=NOW, key_usage=False)
    with pytest.raises(x509.ExtensionNotFound):
        ext(leaf.cert, x509.KeyUsage)


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_common_name_length_is_checked(ca: Credential, name) -> None:
    with pytest.raises(PkiError, match="common name"):
        issue_cert(ca, "client", name, now=NOW)


def test_validity_end_must_follow_start(ca: Credential) -> None:
    with pytest.raises(PkiError, match="not after"):
        issue_cert(ca, "client", "c", now=NOW, not_before=NOW, not_after=NOW)


def test_days_must_be_positive() -> None:
    with pytest.raises(PkiError, match="positive"):
        create_ca(days=0, now=NOW)


def test_unknown_kind_is_refused(ca: Credential) -> None:
    with pytest.raises(PkiError, match="kind"):
        issue_cert(ca, "router", "r", now=NOW)  # type: ignore[arg-type]


def test_credential_refuses_a_key_of_another_certificate(ca: Credential) -> None:
    other = create_ca(now=NOW)
    with pytest.raises(PkiError, match="does not match"):
        Credential(ca.cert, other.key)


def test_credential_repr_shows_no_key(ca: Credential) -> None:
    assert "key=" not in repr(ca)
    assert "cert=" in repr(ca)
