"""The server's certificate refused for each cause, against a real openvpn 2.6 server in
namespaces: ``tls.handshake`` must name the cause and the fix right for it, and a real openvpn
2.6 client refusing the same certificate must log the words the doctor quotes.

The server verifies clients with the interop CA (``ca.crt``); its own certificate comes from a
separate RSA CA (``rsaca.crt``, the client's ``ca``) so that digests and keys can be chosen.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, pkcs12

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.certkit import CLIENT_AUTH, NOW, Made, make_ca, make_crl, make_leaf
from tests.diagnostics.scenariokit import Scenario, client_lines, scenario, server_lines
from trivpn.diagnostics import (
    checks_certs,
    checks_config,
    checks_pki,
    checks_port,
    checks_tls,
)
from trivpn.diagnostics.certfacts import fingerprint
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks

pytestmark = pytest.mark.integration

CA = make_ca("cert-test CA")


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        (tmp_path / "rsaca.crt").write_bytes(_pem(CA))
        yield made


def _pem(made: Made) -> bytes:
    return made.cert.public_bytes(Encoding.PEM)


def _serve(sc: Scenario, leaf: Made, *, wrap: str = "tls-crypt",
           extra: tuple[str, ...] = ()) -> None:
    leaf.write(sc.workdir, "srvx")
    lines = [line.replace("server.crt", "srvx.crt").replace("server.key", "srvx.key")
             for line in server_lines(wrap, extra=extra)]
    proc = sc.start_openvpn(lines)
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()


def _client(sc: Scenario, *, wrap: str = "tls-crypt", extra: tuple[str, ...] = (),
            ca: str = "rsaca.crt") -> list[str]:
    return client_lines(wrap, ca=ca, extra=extra)


async def _handshake(ctx: DoctorContext) -> CheckResult:
    check = next(c for c in checks_tls.CHECKS if c.id == "tls.handshake")
    return await check.run(ctx)


def _openvpn_client_says(sc: Scenario, lines: list[str], *needles: str) -> str:
    """Run a real openvpn client with ``lines`` in the client namespace; its log once the
    first of ``needles`` shows (the assertion fails with the log unless all are there)."""
    proc = sc.start_openvpn_in(sc.client, [*lines, "verb 4", "connect-retry 1"],
                               name="ovpnclient")
    proc.wait_for(needles[0], timeout=10)
    text = proc.text()
    assert all(n in text for n in needles), text[-3000:]
    return text


async def test_server_cert_with_only_client_auth_eku_gets_the_reissue_fix_not_the_ca_fix(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", eku=(CLIENT_AUTH,)))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "eku"
    assert "unsuitable certificate purpose" in result.evidence["detail"]
    assert result.evidence["server_cert"]["eku"] == ["clientAuth"]
    assert "build-server-full" in result.fix and "serverAuth" in result.fix
    assert "into 'ca'" not in result.fix
    assert "remote-cert-tls" in result.fix  # relaxing is mentioned, with its risk
    # neither handshake sent our key method (nor credentials) to the untrusted server
    assert "peer info" not in sc.server_log()
    _openvpn_client_says(sc, lines, "unsuitable certificate purpose")


async def test_server_cert_without_eku_is_refused_by_remote_cert_tls_with_the_reissue_fix(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", eku=None))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "eku"
    assert result.evidence["server_cert"]["eku"] is None
    assert "build-server-full" in result.fix
    assert "client.conf line 9" in result.fix  # the remote-cert-tls line
    _openvpn_client_says(sc, lines, "VERIFY EKU ERROR")


async def test_server_cert_from_an_unknown_ca_gets_the_ca_fix(sc: Scenario):
    other = make_ca("someone else's CA")
    _serve(sc, make_leaf(other, "server"))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "untrusted_ca"
    assert "CN=someone else's CA" in result.fix
    assert "'ca' (client.conf line 6" in result.fix
    _openvpn_client_says(
        sc, lines, "VERIFY ERROR: depth=0, error=unable to get local issuer certificate")


async def test_verify_x509_name_mismatch_shows_the_name_and_the_line_that_would_match(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "vpn-gw-2"))
    lines = _client(sc, extra=("verify-x509-name vpn-gw-1 name",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "name_mismatch"
    assert result.evidence["server_cert"]["common_name"] == "vpn-gw-2"
    assert result.fix.endswith("client.conf line 11 to: verify-x509-name vpn-gw-2 name")
    assert "not the server you meant" in result.explanation
    _openvpn_client_says(sc, lines, "VERIFY X509NAME ERROR")


async def test_expired_server_cert_is_named_and_the_server_clock_clears_ours(sc: Scenario):
    _serve(sc, make_leaf(CA, "server", not_before=NOW - timedelta(days=400),
                         not_after=NOW - timedelta(days=3)))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "expired"
    assert abs(result.evidence["clock_skew_s"]) < 5  # read from the tls-crypt timestamps
    assert "agrees with ours" in result.explanation
    assert "renew" in result.fix.lower() and "server's config" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR: depth=0, error=certificate has expired")


async def test_not_yet_valid_server_cert_with_agreeing_clocks_blames_the_certificate_dates(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", not_before=NOW + timedelta(hours=3)))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "not_yet_valid"
    assert "agrees with ours" in result.explanation
    assert "start date in the future" in result.explanation
    assert "reissue" in result.fix
    _openvpn_client_says(sc, lines,
                         "VERIFY ERROR: depth=0, error=certificate is not yet valid")


async def test_not_yet_valid_server_cert_without_tls_auth_says_what_would_tell_clocks_apart(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", not_before=NOW + timedelta(hours=3)), wrap="none")
    result = await _handshake(sc.context(sc.client_config(_client(sc, wrap="none"))))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "not_yet_valid"
    assert "clock_skew_s" not in result.evidence
    assert "cannot be read here" in result.explanation
    assert "freshly issued" in result.explanation  # 3 h ahead
    assert "date -u" in result.fix


async def test_server_cert_revoked_by_our_crl_is_named_with_its_serial(sc: Scenario):
    leaf = make_leaf(CA, "server")
    _serve(sc, leaf)
    (sc.workdir / "crl.pem").write_bytes(make_crl(CA, [leaf.cert.serial_number]))
    lines = _client(sc, extra=("crl-verify crl.pem",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["cause"] == "cert_revoked"
    assert result.evidence["verify_cause"] == "revoked"
    assert f"serial {leaf.cert.serial_number}" in result.explanation
    assert "gen-crl" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "certificate revoked")


async def test_expired_crl_on_the_client_refuses_every_server(sc: Scenario):
    _serve(sc, make_leaf(CA, "server"))
    (sc.workdir / "crl.pem").write_bytes(make_crl(CA, this_update=NOW - timedelta(days=200),
                                                  next_update=NOW - timedelta(days=20)))
    lines = _client(sc, extra=("crl-verify crl.pem",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "crl_expired"
    assert "refuses every peer" in result.explanation
    assert "gen-crl" in result.fix and "client.conf line 11" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "CRL has expired")



async def test_crl_dated_ahead_on_the_client_refuses_every_server(sc: Scenario):
    _serve(sc, make_leaf(CA, "server"))
    (sc.workdir / "crl.pem").write_bytes(make_crl(CA, this_update=NOW + timedelta(hours=2)))
    lines = _client(sc, extra=("crl-verify crl.pem",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "crl_not_yet_valid"
    assert "agrees with ours" in result.explanation  # so the CA's clock was ahead
    assert "timedatectl" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "CRL is not yet valid")


async def test_crl_file_without_a_crl_on_the_client_refuses_every_server(sc: Scenario):
    _serve(sc, make_leaf(CA, "server"))
    (sc.workdir / "crl.pem").write_text("not a CRL\n")
    lines = _client(sc, extra=("crl-verify crl.pem",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "crl_unreadable"
    assert "refuses every peer" in result.explanation
    assert "unable to get certificate CRL" in result.explanation
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "unable to get certificate CRL")

async def test_sha1_signed_server_cert_is_md_too_weak_at_the_default_profile(sc: Scenario):
    _serve(sc, make_leaf(CA, "server", digest="sha1"), extra=("tls-cert-profile insecure",))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "md_too_weak"
    assert result.evidence["server_cert"]["signature_digest"] == "sha1"
    assert "SHA-256" in result.fix and "tls-cert-profile insecure" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "CA signature digest algorithm too weak")


async def test_rsa1024_server_cert_is_key_too_small_under_profile_preferred(sc: Scenario):
    _serve(sc, make_leaf(CA, "server", bits=1024))
    lines = _client(sc, extra=("tls-cert-profile preferred",))
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "key_too_small"
    assert result.evidence["server_cert"]["key"] == "RSA 1024"
    assert "2048" in result.fix and "tls-cert-profile legacy" in result.fix
    _openvpn_client_says(sc, lines, "VERIFY ERROR", "EE certificate key too weak")


async def test_server_cert_without_key_usage_is_refused_by_remote_cert_tls_with_the_reissue_fix(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", key_usage=False))
    lines = _client(sc)
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.status == "fail", result.summary
    assert result.evidence["verify_cause"] == "ku"
    assert result.evidence["server_cert"]["key_usage"] is None
    assert "build-server-full" in result.fix and "into 'ca'" not in result.fix
    assert "VERIFY KU ERROR" in result.explanation
    _openvpn_client_says(sc, lines, "VERIFY KU ERROR")


# --- trust anchors other than 'ca': healthy, and the fix names the right directive ----------

CERT_CHECKS = (*checks_config.CHECKS, *checks_pki.CHECKS, *checks_certs.CHECKS,
               *checks_port.CHECKS, *checks_tls.CHECKS)


def _without_ca(lines: list[str], *replacement: str) -> list[str]:
    return [line for line in lines if not line.startswith("ca ")] + list(replacement)


def _pkcs12(sc: Scenario) -> None:
    bundle = pkcs12.serialize_key_and_certificates(
        b"client1", sc.pki.client.key, sc.pki.client.cert,  # type: ignore[arg-type]
        [sc.pki.ca.cert], NoEncryption())
    (sc.workdir / "client.p12").write_bytes(bundle)


def _capath(sc: Scenario) -> None:
    cadir = sc.workdir / "cadir"
    cadir.mkdir()
    (cadir / "ca.pem").write_bytes(sc.pki.ca.cert.public_bytes(Encoding.PEM))
    subprocess.run(["openssl", "rehash", str(cadir)], check=True, capture_output=True)


def _anchor_lines(sc: Scenario, kind: str) -> list[str]:
    base = client_lines("tls-crypt")
    if kind == "pkcs12":
        _pkcs12(sc)
        return [line for line in _without_ca(base, "pkcs12 client.p12")
                if not line.startswith(("cert ", "key "))]
    if kind == "capath":
        _capath(sc)
        return _without_ca(base, "capath cadir")
    fp = fingerprint(sc.pki.server.cert)
    return _without_ca(base, f"peer-fingerprint {fp}")


@pytest.mark.parametrize("kind", ["pkcs12", "capath", "peer-fingerprint"])
async def test_trust_from_pkcs12_capath_or_peer_fingerprint_is_healthy_not_no_ca(
        sc: Scenario, kind: str):
    proc = sc.start_openvpn(server_lines("tls-crypt"))
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()
    ctx = sc.context(sc.client_config(_anchor_lines(sc, kind)))

    report = await run_checks(CERT_CHECKS, ctx)

    results = {r.id: r for r in report.checks}
    bad = {i: r.summary for i, r in results.items() if r.status not in ("ok", "skip")}
    assert bad == {}
    for cid in ("pki.chain", "pki.validity", "pki.eku", "pki.policy", "tls.handshake",
                "tls.server_cert"):
        assert results[cid].status == "ok", (cid, results[cid].summary)
    assert results["pki.chain"].evidence["ca_from"] == kind
    assert results["pki.key_match"].status == "ok"


@pytest.mark.parametrize("kind", ["pkcs12", "capath"])
async def test_server_cert_from_an_unknown_ca_names_the_directive_that_holds_the_cas(
        sc: Scenario, kind: str):
    _serve(sc, make_leaf(make_ca("foreign CA"), "server"))
    ctx = sc.context(sc.client_config(_anchor_lines(sc, kind)))

    result = await _handshake(ctx)

    assert result.evidence["verify_cause"] == "untrusted_ca", result.summary
    assert ("'capath' directory" if kind == "capath" else "pkcs12") in result.fix
    assert "CN=foreign CA" in result.fix


async def test_server_with_another_fingerprint_gets_the_peer_fingerprint_line(sc: Scenario):
    leaf = make_leaf(CA, "server")
    _serve(sc, leaf)
    lines = _without_ca(client_lines("tls-crypt"),
                        f"peer-fingerprint {fingerprint(sc.pki.server.cert)}")
    result = await _handshake(sc.context(sc.client_config(lines)))

    assert result.evidence["verify_cause"] == "fingerprint", result.summary
    assert f"peer-fingerprint {fingerprint(leaf.cert)}" in result.fix
    assert "not your server" in result.explanation


async def test_server_cert_expiring_in_ten_days_is_forecast_after_a_good_handshake(
        sc: Scenario):
    _serve(sc, make_leaf(CA, "server", not_after=NOW + timedelta(days=10, hours=1)))
    ctx = sc.context(sc.client_config(_client(sc)))

    report = await run_checks(CERT_CHECKS, ctx)

    results = {r.id: r for r in report.checks}
    assert results["tls.handshake"].status == "ok", results["tls.handshake"].summary
    forecast = results["tls.server_cert"]
    assert forecast.status == "warn"
    assert "peer info" in sc.server_log()  # a good handshake sends the key method
    assert "expires in 10 days" in forecast.summary
    assert "renew" in forecast.fix.lower()
    assert abs(forecast.evidence["server_clock_skew_s"]) < 5


async def test_client_cert_from_another_ca_than_ours_is_fine_when_the_server_accepts_it(
        sc: Scenario):
    # the server's certificate comes from rsaca.crt (our 'ca'), our certificate from the
    # interop CA, which the server trusts: split CAs, a working setup
    _serve(sc, make_leaf(CA, "server"))
    ctx = sc.context(sc.client_config(_client(sc)))

    report = await run_checks(CERT_CHECKS, ctx)

    results = {r.id: r for r in report.checks}
    assert {i: r.summary for i, r in results.items() if r.status not in ("ok", "skip")} == {}
    assert results["pki.chain"].evidence["server_accepted"] is True
    assert "trusts another CA" in results["pki.chain"].summary


async def test_client_cert_the_server_refuses_still_fails_pki_chain(sc: Scenario):
    _serve(sc, make_leaf(CA, "server"))
    foreign = make_ca("nobody's CA")
    make_leaf(foreign, "client1", eku=(CLIENT_AUTH,)).write(sc.workdir, "foreign")
    lines = client_lines("tls-crypt", ca="rsaca.crt", cert="foreign.crt", key="foreign.key")
    ctx = sc.context(sc.client_config(lines))

    report = await run_checks(CERT_CHECKS, ctx)

    results = {r.id: r for r in report.checks}
    assert results["tls.handshake"].evidence["cause"] == "peer_rejected_cert"
    assert results["pki.chain"].status == "fail"
