"""Certificate by certificate, trivpn accepts and refuses exactly the peers the real openvpn 2.6
accepts and refuses under ns-cert-type, remote-cert-ku, remote-cert-eku, remote-cert-tls,
verify-x509-name with x509-username-field, and crl-verify (file and dir, including expired,
not-yet-valid, foreign, forged and unreadable CRLs). See tests/interop/certoracle.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certkit import NS_CLIENT, NS_SERVER, leaf
from tests.interop.certoracle import Case, run_cases, write_credential
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config
from trivpn.pki.certs import certificate_pem, create_ca, issue_cert
from trivpn.pki.crl import build_crl, crl_pem
from trivpn.runtime.setup import session_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING


def _pki(directory: Path):
    ca = create_ca("oracle CA")
    (directory / "ca.crt").write_bytes(certificate_pem(ca.cert))
    write_credential(directory, "server", issue_cert(ca, "server", "server"))
    write_credential(directory, "client", issue_cert(ca, "client", "client"))
    return ca


def _assert_same(results: dict[str, tuple[str, str]], expected: dict[str, str]) -> None:
    """Both agree, and agree with what the case table expects (a test that cannot pass
    vacuously: a broken harness times out or refuses everything)."""
    got = {case: verdicts for case, verdicts in results.items()}
    mismatches = {c: v for c, v in got.items() if v != (expected[c], expected[c])}
    assert not mismatches, f"(openvpn, trivpn) verdicts differ from {expected}: {mismatches}"


@pytest.mark.directive("ns-cert-type", "remote-cert-ku", "remote-cert-eku", "remote-cert-tls",
                       "verify-x509-name", "x509-username-field", "ca", "cert", "key")
def test_client_side_checks_of_the_server_certificate_match_openvpn(lab: NetnsLab,
                                                                     tmp_path: Path):
    ca = _pki(tmp_path)
    peers = {
        "tls_server": leaf(ca, "srv", ku=0xA0, eku=(SERVER_AUTH,)),
        "no_eku": leaf(ca, "srv", ku=0x80, eku=None),
        "no_ku": leaf(ca, "srv", ku=None, eku=(SERVER_AUTH,)),
        "ns_server_only": leaf(ca, "srv", ku=0x80, eku=None, ns_bits=NS_SERVER),
        "ns_client_only": leaf(ca, "srv", ku=0x80, eku=None, ns_bits=NS_CLIENT),
        "eku_two": leaf(ca, "srv", ku=0x88, eku=(SERVER_AUTH, CODE_SIGNING)),
        "ku_a8": leaf(ca, "srv", ku=0xA8, eku=(SERVER_AUTH,)),
        "mail": leaf(ca, [(NameOID.COMMON_NAME, "gw"), (NameOID.EMAIL_ADDRESS, "gw@example.org")],
                     eku=(SERVER_AUTH,)),
    }
    for name, cred in peers.items():
        write_credential(tmp_path, name, cred)
    table = [
        ("nsct_tls_server", "tls_server", ("ns-cert-type server",), "accepted"),
        ("nsct_no_eku", "no_eku", ("ns-cert-type server",), "accepted"),
        ("nsct_ns_server", "ns_server_only", ("ns-cert-type server",), "accepted"),
        ("nsct_ns_client", "ns_client_only", ("ns-cert-type server",), "refused"),
        ("eku_long_name", "tls_server", ("remote-cert-eku 'TLS Web Server Authentication'",),
         "accepted"),
        ("eku_short_name", "tls_server", ("remote-cert-eku serverAuth",), "refused"),
        ("eku_oid", "tls_server", ("remote-cert-eku 1.3.6.1.5.5.7.3.1",), "accepted"),
        ("eku_code_signing", "eku_two", ("remote-cert-eku 'Code Signing'",), "accepted"),
        ("eku_missing_purpose", "tls_server", ("remote-cert-eku 'Code Signing'",), "refused"),
        ("eku_no_extension", "no_eku", ("remote-cert-eku 1.3.6.1.5.5.7.3.1",), "refused"),
        ("ku_exact", "tls_server", ("remote-cert-ku a0",), "accepted"),
        ("ku_subset", "ku_a8", ("remote-cert-ku 88",), "accepted"),
        ("ku_missing_bit", "tls_server", ("remote-cert-ku 88",), "refused"),
        ("ku_one_of", "tls_server", ("remote-cert-ku 88 80",), "accepted"),
        ("ku_required_absent", "no_ku", ("remote-cert-ku",), "refused"),
        ("tls_no_eku", "no_eku", ("remote-cert-tls server",), "refused"),
        ("tls_then_eku", "eku_two", ("remote-cert-tls server", "remote-cert-eku 1.2.3.4"),
         "refused"),
        ("x509_email", "mail", ("x509-username-field emailAddress",
                                "verify-x509-name gw@example.org name"), "accepted"),
        ("x509_cn_vs_email", "mail", ("verify-x509-name gw@example.org name",), "refused"),
    ]
    cases = [Case(cid, "client", peer, d) for cid, peer, d, _ in table]
    results = run_cases(lab.add("ora"), tmp_path, cases)
    _assert_same(results, {cid: want for cid, _, _, want in table})


@pytest.mark.directive("crl-verify", "ns-cert-type", "remote-cert-ku", "remote-cert-eku")
def test_server_side_checks_of_client_certificates_and_crls_match_openvpn(lab: NetnsLab,
                                                                          tmp_path: Path):
    ca = _pki(tmp_path)
    revoked = leaf(ca, "revoked", ku=0x80, eku=(CLIENT_AUTH,))
    good = leaf(ca, "good", ku=0x80, eku=(CLIENT_AUTH, SERVER_AUTH))
    write_credential(tmp_path, "revoked", revoked)
    write_credential(tmp_path, "good", good)
    write_credential(tmp_path, "nsclient", leaf(ca, "ns", ku=0x80, eku=None, ns_bits=NS_CLIENT))
    now = datetime.now(UTC)
    serial = revoked.cert.serial_number
    crls = {
        "revoked.pem": crl_pem(build_crl(ca, [serial])),
        "expired.pem": crl_pem(build_crl(ca, [], now - timedelta(days=1),
                                         last_update=now - timedelta(days=2))),
        "future.pem": crl_pem(build_crl(ca, [], now + timedelta(days=3),
                                        last_update=now + timedelta(days=1))),
        "foreign.pem": crl_pem(build_crl(create_ca("foreign CA"), [serial])),
        "garbage.pem": b"this is not a CRL\n",
        "ca_revoked.pem": crl_pem(build_crl(ca, [ca.cert.serial_number])),
    }
    forged_builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
                      .last_update(now).next_update(now + timedelta(days=1)))
    impostor = create_ca("oracle CA")
    crls["forged.pem"] = crl_pem(forged_builder.sign(impostor.key, hashes.SHA256()))
    for name, data in crls.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "crldir").mkdir()
    (tmp_path / "crldir" / str(serial)).write_text("")
    table = [
        ("crl_revoked", "revoked", ("crl-verify revoked.pem",), "refused"),
        ("crl_not_revoked", "good", ("crl-verify revoked.pem",), "accepted"),
        ("crl_expired", "good", ("crl-verify expired.pem",), "refused"),
        ("crl_future", "good", ("crl-verify future.pem",), "refused"),
        ("crl_foreign", "revoked", ("crl-verify foreign.pem",), "accepted"),
        ("crl_garbage", "good", ("crl-verify garbage.pem",), "refused"),
        ("crl_forged", "good", ("crl-verify forged.pem",), "refused"),
        ("crl_ca_revoked", "good", ("crl-verify ca_revoked.pem",), "refused"),
        ("crl_dir_revoked", "revoked", ("crl-verify crldir dir",), "refused"),
        ("crl_dir_good", "good", ("crl-verify crldir dir",), "accepted"),
        ("nsct_client", "nsclient", ("ns-cert-type client",), "accepted"),
        ("nsct_client_eku", "good", ("ns-cert-type client",), "accepted"),
        ("eku_client", "good", ("remote-cert-eku 'TLS Web Client Authentication'",),
         "accepted"),
        ("ku_client_20", "good", ("remote-cert-ku 20",), "refused"),
    ]
    cases = [Case(cid, "server", peer, d) for cid, peer, d, _ in table]
    results = run_cases(lab.add("ora"), tmp_path, cases, base_port=23000)
    _assert_same(results, {cid: want for cid, _, _, want in table})


def _control_channel(log: Path, timeout: float = 5.0) -> str | None:
    """The suite an openvpn log says its control channel negotiated (it may log it a moment
    after its peer finished the handshake)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"Control Channel: (TLSv1\.\d), cipher \S+ ([^\s,]+)",
                          log.read_text(errors="replace"))
        if found or time.monotonic() > deadline:
            return f"{found[1]} {found[2]}" if found else None
        time.sleep(0.05)


