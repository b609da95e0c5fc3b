"""pki.crl, pki.policy, crypto.legacy_ciphers and tls.server_cert on constructed configs,
certificates and handshake results (no network)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.diagnostics.certkit import NOW, Made, make_ca, make_leaf
from tests.diagnostics.doctorkit import CLIENT, SERVER, Pki, by_id, context, write_config, write_pki
from trivpn.config import load_config_salvaged
from trivpn.diagnostics.certfacts import cert_facts
from trivpn.diagnostics.checks_certs import CHECKS, SERVER_CERT
from trivpn.diagnostics.checks_pki import CHECKS as PKI_CHECKS
from trivpn.diagnostics.model import CheckResult, ok, problem


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return write_pki(tmp_path)


async def _run(check_id: str, pki: Pki, text: str = CLIENT) -> CheckResult:
    return await by_id(CHECKS, check_id).run(context(write_config(pki.dir, text)))


@pytest.mark.parametrize("text", [CLIENT, SERVER])
@pytest.mark.parametrize("check_id", ["pki.policy", "crypto.legacy_ciphers"])
async def test_healthy_material_gives_no_warning(pki: Pki, text: str, check_id: str) -> None:
    assert (await _run(check_id, pki, text)).status == "ok"


async def test_pki_crl_is_skipped_without_crl_verify(pki: Pki) -> None:
    assert (await _run("pki.crl", pki)).status == "skip"


async def test_pki_crl_of_another_ca_warns_that_it_revokes_nothing(pki: Pki) -> None:
    from tests.diagnostics.certkit import make_crl
    (pki.dir / "crl.pem").write_bytes(make_crl(make_ca("other CA")))
    result = await _run("pki.crl", pki, CLIENT + "crl-verify crl.pem\n")
    assert result.status == "warn"
    assert "not signed by a configured CA" in result.summary


async def test_pki_policy_reports_the_level_openvpn_would_use_and_the_systems(pki: Pki) -> None:
    result = await _run("pki.policy", pki, CLIENT + "tls-cert-profile preferred\n")
    assert result.evidence["security_level"] == 2
    assert result.evidence["level_from"] == "tls-cert-profile preferred"
    assert isinstance(result.evidence["system_default_level"], int)


async def test_legacy_cipher_in_data_ciphers_with_the_legacy_provider_only_warns(
        pki: Pki) -> None:
    path = write_config(pki.dir, CLIENT + "data-ciphers AES-256-GCM:BF-CBC\n"
                        "providers legacy default\n")
    options, _ = load_config_salvaged(path)  # as the doctor reads it (lenient: trivpn
    assert options is not None                # leaves 'providers' out, the check reads it)
    result = await by_id(CHECKS, "crypto.legacy_ciphers").run(context(path, options=options))
    assert result.status == "warn"
    assert "SWEET32" in result.explanation


def _handshake(cert_made: Made, *, skew: float | None = None,
               status: str = "ok") -> CheckResult:
    evidence: dict[str, Any] = {"server_cert": cert_facts(cert_made.cert)}
    if skew is not None:
        evidence["server_clock_skew_s"] = skew
    if status == "ok":
        return ok("tls.handshake", "handshake complete", **evidence)
    return problem("tls.handshake", "fail", "refused", explanation="x", fix="y", **evidence)


async def _server_cert(pki: Pki, hs: CheckResult | None) -> CheckResult:
    ctx = context(write_config(pki.dir, CLIENT),
                  results={"tls.handshake": hs} if hs is not None else {})
    return await SERVER_CERT.run(ctx)


async def test_server_cert_check_skips_without_a_good_handshake(pki: Pki) -> None:
    ca = make_ca()
    assert (await _server_cert(pki, None)).status == "skip"
    failed = _handshake(make_leaf(ca, "s"), status="fail")
    assert (await _server_cert(pki, failed)).status == "skip"


async def test_server_cert_valid_for_long_is_ok(pki: Pki) -> None:
    result = await _server_cert(pki, _handshake(make_leaf(make_ca(), "s"), skew=0.4))
    assert result.status == "ok", result.summary
    assert result.evidence["server_security_level_at_most"] == 2


async def test_server_cert_expiring_soon_warns_with_the_date(pki: Pki) -> None:
    leaf = make_leaf(make_ca(), "s", not_after=NOW + timedelta(days=20, hours=1))
    result = await _server_cert(pki, _handshake(leaf))
    assert result.status == "warn"
    assert "expires in 20 days" in result.summary


async def test_server_clock_far_from_ours_warns(pki: Pki) -> None:
    result = await _server_cert(pki, _handshake(make_leaf(make_ca(), "s"), skew=-900.0))
    assert result.status == "warn"
    assert "900 s behind the server's" in result.summary


async def test_rsa1024_server_cert_warns_that_clients_at_preferred_refuse_it(pki: Pki) -> None:
    result = await _server_cert(pki, _handshake(make_leaf(make_ca(), "s", bits=1024)))
    assert result.status == "warn"
    assert result.evidence["server_security_level_at_most"] == 1
    assert "can only be inferred" in result.explanation


async def test_capath_with_rehash_links_counts_each_ca_and_crl_once(pki: Pki) -> None:
    from tests.diagnostics.certkit import make_crl
    from trivpn.diagnostics.checks_pki import read_capath
    cadir = pki.dir / "cadir"
    cadir.mkdir()
    (cadir / "ca.pem").write_bytes((pki.dir / "ca.crt").read_bytes())
    (cadir / "1a2b3c4d.0").symlink_to("ca.pem")
    other = make_ca("capath CA")
    (cadir / "crl.pem").write_bytes(make_crl(other))
    (cadir / "5e6f7a8b.r0").symlink_to("crl.pem")

    certs, crls = read_capath(cadir)

    assert len(certs) == 1 and len(crls) == 1


async def test_pki_chain_trusts_the_cas_of_a_pkcs12_bundle_without_ca(pki: Pki) -> None:
    from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12
    bundle = pkcs12.serialize_key_and_certificates(
        b"client1", pki.client.key, pki.client.cert,  # type: ignore[arg-type]
        [pki.ca.cert], NoEncryption())
    (pki.dir / "client.p12").write_bytes(bundle)
    text = "\n".join(line for line in CLIENT.splitlines()
                     if not line.startswith(("ca ", "cert ", "key "))) + "\npkcs12 client.p12\n"
    ctx = context(write_config(pki.dir, text))

    results = {c.id: await c.run(ctx) for c in PKI_CHECKS}

    assert {i: r.status for i, r in results.items()} == {
        "pki.chain": "ok", "pki.validity": "ok", "pki.key_match": "ok", "pki.eku": "ok"}
    assert results["pki.chain"].evidence["ca_from"] == "pkcs12"
    assert [r["file"] for r in results["pki.validity"].evidence["certificates"]] == [
        "pkcs12", "pkcs12 CA"]


async def test_pki_chain_with_peer_fingerprint_alone_shows_our_fingerprint(pki: Pki) -> None:
    from trivpn.diagnostics.certfacts import fingerprint
    text = "\n".join(line for line in CLIENT.splitlines() if not line.startswith("ca ")) + \
        "\npeer-fingerprint " + fingerprint(pki.server.cert) + "\n"
    result = await by_id(PKI_CHECKS, "pki.chain").run(context(write_config(pki.dir, text)))

    assert result.status == "ok", result.summary
    assert result.evidence["sha256_fingerprint"] == fingerprint(pki.client.cert)
    assert "no ca" not in result.summary.lower()
