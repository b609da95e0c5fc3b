"""Config → certificate checks and TLS context: crl-verify (file re-read on change, dir),
ns-cert-type / remote-cert-* ordering, x509-username-field parsing, tls-cipher, tls-groups,
tls-cert-profile, tls-ciphersuites and ecdh-curve (more in tests/test_tlsnative.py)."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import pytest
from cryptography.x509 import oid as x509_oid

from tests.certkit import intermediate, leaf
from tests.interop.certoracle import write_credential
from tests.interop.openvpn import write_pki
from tests.protocol.sessionkit import Pair, events_of, make_test_pki, server_config
from trivpn.config import ConfigError, load_config
from trivpn.pki.certs import certificate_pem
from trivpn.pki.crl import build_crl, crl_pem
from trivpn.protocol import events as ev
from trivpn.protocol.tls import KU_REQUIRED
from trivpn.runtime.setup import session_config

CLIENT = ["client", "dev tun", "proto udp", "remote 198.18.0.1 1194", "ca ca.crt",
          "cert client.crt", "key client.key"]
SERVER = ["port 1194", "proto udp", "dev tun", "ca ca.crt", "cert server.crt",
          "key server.key", "dh none", "server 198.18.8.0 255.255.255.0"]


def _load(tmp_path: Path, lines: list[str]):
    conf = tmp_path / "test.conf"
    conf.write_text("\n".join(lines) + "\n")
    return load_config(conf)


@pytest.mark.directive("crl-verify")
def test_crl_verify_file_is_re_read_when_it_changes(tmp_path):
    pki = write_pki(tmp_path)
    crl_path = tmp_path / "crl.pem"
    crl_path.write_bytes(crl_pem(build_crl(pki.ca, [])))
    cfg = session_config(_load(tmp_path, [*SERVER, "crl-verify crl.pem"]), unix_time_offset=0)
    crl = cfg.verification.crl
    assert crl is not None and crl.lists is not None
    first = crl.lists()
    assert first.crls[0].get_revoked_certificate_by_serial_number(
        pki.client.cert.serial_number) is None
    assert crl.lists() is first  # unchanged file: not parsed again
    crl_path.write_bytes(crl_pem(build_crl(pki.ca, [pki.client.cert.serial_number, 5])))
    later = time.time() + 5
    os.utime(crl_path, (later, later))
    assert crl.lists().crls[0].get_revoked_certificate_by_serial_number(
        pki.client.cert.serial_number) is not None
    crl_path.unlink()  # a vanished file keeps the last CRLs
    assert len(crl.lists().crls[0]) == 2


@pytest.mark.directive("crl-verify")
def test_crl_verify_missing_file_or_directory_is_a_config_error(tmp_path):
    write_pki(tmp_path)
    with pytest.raises(ConfigError, match="crl"):
        session_config(_load(tmp_path, [*SERVER, "crl-verify nothere.pem"]),
                       unix_time_offset=0)
    with pytest.raises(ConfigError, match="crl-verify directory"):
        session_config(_load(tmp_path, [*SERVER, "crl-verify nothere dir"]),
                       unix_time_offset=0)


@pytest.mark.directive("crl-verify")
def test_crl_verify_dir_looks_for_a_file_named_after_the_decimal_serial(tmp_path):
    write_pki(tmp_path)
    (tmp_path / "revoked").mkdir()
    (tmp_path / "revoked" / "12345").write_text("")
    cfg = session_config(_load(tmp_path, [*SERVER, "crl-verify revoked dir"]),
                         unix_time_offset=0)
    crl = cfg.verification.crl
    assert crl is not None and crl.revoked_serial is not None and crl.lists is None
    assert crl.revoked_serial(12345) and not crl.revoked_serial(54321)


@pytest.mark.directive("remote-cert-tls", "remote-cert-eku", "remote-cert-ku")
@pytest.mark.parametrize(("lines", "eku", "ku"), [
    (["remote-cert-tls server"], "TLS Web Server Authentication", (KU_REQUIRED,)),
    (["remote-cert-tls server", "remote-cert-eku 1.2.3.4"], "1.2.3.4", (KU_REQUIRED,)),
    (["remote-cert-eku 1.2.3.4", "remote-cert-tls server"],
     "TLS Web Server Authentication", (KU_REQUIRED,)),
    (["remote-cert-tls server", "remote-cert-ku a0 88"], "TLS Web Server Authentication",
     (0xA0, 0x88)),
    (["remote-cert-ku a0 88", "remote-cert-tls server"], "TLS Web Server Authentication",
     (KU_REQUIRED, 0x88)),
    (["remote-cert-ku a0 88", "remote-cert-ku 80"], None, (0x80, 0x88)),
    (["remote-cert-ku"], None, (KU_REQUIRED,)),
])
def test_later_directives_overwrite_key_usage_checks_as_in_openvpn(tmp_path, lines, eku, ku):
    write_pki(tmp_path)
    v = session_config(_load(tmp_path, [*CLIENT, *lines]), unix_time_offset=0).verification
    assert (v.effective_eku, v.effective_ku) == (eku, ku)


@pytest.mark.directive("x509-username-field")
def test_x509_username_field_parsing(tmp_path):
    write_pki(tmp_path)
    o = _load(tmp_path, [*SERVER, "x509-username-field ou emailAddress ext:subjectAltName"])
    assert o.x509_username_field == ("OU", "emailAddress", "ext:subjectAltName")
    assert any("read as 'OU'" in w.message for w in o.warnings)
    with pytest.raises(ConfigError, match="only ext:subjectAltName"):
        _load(tmp_path, [*SERVER, "x509-username-field ext:keyUsage"])
    with pytest.raises(ConfigError, match=r"unknown X\.509 attribute"):
        _load(tmp_path, [*SERVER, "x509-username-field emailaddress"])


def _ctx(tmp_path: Path, *extra: str) -> ssl.SSLContext:
    write_pki(tmp_path)
    return session_config(_load(tmp_path, [*SERVER, *extra]),
                          unix_time_offset=0).tls_context


@pytest.mark.directive("tls-cipher")
def test_tls_cipher_restricts_the_tls12_suites(tmp_path):
    ctx = _ctx(tmp_path, "tls-cipher ECDHE-ECDSA-AES128-GCM-SHA256")
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


@pytest.mark.directive("tls-cipher")
def test_tls_cipher_iana_names_are_translated_and_unknown_lists_are_errors_at_the_line(tmp_path):
    ctx = _ctx(tmp_path, "tls-cipher TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256")
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"] == \
        ["ECDHE-RSA-AES128-GCM-SHA256"]
    with pytest.raises(ConfigError,
                       match=r"test.conf:9: tls-cipher: Failed to set restricted TLS cipher list"):
        _ctx(tmp_path, "tls-cipher NO-SUCH-CIPHER")


@pytest.mark.directive("tls-cert-profile")
@pytest.mark.parametrize(("profile", "level"), [(None, 1), ("insecure", 0), ("legacy", 1),
                                                ("preferred", 2), ("suiteb", 3)])
def test_tls_cert_profile_sets_the_openssl_security_level(tmp_path, profile, level):
    ctx = _ctx(tmp_path, *([f"tls-cert-profile {profile}"] if profile else []))
    assert ctx.security_level == level


@pytest.mark.directive("tls-ciphersuites")
def test_tls_ciphersuites_restricts_the_tls13_suites(tmp_path):
    ctx = _ctx(tmp_path, "tls-ciphersuites TLS_AES_256_GCM_SHA384:TLS-CHACHA20-POLY1305-SHA256")
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"] == \
        ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    with pytest.raises(ConfigError, match=r"test.conf:9.*TLS 1.3 cipher list: NOSUCH"):
        _ctx(tmp_path, "tls-ciphersuites NOSUCH")


@pytest.mark.directive("tls-groups")
def test_tls_groups_takes_a_list_and_refuses_unknown_groups_at_the_line(tmp_path):
    _ctx(tmp_path, "tls-groups secp384r1")
    _ctx(tmp_path, "tls-groups X25519:secp256r1:P-384")
    with pytest.raises(ConfigError, match=r"test.conf:9.*group 'nosuchcurve' cannot be set"):
        _ctx(tmp_path, "tls-groups X25519:nosuchcurve")


@pytest.mark.directive("ecdh-curve")
def test_ecdh_curve_is_accepted_with_a_warning_that_it_has_no_effect(tmp_path):
    """OpenVPN 2.6 on OpenSSL 3 ignores it too (its warning is checked against the binary in
    tests/interop/test_cert_checks_vs_openvpn.py)."""
    write_pki(tmp_path)
    o = _load(tmp_path, [*SERVER, "ecdh-curve secp521r1"])
    assert any("'ecdh-curve' has no effect" in w.message for w in o.warnings)
    groups_default = session_config(o, unix_time_offset=0).tls_context
    assert groups_default.security_level == 1


@pytest.mark.directive("ns-cert-type", "remote-cert-eku", "remote-cert-ku", "remote-cert-tls",
                       "verify-x509-name")
@pytest.mark.parametrize("check", [None, "ns-cert-type server", "remote-cert-eku 1.2.3",
                                   "remote-cert-ku", "remote-cert-tls server",
                                   "verify-x509-name server name"])
def test_no_verification_warning_only_without_an_enforced_server_check(tmp_path, check):
    write_pki(tmp_path)
    o = _load(tmp_path, [*CLIENT, *([check] if check else [])])
    warned = any("no server certificate verification" in w.message for w in o.warnings)
    assert warned is (check is None)
    assert session_config(o, unix_time_offset=0).verification.checks_identity is \
        (check is not None)


@pytest.mark.directive("extra-certs", "cert", "key", "ca")
@pytest.mark.parametrize("with_extra", [True, False])
def test_extra_certs_sends_the_intermediate_a_root_only_server_needs(tmp_path, with_extra):
    root = make_test_pki().ca  # the in-memory server trusts only this root
    sub = intermediate(root, "sub CA")
    (tmp_path / "ca.crt").write_bytes(certificate_pem(root.cert))
    (tmp_path / "sub.crt").write_bytes(certificate_pem(sub.cert))
    write_credential(tmp_path, "client", leaf(sub, "leafy", eku=(
        x509_oid.ExtendedKeyUsageOID.CLIENT_AUTH,)))
    lines = [*CLIENT, *(["extra-certs sub.crt"] if with_extra else [])]
    client = session_config(_load(tmp_path, lines), unix_time_offset=0)
    pair = Pair.create(client, server_config())
    pair.run_until(lambda: pair.established() or pair.client.failed
                   or (pair.server is not None and pair.server.failed), seconds=30)
    assert pair.established() is with_extra
    if not with_extra:
        assert events_of(pair.server_events, ev.HandshakeFailed)