@pytest.mark.directive("tls-cipher", "tls-version-max", "tls-version-min", "tls-groups",
                       "tls-cert-profile", "ecdh-curve", "tls-ciphersuites")
def test_tls_settings_change_what_a_real_openvpn_peer_can_negotiate(lab: NetnsLab,
                                                                    tmp_path: Path):
    """The server (openvpn, or trivpn's core) carries the setting; a real openvpn client with
    its own settings and certificate connects. Refusals happen in the server's TLS stack."""
    ca = _pki(tmp_path)
    for name, bits in (("ec_client", None), ("rsa1024", 1024), ("rsa2048", 2048)):
        write_credential(tmp_path, name, leaf(ca, name, ku=0xA0 if bits else 0x80,
                                              eku=(CLIENT_AUTH,), rsa_bits=bits))
    aes128 = "tls-cipher ECDHE-ECDSA-AES128-GCM-SHA256"
    aes256 = "tls-cipher ECDHE-ECDSA-AES256-GCM-SHA384"
    tls12 = "tls-version-max 1.2"
    chacha13 = "tls-ciphersuites TLS_CHACHA20_POLY1305_SHA256"
    aes13 = "tls-ciphersuites TLS_AES_256_GCM_SHA384"
    iana128 = "tls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"
    table = [
        ("cipher_disjoint", "ec_client", (aes128, tls12), (aes256, tls12), "refused"),
        ("cipher_shared", "ec_client", (aes128, tls12),
         ("tls-cipher ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256", tls12),
         "accepted"),
        ("cipher_unset", "ec_client", (tls12,), (aes256, tls12), "accepted"),
        ("version_max_vs_min13", "ec_client", (tls12,), ("tls-version-min 1.3",), "refused"),
        ("version_min13_vs_max12", "ec_client", ("tls-version-min 1.3",), (tls12,), "refused"),
        ("version_unset_vs_min13", "ec_client", (), ("tls-version-min 1.3",), "accepted"),
        ("groups_disjoint", "ec_client", ("tls-groups secp384r1",), ("tls-groups secp521r1",),
         "refused"),
        ("groups_shared", "ec_client", ("tls-groups secp384r1",),
         ("tls-groups secp521r1:secp384r1",), "accepted"),
        ("groups_x25519", "ec_client", ("tls-groups X25519",), ("tls-groups X25519",),
         "accepted"),
        ("ecdh_curve_is_ignored", "ec_client", ("ecdh-curve secp521r1",),
         ("tls-groups secp384r1",), "accepted"),
        ("profile_legacy_rsa1024", "rsa1024", ("tls-cert-profile legacy",), (), "accepted"),
        ("profile_preferred_rsa1024", "rsa1024", ("tls-cert-profile preferred",), (),
         "refused"),
        ("profile_preferred_rsa2048", "rsa2048", ("tls-cert-profile preferred",), (),
         "accepted"),
        ("profile_suiteb_rsa2048", "rsa2048", ("tls-cert-profile suiteb",), (), "refused"),
        ("profile_suiteb_p256", "ec_client", ("tls-cert-profile suiteb",), (), "accepted"),
        ("profile_insecure_rsa1024", "rsa1024", ("tls-cert-profile insecure",), (),
         "accepted"),
        ("suites_disjoint", "ec_client", (chacha13,), (aes13,), "refused"),
        # The peer prefers AES-256; the server's restriction decides.
        ("suites_shared", "ec_client", (chacha13,),
         ("tls-ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",), "accepted"),
        ("group_list_disjoint", "ec_client", ("tls-groups X25519:P-256",),
         ("tls-groups secp384r1",), "refused"),
        ("group_list_shared", "ec_client", ("tls-groups X25519:P-256",),
         ("tls-groups secp384r1:P-256",), "accepted"),
        ("iana_cipher_disjoint", "ec_client", (iana128, tls12), (aes256, tls12), "refused"),
        ("iana_cipher_shared", "ec_client", (iana128, tls12),
         ("tls-cipher ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256", tls12),
         "accepted"),
    ]
    cases = [Case(cid, "server", peer, d, p) for cid, peer, d, p, _ in table]
    trivpn_handshakes: dict[str, str] = {}
    results = run_cases(lab.add("ora"), tmp_path, cases, base_port=25000,
                        handshakes=trivpn_handshakes)
    _assert_same(results, {cid: want for cid, _, _, _, want in table})
    # What was negotiated, by openvpn (its client's log) and by trivpn: the restricted suite,
    # not the peer's first choice.
    ids = [c.id for c in cases]
    for cid, version, suite in (("suites_shared", "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
                                ("iana_cipher_shared", "TLSv1.2",
                                 "ECDHE-ECDSA-AES128-GCM-SHA256")):
        assert _control_channel(tmp_path / f"verifier{ids.index(cid)}.log") == \
            f"{version} {suite}", cid
        assert trivpn_handshakes[cid] == f"{version}, cipher {suite}", cid
    # ecdh-curve: openvpn says it does nothing with OpenSSL 3 (trivpn warns the same at load).
    verifier = tmp_path / f"verifier{[c.id for c in cases].index('ecdh_curve_is_ignored')}.log"
    assert "do not support specifying an ECDH curve with --ecdh-curve" in verifier.read_text()


@pytest.mark.directive("dh", "tls-cipher")
def test_dh_parameters_enable_dhe_suites_like_openvpn(lab: NetnsLab, tmp_path: Path):
    ca = _pki(tmp_path)
    write_credential(tmp_path, "rsa_server", leaf(ca, "rsa-srv", ku=0xA0, eku=(SERVER_AUTH,),
                                                  rsa_bits=2048))
    # RFC 7919 ffdhe2048: instant, and large enough for OpenSSL's default security level,
    # at which OpenVPN loads dh files (before tls-cert-profile applies).
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                    "group:ffdhe2048", "-out", str(tmp_path / "dh.pem")],
                   check=True, capture_output=True, timeout=30)
    dhe = ("tls-cipher DHE-RSA-AES256-GCM-SHA384", "tls-version-max 1.2")
    table = [
        ("dh_file", ("dh dh.pem", *dhe), "accepted"),
        ("dh_none", dhe, "refused"),
    ]
    cases = [Case(cid, "server", "client", d) for cid, d, _ in table]
    results = run_cases(lab.add("ora"), tmp_path, cases, server_cred="rsa_server",
                        base_port=27000)
    _assert_same(results, {cid: want for cid, _, want in table})


