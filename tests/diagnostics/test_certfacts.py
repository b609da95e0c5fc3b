"""Certificate facts (certfacts.py) and the diagnosis of a refused server certificate
(certdiag.py) on constructed certificates, configs and clock readings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.diagnostics.certkit import CLIENT_AUTH, NOW, make_ca, make_crl, make_leaf, resign
from trivpn.config import load_config
from trivpn.config.options import Options
from trivpn.diagnostics.certdiag import diagnose_server_cert
from trivpn.diagnostics.certfacts import (
    ClockReading,
    ServerCertInputs,
    cause_from_message,
    crl_facts,
    openvpn_level,
    policy_findings,
    server_cert_findings,
    signed_by,
    x509_name_line,
)

CA = make_ca("facts CA")


def _options(tmp_path: Path, *extra: str) -> Options:
    (tmp_path / "ca.crt").write_bytes(CA.cert.public_bytes(Encoding.PEM))
    make_leaf(CA, "c", eku=(CLIENT_AUTH,)).write(tmp_path, "c")
    conf = tmp_path / "client.conf"
    conf.write_text("\n".join(["client", "dev tun", "remote 198.18.0.1 1194", "ca ca.crt",
                               "cert c.crt", "key c.key", "remote-cert-tls server",
                               *extra]) + "\n")
    return load_config(conf, read_files=False)


@pytest.mark.parametrize(("extra", "level"), [
    ((), 1), (("tls-cert-profile preferred",), 2), (("tls-cert-profile suiteb",), 3),
    (("tls-cert-profile insecure",), 0),
    (("tls-cert-profile preferred", "tls-cipher DEFAULT:@SECLEVEL=1"), 1),
])
def test_openvpn_level_follows_the_profile_and_an_seclevel_in_tls_cipher_wins(
        tmp_path: Path, extra: tuple[str, ...], level: int) -> None:
    assert openvpn_level(_options(tmp_path, *extra)).level == level


def test_sha1_signature_is_md_too_weak_from_level_1_and_rsa1024_key_too_small_from_level_2(
) -> None:
    sha1 = make_leaf(CA, "a", digest="sha1").cert
    small = make_leaf(CA, "b", bits=1024).cert

    assert [f.problem for f in policy_findings([("cert", sha1)], 1)] == ["md too weak"]
    assert policy_findings([("cert", sha1)], 0) == []
    assert policy_findings([("cert", small)], 1) == []
    found = policy_findings([("cert", small)], 2)
    assert [(f.problem, f.openssl_error) for f in found] == [("key too small",
                                                             "ee key too small")]
    assert found[0].detail == "RSA 1024 key (80 bits of security)"


def test_a_self_signed_root_is_not_judged_by_its_own_signature() -> None:
    root = resign(CA.cert, CA.key, "sha1")
    assert policy_findings([("ca", root)], 1) == []


def test_signed_by_verifies_sha1_and_md5_signatures_cryptography_refuses() -> None:
    other = make_ca("facts CA")  # same name, other key
    for digest in ("sha1", "md5"):
        cert = make_leaf(CA, "x", digest=digest).cert
        assert signed_by(cert, CA.cert)
        assert not signed_by(cert, other.cert)


def test_crl_states_over_time() -> None:
    fresh = crl_facts(_crl(next_update=NOW + timedelta(days=100)), [CA.cert], NOW)
    soon = crl_facts(_crl(next_update=NOW + timedelta(days=5, hours=1)), [CA.cert], NOW)
    late = crl_facts(_crl(this_update=NOW - timedelta(days=9),
                          next_update=NOW - timedelta(days=1)), [CA.cert], NOW)
    ahead = crl_facts(_crl(this_update=NOW + timedelta(hours=2)), [CA.cert], NOW)
    foreign = crl_facts(_crl(), [make_ca("x").cert], NOW)

    assert (fresh.state, fresh.signed_by_ca) == ("valid", True)
    assert soon.state == "expires in 5 days"
    assert late.state == "expired"
    assert ahead.state == "not yet valid"
    assert foreign.signed_by_ca is False


def _crl(**kw: Any) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(make_crl(CA, **kw))


@pytest.mark.parametrize(("message", "cause"), [
    ("peer certificate verification failed: unsuitable certificate purpose", "eku"),
    ("peer certificate verification failed: certificate has expired", "expired"),
    ("peer certificate verification failed: certificate is not yet valid", "not_yet_valid"),
    ("peer certificate verification failed: unable to get local issuer certificate",
     "untrusted_ca"),
    ("peer certificate verification failed: CA signature digest algorithm too weak",
     "md_too_weak"),
    ("peer certificate verification failed: EE certificate key too weak", "key_too_small"),
    ("certificate of CN=s lacks extended key usage TLS Web Server Authentication "
     "(remote-cert-tls server)", "eku"),
    ("certificate of CN=s does not have the key usage extension", "ku"),
    ("peer CN=s does not match verify-x509-name vpn name", "name_mismatch"),
    ("crl-verify: depth=0, CN=s, serial=5: certificate revoked", "revoked"),
    ("crl-verify: depth=0, CN=s, serial=5: CRL has expired", "crl_expired"),
])
def test_cause_from_the_verification_message(message: str, cause: str) -> None:
    assert cause_from_message(message) == cause


def test_findings_list_every_problem_in_openvpn_order(tmp_path: Path) -> None:
    o = _options(tmp_path, "verify-x509-name gw1 name")
    cert = make_leaf(CA, "gw2", eku=(CLIENT_AUTH,), not_after=NOW - timedelta(days=1),
                     not_before=NOW - timedelta(days=30)).cert
    crl = _crl(next_update=NOW + timedelta(days=90))
    inputs = ServerCertInputs((CA.cert,), (crl,), level=1)

    assert server_cert_findings(cert, o, inputs, NOW).causes() == [
        "expired", "eku", "name_mismatch"]


def test_x509_name_line_quotes_subjects_and_names_with_spaces() -> None:
    cert = make_leaf(CA, "my gw").cert
    assert x509_name_line(cert, "name") == "verify-x509-name 'my gw' name"
    assert x509_name_line(cert, "subject") == "verify-x509-name 'CN=my gw' subject"
    assert x509_name_line(make_leaf(CA, "gw").cert, "name-prefix") == \
        "verify-x509-name gw name-prefix"


def test_not_yet_valid_with_our_clock_behind_the_servers_blames_our_clock(
        tmp_path: Path) -> None:
    o = _options(tmp_path)
    cert = make_leaf(CA, "s", not_before=NOW + timedelta(minutes=30)).cert
    now = int(NOW.timestamp())
    behind = ClockReading(server_unix=now + 3600, our_unix=now)

    d = diagnose_server_cert(o, "peer certificate verification failed: certificate is not "
                             "yet valid", cert, NOW, behind)

    assert d.cause == "not_yet_valid"
    assert d.evidence["clock_skew_s"] == -3600
    assert "Our clock is behind: that is the cause" in d.explanation
    assert d.fix.startswith("Fix this machine's clock")


def test_expired_by_our_clock_but_not_the_servers_asks_to_fix_our_clock(tmp_path: Path) -> None:
    o = _options(tmp_path)
    cert = make_leaf(CA, "s", not_before=NOW - timedelta(days=30),
                     not_after=NOW - timedelta(hours=1)).cert
    now = int(NOW.timestamp())
    ahead = ClockReading(server_unix=now - 86400, our_unix=now)

    d = diagnose_server_cert(o, "certificate has expired", cert, NOW, ahead)

    assert d.cause == "expired"
    assert "our clock is 24.0 h ahead of the server's" in d.explanation
    assert "fix this machine's clock" in d.fix


def test_a_certificate_that_could_not_be_fetched_still_gets_the_cause_from_the_message(
        tmp_path: Path) -> None:
    o = _options(tmp_path)
    d = diagnose_server_cert(o, "peer certificate verification failed: unsuitable certificate "
                             "purpose", None, NOW, None)
    assert d.cause == "eku"
    assert "build-server-full" in d.fix and "into 'ca'" not in d.fix
    assert "server_cert" not in d.evidence


def test_eku_diagnosis_mentions_further_problems_of_the_same_certificate(
        tmp_path: Path) -> None:
    o = _options(tmp_path)
    cert = make_leaf(CA, "s", eku=(CLIENT_AUTH,), not_after=NOW + timedelta(days=1)).cert
    far = make_leaf(make_ca("elsewhere"), "s", eku=(CLIENT_AUTH,)).cert

    near = diagnose_server_cert(o, "unsuitable certificate purpose", cert, NOW, None)
    both = diagnose_server_cert(o, "unsuitable certificate purpose", far, NOW, None)

    assert near.cause == "eku" and "further problems" not in near.explanation
    assert both.cause == "eku" and "further problems" in both.explanation
    assert "CN=elsewhere" in both.explanation


def test_a_serial_file_in_a_crl_verify_directory_revokes(tmp_path: Path) -> None:
    o = _options(tmp_path)
    cert = make_leaf(CA, "s").cert
    inputs = ServerCertInputs((CA.cert,), revoked_serials_dir=frozenset({cert.serial_number}))

    assert server_cert_findings(cert, o, inputs, NOW).causes() == ["revoked"]
    d = diagnose_server_cert(o, f"crl-verify: depth=0, CN=s, serial={cert.serial_number}: is "
                             "revoked (crl-verify dir)", cert, NOW, None)
    assert d.cause == "revoked"
    assert f"serial {cert.serial_number}" in d.explanation
