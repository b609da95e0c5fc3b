"""What the certificate checks (pki.policy, pki.crl, crypto.legacy_ciphers) say OpenVPN 2.6
does at start, checked against the real binary: each client runs at most 2 s in a namespace of
its own (its remote, 198.18.0.9, is never reached), and the doctor's check on the same config
must say the same thing.

The refusals of a server's certificate during the handshake are checked against a real openvpn
client in tests/diagnostics/test_scenarios_certs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.certkit import CLIENT_AUTH, NOW, make_ca, make_crl, make_leaf
from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab
from trivpn.config import load_config_salvaged
from trivpn.diagnostics import checks_certs
from trivpn.diagnostics.certfacts import system_security_level
from trivpn.diagnostics.model import CheckResult, DoctorContext

pytestmark = pytest.mark.integration

CA = make_ca("claims CA")
BASE = ["client", "dev null", "proto udp", "remote 198.18.0.9 1194", "nobind", "ca ca.crt",
        "cert c.crt", "key c.key", "remote-cert-tls server", "verb 4"]


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    require_netns()
    require_openvpn()
    with NetnsLab() as made:
        yield made


def _setup(tmp: Path, *, bits: int = 2048, digest: str = "sha256") -> None:
    (tmp / "ca.crt").write_bytes(CA.cert.public_bytes(_pem()))
    make_leaf(CA, "c", eku=(CLIENT_AUTH,), bits=bits, digest=digest).write(tmp, "c")


def _pem() -> Encoding:
    return Encoding.PEM


def _openvpn(lab: NetnsLab, tmp: Path, lines: list[str]) -> str:
    conf = tmp / "client.conf"
    conf.write_text("\n".join(lines) + "\n")
    return openvpn_output(lab, tmp, ["--config", conf.name])


async def _check(check_id: str, tmp: Path) -> CheckResult:
    conf = tmp / "client.conf"
    options, errors = load_config_salvaged(conf)
    ctx = DoctorContext(conf, options, "client", 5.0, config_errors=errors)
    check = next(c for c in checks_certs.CHECKS if c.id == check_id)
    return await check.run(ctx)


async def test_openvpn_exits_with_ca_md_too_weak_for_a_sha1_signed_own_certificate(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path, digest="sha1")
    out = _openvpn(lab, tmp_path, BASE)
    assert "ca md too weak" in out and "Exiting due to fatal error" in out, out[-2000:]
    result = await _check("pki.policy", tmp_path)
    assert result.status == "fail"
    assert "ca md too weak" in result.explanation and "exits at start" in result.explanation


async def test_openvpn_accepts_a_sha1_signed_own_certificate_under_profile_insecure(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path, digest="sha1")
    out = _openvpn(lab, tmp_path, [*BASE, "tls-cert-profile insecure"])
    assert "ca md too weak" not in out, out[-2000:]
    result = await _check("pki.policy", tmp_path)
    assert result.status == "warn", result.summary  # ours passes, a default peer refuses it
    assert result.evidence["security_level"] == 0
    assert "'tls-cert-profile legacy'" in result.summary


async def test_openvpn_sets_level_1_over_the_system_default_so_rsa1024_loads(
        lab: NetnsLab, tmp_path: Path) -> None:
    if system_security_level() < 2:
        pytest.skip("this OpenSSL's default security level is below 2")
    _setup(tmp_path, bits=1024)
    out = _openvpn(lab, tmp_path, BASE)
    assert "key too small" not in out and "fatal" not in out, out[-2000:]
    result = await _check("pki.policy", tmp_path)
    assert result.status == "warn"  # a peer at 'preferred' refuses it: only inferred
    assert result.evidence["security_level"] == 1
    assert result.evidence["system_default_level"] >= 2
    assert "only inferred" in result.explanation
    assert "'tls-cert-profile preferred'" in result.summary


@pytest.mark.parametrize("extra", ["tls-cert-profile preferred", "tls-cipher DEFAULT:@SECLEVEL=2"])
async def test_openvpn_exits_with_ee_key_too_small_for_rsa1024_at_level_2(
        lab: NetnsLab, tmp_path: Path, extra: str) -> None:
    _setup(tmp_path, bits=1024)
    out = _openvpn(lab, tmp_path, [*BASE, extra])
    assert "ee key too small" in out and "Exiting due to fatal error" in out, out[-2000:]
    result = await _check("pki.policy", tmp_path)
    assert result.status == "fail"
    assert result.evidence["security_level"] == 2
    assert "ee key too small" in result.explanation


async def test_openvpn_exits_with_ee_key_too_small_for_rsa2048_under_suiteb(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "tls-cert-profile suiteb"])
    assert "ee key too small" in out, out[-2000:]
    result = await _check("pki.policy", tmp_path)
    assert result.status == "fail" and result.evidence["security_level"] == 3


async def test_openvpn_without_legacy_provider_refuses_bf_cbc_in_data_ciphers(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "data-ciphers AES-256-GCM:BF-CBC"])
    assert "Unsupported cipher in --data-ciphers: BF-CBC" in out, out[-2000:]
    result = await _check("crypto.legacy_ciphers", tmp_path)
    assert result.status == "fail"
    assert "Unsupported cipher in --data-ciphers: BF-CBC" in result.explanation
    assert "providers legacy default" in result.fix


async def test_openvpn_drops_an_optional_bf_cbc_without_the_legacy_provider(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "data-ciphers AES-256-GCM:?BF-CBC"])
    assert "Unsupported optional cipher in --data-ciphers: BF-CBC" in out, out[-2000:]
    assert "fatal" not in out and "Options error" not in out
    result = await _check("crypto.legacy_ciphers", tmp_path)
    assert result.status == "warn"


async def test_openvpn_without_legacy_provider_exits_on_data_ciphers_fallback_bf_cbc(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "data-ciphers-fallback BF-CBC"])
    assert "Cipher BF-CBC not supported" in out and "Exiting due to fatal error" in out
    result = await _check("crypto.legacy_ciphers", tmp_path)
    assert result.status == "fail"
    assert "'Cipher BF-CBC not supported'" in result.explanation


async def test_openvpn_with_legacy_provider_accepts_bf_cbc_fallback_with_the_sweet32_warning(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "providers legacy default",
                                   "data-ciphers-fallback BF-CBC"])
    warning = "WARNING: INSECURE cipher (BF-CBC) with block size less than 128 bit (64 bit)"
    assert warning in out and "fatal" not in out, out[-2000:]
    result = await _check("crypto.legacy_ciphers", tmp_path)
    assert result.status == "warn"
    assert warning in result.explanation


async def test_openvpn_client_ignores_cipher_bf_cbc_for_negotiation(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    out = _openvpn(lab, tmp_path, [*BASE, "cipher BF-CBC"])
    said = "DEPRECATED OPTION: --cipher set to 'BF-CBC' but missing in --data-ciphers"
    assert said in out and "fatal" not in out, out[-2000:]
    result = await _check("crypto.legacy_ciphers", tmp_path)
    assert result.status == "warn"
    assert said in result.explanation


async def test_openvpn_loads_zero_crls_from_a_file_without_one(
        lab: NetnsLab, tmp_path: Path) -> None:
    _setup(tmp_path)
    (tmp_path / "crl.pem").write_text("not a CRL\n")
    out = _openvpn(lab, tmp_path, [*BASE, "crl-verify crl.pem"])
    assert "CRL: loaded 0 CRLs from file" in out, out[-2000:]
    assert "fatal" not in out and "Options error" not in out  # it keeps running
    result = await _check("pki.crl", tmp_path)
    assert result.status == "fail"
    assert "CRL: loaded 0 CRLs from file" in result.explanation


async def test_crl_expiring_within_30_days_warns_and_an_expired_one_fails(
        tmp_path: Path) -> None:
    _setup(tmp_path)
    (tmp_path / "client.conf").write_text("\n".join([*BASE, "crl-verify crl.pem"]) + "\n")
    (tmp_path / "crl.pem").write_bytes(make_crl(CA, next_update=NOW + timedelta(days=10)))
    soon = await _check("pki.crl", tmp_path)
    (tmp_path / "crl.pem").write_bytes(make_crl(CA, this_update=NOW - timedelta(days=40),
                                                next_update=NOW - timedelta(days=1)))
    late = await _check("pki.crl", tmp_path)

    assert soon.status == "warn" and "expires in 9 days" in soon.summary
    assert late.status == "fail" and "refuses every peer" in late.explanation
    # that openvpn 2.6 refuses peers with an expired CRL: test_scenarios_certs.py,
    # test_expired_crl_on_the_client_refuses_every_server