@pytest.mark.directive("tls-ciphersuites", "tls-groups", "tls-cipher")
def test_a_trivpn_client_restricts_what_it_offers_a_real_openvpn_server_like_openvpn(
        lab: NetnsLab, tmp_path: Path):
    """The client carries the setting (openvpn, or trivpn's core); a real openvpn server with
    its defaults answers and picks from what was offered. (A client offering nothing the
    server takes is refused by the server, which sends no alert: both clients then only time
    out, so the refusals are shown server-side in the test above.)"""
    _pki(tmp_path)
    tls12 = "tls-version-max 1.2"
    table = [
        ("suites", ("tls-ciphersuites TLS-AES-128-GCM-SHA256",), (),
         ("TLSv1.3", "TLS_AES_128_GCM_SHA256"), None),
        ("groups", ("tls-groups secp521r1:X25519",), (), ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
         "521 bits ECsecp521r1"),
        ("iana", ("tls-cipher TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", tls12), (tls12,),
         ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"), None),
    ]
    cases = [Case(cid, "client", "server", d, p) for cid, d, p, _, _ in table]
    trivpn_handshakes: dict[str, str] = {}
    results = run_cases(lab.add("ora"), tmp_path, cases, base_port=28000,
                        handshakes=trivpn_handshakes, linger=1.0)
    _assert_same(results, {cid: "accepted" for cid, *_ in table})
    for i, (cid, _, _, (version, suite), key) in enumerate(table):
        assert _control_channel(tmp_path / f"verifier{i}.log") == f"{version} {suite}", cid
        assert trivpn_handshakes[cid] == f"{version}, cipher {suite}", cid
        if key is not None:  # the group, as each openvpn server reports its client's key
            for log in (f"peer{i}a.log", f"peer{i}b.log"):
                server = OpenVpnProcess(tmp_path / log, 0)
                assert server.wait_for(f"peer temporary key: {key}", timeout=5), log


@pytest.mark.directive("tls-ciphersuites", "tls-groups", "tls-cipher")
@pytest.mark.parametrize(("line", "fatal"), [
    ("tls-ciphersuites NOSUCH", "Failed to set restricted TLS 1.3 cipher list: NOSUCH"),
    ("tls-groups X25519:nosuch", "Failed to set allowed TLS group list: X25519:nosuch"),
    ("tls-ciphersuites TLS_AES_256_GCM_SHA384:NOSUCH", None),
    # IANA names are matched case-sensitively: this one is not translated.
    ("tls-cipher tls-ecdhe-ecdsa-with-aes-128-gcm-sha256",
     "Failed to set restricted TLS cipher list: tls-ecdhe-ecdsa-with-aes-128-gcm-sha256"),
    ("tls-cipher TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", None),
])
def test_unknown_suites_and_groups_stop_trivpn_at_startup_where_openvpn_stops(
        lab: NetnsLab, tmp_path: Path, line: str, fatal: str | None):
    """OpenSSL skips unknown TLS 1.3 suites but not a list without a known one, and refuses
    any unknown group; openvpn then exits with a fatal error, and trivpn refuses the config
    with the same words."""
    _pki(tmp_path)
    openvpn = start_openvpn(lab.add("ora"), tmp_path, "openvpn", [
        "dev null", "proto udp", "verb 3", "ca ca.crt", "cert server.crt", "key server.key",
        "tls-server", "dh none", "local 127.0.0.1", "lport 29000", line])
    # Without a peer, a p2p tls-server that started has bound its socket and waits.
    outcome = openvpn.wait_for("UDPv4 link local (bound)" if fatal is None
                               else "Exiting due to fatal error", timeout=10)
    assert outcome, openvpn.text()
    conf = tmp_path / "trivpn.conf"
    conf.write_text("\n".join(["port 1194", "proto udp", "dev tun", "dh none", "ca ca.crt",
                               "cert server.crt", "key server.key",
                               "server 198.18.8.0 255.255.255.0", line]) + "\n")
    if fatal is None:
        session_config(load_config(conf), unix_time_offset=0)
        return
    assert fatal in openvpn.text()
    directive = line.split(maxsplit=1)[0]
    with pytest.raises(ConfigError, match=re.escape(f"trivpn.conf:9: {directive}: ")) as err:
        session_config(load_config(conf), unix_time_offset=0)
    assert fatal in str(err.value)
