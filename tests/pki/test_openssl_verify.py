"""Cross-check issued certificates with the ``openssl`` binary (chain + TLS purpose checks)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI requires the openssl binary")
        pytest.skip("needs the openssl binary")
    assert path is not None
    return path


def verify(tmp_path: Path, ca: Credential, leaf: Credential, purpose: str,
           *extra: str) -> subprocess.CompletedProcess[str]:
    ca_file = tmp_path / "ca.crt"
    leaf_file = tmp_path / "leaf.crt"
    ca_file.write_bytes(certificate_pem(ca.cert))
    leaf_file.write_bytes(certificate_pem(leaf.cert))
    return subprocess.run(
        [openssl(), "verify", "-CAfile", str(ca_file), "-purpose", purpose, *extra,
         str(leaf_file)],
        check=False, capture_output=True, text=True, timeout=10,
    )


@pytest.fixture(scope="module")
def ca() -> Credential:
    return create_ca("Verify CA")


@pytest.mark.parametrize(
    ("kind", "purpose", "ok"),
    [
        ("server", "sslserver", True),
        ("client", "sslclient", True),
        ("server", "sslclient", False),
        ("client", "sslserver", False),
    ],
)
def test_openssl_verifies_chain_and_purpose(tmp_path, ca, kind, purpose, ok) -> None:
    leaf = issue_cert(ca, kind, "peer")
    result = verify(tmp_path, ca, leaf, purpose)
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    if not ok:
        assert "unsuitable certificate purpose" in result.stdout + result.stderr


@pytest.mark.parametrize(("kind", "purpose"), [("server", "sslserver"), ("client", "sslclient")])
def test_openssl_verifies_rsa_certificates(tmp_path, kind, purpose) -> None:
    ca = create_ca(key_type="rsa2048")
    leaf = issue_cert(ca, kind, "peer", key_type="rsa2048")
    result = verify(tmp_path, ca, leaf, purpose)
    assert result.returncode == 0, result.stdout + result.stderr


def test_expired_certificate_is_rejected(tmp_path, ca) -> None:
    now = datetime.now(UTC)
    leaf = issue_cert(ca, "server", "old", not_before=now - timedelta(days=30),
                      not_after=now - timedelta(days=1))
    result = verify(tmp_path, ca, leaf, "sslserver")
    assert result.returncode != 0
    assert "certificate has expired" in result.stdout + result.stderr


def test_not_yet_valid_certificate_is_rejected(tmp_path, ca) -> None:
    now = datetime.now(UTC)
    leaf = issue_cert(ca, "server", "future", not_before=now + timedelta(days=1),
                      not_after=now + timedelta(days=30))
    result = verify(tmp_path, ca, leaf, "sslserver")
    assert result.returncode != 0
    assert "certificate is not yet valid" in result.stdout + result.stderr


def test_certificate_from_another_ca_is_rejected(tmp_path, ca) -> None:
    stranger = create_ca("Verify CA")  # same name, different key
    leaf = issue_cert(stranger, "server", "impostor")
    result = verify(tmp_path, ca, leaf, "sslserver")
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_server_certificate_with_a_foreign_eku_is_unsuitable(tmp_path, ca) -> None:
    wrong = issue_cert(ca, "server", "s", eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    result = verify(tmp_path, ca, wrong, "sslserver")
    assert result.returncode != 0
    assert "unsuitable certificate purpose" in result.stdout + result.stderr


def test_openssl_prints_the_extensions(tmp_path, ca) -> None:
    leaf = issue_cert(ca, "server", "198.18.0.1")
    pem = tmp_path / "leaf.crt"
    pem.write_bytes(certificate_pem(leaf.cert))
    result = subprocess.run([openssl(), "x509", "-in", str(pem), "-noout", "-text"],
                            capture_output=True, text=True, timeout=10, check=True)
    for line in ("CA:FALSE", "TLS Web Server Authentication", "Digital Signature",
                 "DNS:198.18.0.1", "IP Address:198.18.0.1", "Subject: CN = 198.18.0.1"):
        assert line in result.stdout
