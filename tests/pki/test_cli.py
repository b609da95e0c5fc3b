"""``trivpn pki init | issue | genkey`` through trivpn.cli.main."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from trivpn.cli import main
from trivpn.pki.certs import load_certificate
from trivpn.pki.keys import load_private_key
from trivpn.protocol.statickey import parse_static_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cert_at(path: Path) -> x509.Certificate:
    return load_certificate(path.read_text(), str(path))


def test_init_writes_ca_and_prints_paths(in_tmp, capsys) -> None:
    assert main(["pki", "init", "pki", "--cn", "My CA"]) == 0
    out = capsys.readouterr().out
    assert "pki/ca.crt" in out and "pki/private/ca.key" in out
    assert "no DH parameters file is needed" in out
    assert cert_at(in_tmp / "pki" / "ca.crt").subject.rfc4514_string() == "CN=My CA"
    assert mode(in_tmp / "pki" / "private" / "ca.key") == 0o600
    assert mode(in_tmp / "pki" / "private") == 0o700


def test_init_rsa_uses_requested_size(in_tmp) -> None:
    assert main(["pki", "init", "pki", "--key-type", "rsa", "--rsa-bits", "3072"]) == 0
    key = load_private_key((in_tmp / "pki" / "private" / "ca.key").read_text())
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072


def test_init_days_sets_validity(in_tmp) -> None:
    assert main(["pki", "init", "pki", "--days", "30"]) == 0
    cert = cert_at(in_tmp / "pki" / "ca.crt")
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30  # 30 d + backdate


def test_init_refuses_existing_ca(in_tmp, capsys) -> None:
    assert main(["pki", "init", "pki"]) == 0
    before = (in_tmp / "pki" / "ca.crt").read_bytes()
    capsys.readouterr()
    assert main(["pki", "init", "pki"]) == 1
    err = capsys.readouterr().err
    assert "pki/ca.crt: already exists" in err and "--force" in err
    assert (in_tmp / "pki" / "ca.crt").read_bytes() == before


def test_init_force_replaces_ca(in_tmp) -> None:
    assert main(["pki", "init", "pki"]) == 0
    before = (in_tmp / "pki" / "ca.crt").read_bytes()
    assert main(["pki", "init", "pki", "--force"]) == 0
    assert (in_tmp / "pki" / "ca.crt").read_bytes() != before


@pytest.mark.parametrize(
    ("kind", "eku"),
    [("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)],
)
def test_issue_writes_signed_cert_and_private_key(in_tmp, capsys, kind, eku) -> None:
    assert main(["pki", "init", "pki"]) == 0
    assert main(["pki", "issue", kind, "peer1"]) == 0  # --dir defaults to ./pki
    out = capsys.readouterr().out
    cert_path = in_tmp / "pki" / "issued" / "peer1.crt"
    key_path = in_tmp / "pki" / "private" / "peer1.key"
    assert str(Path("pki/issued/peer1.crt")) in out and str(Path("pki/private/peer1.key")) in out
    cert = cert_at(cert_path)
    cert.verify_directly_issued_by(cert_at(in_tmp / "pki" / "ca.crt"))
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [eku]
    assert load_private_key(key_path.read_text()).public_key() == cert.public_key()
    assert mode(key_path) == 0o600


def test_issue_uses_dir_option(in_tmp) -> None:
    assert main(["pki", "init", "elsewhere"]) == 0
    assert main(["pki", "issue", "client", "bob", "--dir", "elsewhere"]) == 0
    assert (in_tmp / "elsewhere" / "issued" / "bob.crt").exists()


def test_issue_refuses_existing_name(in_tmp, capsys) -> None:
    assert main(["pki", "init", "pki"]) == 0
    assert main(["pki", "issue", "client", "alice"]) == 0
    before = (in_tmp / "pki" / "private" / "alice.key").read_bytes()
    capsys.readouterr()
    assert main(["pki", "issue", "client", "alice"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (in_tmp / "pki" / "private" / "alice.key").read_bytes() == before
    assert main(["pki", "issue", "client", "alice", "--force"]) == 0
    assert (in_tmp / "pki" / "private" / "alice.key").read_bytes() != before


def test_issue_without_ca_fails_with_hint(in_tmp, capsys) -> None:
    assert main(["pki", "issue", "server", "s"]) == 1
    err = capsys.readouterr().err
    assert "pki/ca.crt" in err and "trivpn pki init pki" in err


@pytest.mark.parametrize("name", ["../escape", "ca"])
def test_issue_refuses_unusable_name(in_tmp, capsys, name) -> None:
    assert main(["pki", "init", "pki"]) == 0
    assert main(["pki", "issue", "client", name]) == 1
    assert "trivpn pki: error:" in capsys.readouterr().err
    assert not (in_tmp / "escape.crt").exists()


@pytest.mark.parametrize("kind", ["tls-crypt", "tls-auth"])
def test_genkey_writes_parseable_private_key_file(in_tmp, capsys, kind) -> None:
    assert main(["pki", "genkey", kind, "ta.key"]) == 0
    out = capsys.readouterr().out
    assert "ta.key" in out and kind in out
    parse_static_key((in_tmp / "ta.key").read_text())
    assert mode(in_tmp / "ta.key") == 0o600


def test_genkey_refuses_existing_file(in_tmp, capsys) -> None:
    (in_tmp / "ta.key").write_text("precious")
    assert main(["pki", "genkey", "tls-crypt", "ta.key"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (in_tmp / "ta.key").read_text() == "precious"


@pytest.mark.parametrize(
    "argv",
    [
        ["pki"],
        ["pki", "issue", "router", "x"],
        ["pki", "issue", "server", "x", "--days", "0"],
        ["pki", "issue", "server", "x", "--days", "soon"],
        ["pki", "init", "pki", "--key-type", "dsa"],
        ["pki", "genkey", "tls-crypt-v3", "k"],
    ],
)
def test_usage_errors_exit_2(in_tmp, argv) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert list(in_tmp.iterdir()) == []
