"""pki.chain, pki.validity, pki.key_match and pki.eku against constructed certificates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.diagnostics.doctorkit import (
    CLIENT,
    NOW,
    SERVER,
    Pki,
    by_id,
    context,
    expired_dates,
    write_config,
    write_cred,
    write_pki,
)
from trivpn.diagnostics.checks_pki import CHECKS
from trivpn.diagnostics.model import CheckResult
from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert

CHAIN, VALIDITY, KEY_MATCH, EKU = (by_id(CHECKS, i) for i in
                                   ("pki.chain", "pki.validity", "pki.key_match", "pki.eku"))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return write_pki(tmp_path)


async def run(check_id: str, pki: Pki, text: str = CLIENT) -> CheckResult:
    check = by_id(CHECKS, check_id)
    return await check.run(context(write_config(pki.dir, text)))


@pytest.mark.parametrize("check_id", ["pki.chain", "pki.validity", "pki.key_match", "pki.eku"])
async def test_good_client_material_is_ok(pki: Pki, check_id: str) -> None:
    assert (await run(check_id, pki)).status == "ok"


@pytest.mark.parametrize("check_id", ["pki.chain", "pki.validity", "pki.key_match", "pki.eku"])
async def test_good_server_material_is_ok(pki: Pki, check_id: str) -> None:
    assert (await run(check_id, pki, SERVER)).status == "ok"


async def test_cert_from_another_ca_fails_with_subject_and_issuer(pki: Pki) -> None:
    other = create_ca("other CA")
    write_cred(pki.dir, "client", issue_cert(other, "client", "client1"))
    result = await run("pki.chain", pki)
    assert result.status == "fail"
    assert result.evidence["chain"] == [{"subject": "CN=client1", "issuer": "CN=other CA"}]
    assert result.evidence["ca_subjects"] == ["CN=doctor CA"]
    assert "CN=other CA" in result.summary
    assert "'cert' at" in result.fix and "'ca' at" in result.fix


async def test_regenerated_ca_with_same_name_is_named_as_such(pki: Pki) -> None:
    same_name = create_ca("doctor CA")
    write_cred(pki.dir, "client", issue_cert(same_name, "client", "client1"))
    result = await run("pki.chain", pki)
    assert result.status == "fail"
    assert "same name but a different key" in result.summary


async def test_intermediate_from_extra_certs_completes_the_chain(pki: Pki) -> None:
    ca = create_ca("root")
    # issue_cert only makes leaves; a leaf's key can still sign, which is all the chain walk
    # checks (OpenSSL would also want CA:TRUE on the intermediate).
    inter = issue_cert(ca, "client", "inter")  # leaf used as issuer: signature still verifies
    leaf = issue_cert(Credential(inter.cert, inter.key), "client", "client1")
    (pki.dir / "ca.crt").write_bytes(certificate_pem(ca.cert))
    write_cred(pki.dir, "client", leaf)
    (pki.dir / "inter.crt").write_bytes(certificate_pem(inter.cert))
    result = await run("pki.chain", pki, CLIENT + "extra-certs inter.crt\n")
    assert result.status == "ok"
    assert [c["subject"] for c in result.evidence["chain"]] == ["CN=client1", "CN=inter",
                                                                "CN=root"]


async def test_unreadable_ca_is_reported_once_by_pki_chain(pki: Pki) -> None:
    (pki.dir / "ca.crt").write_text("not a certificate\n")
    assert (await run("pki.chain", pki)).status == "fail"
    assert (await run("pki.eku", pki)).status == "skip"


async def test_expired_cert_fails_with_dates_and_now(pki: Pki) -> None:
    start, end = expired_dates()
    write_cred(pki.dir, "client", issue_cert(pki.ca, "client", "client1", not_before=start,
                                             not_after=end))
    result = await run("pki.validity", pki)
    assert result.status == "fail"
    row = result.evidence["certificates"][0]
    assert row["state"] == "expired"
    assert row["not_after"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "now" in result.evidence
    assert "expired" in result.summary and "renew" in result.fix


async def test_not_yet_valid_cert_hints_at_clock_skew(pki: Pki) -> None:
    write_cred(pki.dir, "client", issue_cert(
        pki.ca, "client", "client1", not_before=NOW + timedelta(days=1),
        not_after=NOW + timedelta(days=300)))
    result = await run("pki.validity", pki)
    assert result.status == "fail"
    assert result.evidence["certificates"][0]["state"] == "not yet valid"
    assert "clock" in result.explanation
    assert "date -u" in result.fix


async def test_cert_expiring_within_30_days_warns(pki: Pki) -> None:
    write_cred(pki.dir, "client", issue_cert(
        pki.ca, "client", "client1", not_before=NOW - timedelta(days=300),
        not_after=NOW + timedelta(days=10)))
    result = await run("pki.validity", pki)
    assert result.status == "warn"
    assert result.evidence["certificates"][0]["state"].startswith("expires in 9")


async def test_expired_ca_fails(pki: Pki) -> None:
    start, end = expired_dates()
    old = create_ca("doctor CA", not_before=start, not_after=end)
    (pki.dir / "ca.crt").write_bytes(certificate_pem(old.cert))
    write_cred(pki.dir, "client", issue_cert(old, "client", "client1"))
    result = await run("pki.validity", pki)
    assert result.status == "fail"
    assert [r["file"] for r in result.evidence["certificates"]] == ["cert", "ca"]


async def test_key_of_another_cert_fails(pki: Pki) -> None:
    (pki.dir / "client.key").write_bytes((pki.dir / "server.key").read_bytes())
    result = await run("pki.key_match", pki)
    assert result.status == "fail"
    assert "does not belong" in result.summary
    assert "openssl pkey -pubout" in result.fix


async def test_server_cert_on_a_client_fails_eku(pki: Pki) -> None:
    result = await run("pki.eku", pki, CLIENT.replace("client.crt", "server.crt")
                       .replace("client.key", "server.key"))
    assert result.status == "fail"
    assert result.evidence["eku"] == ["serverAuth"]
    assert result.evidence["needed_eku"] == "clientAuth"
    assert "swapped" in result.explanation


async def test_client_cert_on_a_server_fails_eku(pki: Pki) -> None:
    result = await run("pki.eku", pki, SERVER.replace("server.crt", "client.crt")
                       .replace("server.key", "client.key"))
    assert result.status == "fail"
    assert "remote-cert-tls server" in result.explanation


async def test_server_cert_without_key_usage_fails(pki: Pki) -> None:
    write_cred(pki.dir, "server", issue_cert(pki.ca, "server", "server", key_usage=False))
    result = await run("pki.eku", pki, SERVER)
    assert result.status == "fail"
    assert result.evidence["key_usage"] == "(none)"


async def test_client_cert_without_eku_only_warns(pki: Pki) -> None:
    write_cred(pki.dir, "client", issue_cert(pki.ca, "client", "client1", eku=()))
    result = await run("pki.eku", pki)
    assert result.status == "warn"


async def test_cert_with_both_purposes_is_fine(pki: Pki) -> None:
    write_cred(pki.dir, "client", issue_cert(
        pki.ca, "client", "client1",
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)))
    assert (await run("pki.eku", pki)).status == "ok"


P2P_TLS_SERVER = """dev tun
proto udp
lport 1194
remote 198.18.0.2 1194
ifconfig 198.19.5.1 198.19.5.2
tls-server
dh none
ca ca.crt
cert server.crt
key server.key
"""


async def test_peer_to_peer_tls_server_needs_a_server_certificate(pki: Pki) -> None:
    result = await run("pki.eku", pki, P2P_TLS_SERVER)
    assert result.status == "ok"
    assert result.evidence["needed_eku"] == "serverAuth"


async def test_peer_to_peer_tls_server_with_a_client_certificate_fails_eku(pki: Pki) -> None:
    result = await run("pki.eku", pki, P2P_TLS_SERVER.replace("server.crt", "client.crt")
                       .replace("server.key", "client.key"))
    assert result.status == "fail"
    assert result.evidence["needed_eku"] == "serverAuth"
