"""``trivpn pki list | revoke | renew | crl | expiring`` on trivpn's own PKI layout.

The same commands on a directory made by the real easy-rsa: tests/pki/test_easyrsa.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from trivpn.cli import main
from trivpn.pki.certs import create_ca, issue_cert, load_certificate
from trivpn.pki.errors import PkiError
from trivpn.pki.index import parse_index, serial_hex
from trivpn.pki.lifecycle import Lifecycle, open_pki
from trivpn.pki.store import PkiStore


def serial_of(path: Path) -> int:
    return load_certificate(path.read_text()).serial_number


def crl_at(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(path.read_bytes())


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    assert main(["pki", "init", str(root)]) == 0
    for kind, name in (("server", "server"), ("client", "alice"), ("client", "bob")):
        assert main(["pki", "issue", kind, name, "--dir", str(root)]) == 0
    return root


def index_of(root: Path) -> dict[str, str]:
    """CN → status letter of each index.txt line (the last line of a CN wins)."""
    return {e.common_name: e.status for e in parse_index((root / "index.txt").read_text())}


def test_init_creates_the_openssl_ca_database(tmp_path: Path) -> None:
    assert main(["pki", "init", str(tmp_path / "pki")]) == 0
    root = tmp_path / "pki"
    assert (root / "index.txt").read_text() == ""
    assert (root / "index.txt.attr").read_text() == "unique_subject = no\n"
    assert (root / "serial").read_text() == "01\n"


def test_issue_records_the_certificate_as_openssl_ca_does(pki: Path) -> None:
    serial = serial_of(pki / "issued" / "alice.crt")
    lines = [line for line in (pki / "index.txt").read_text().splitlines() if "/CN=alice" in line]
    assert len(lines) == 1
    status, expiry, revoked, serial_text, filename, subject = lines[0].split("\t")
    assert (status, revoked, serial_text, filename, subject) == \
        ("V", "", serial_hex(serial), "unknown", "/CN=alice")
    assert len(expiry) == 13 and expiry.endswith("Z")
    copy = pki / "certs_by_serial" / f"{serial_hex(serial)}.pem"
    assert copy.read_bytes() == (pki / "issued" / "alice.crt").read_bytes()


def test_list_shows_name_role_serial_and_status(pki: Path, capsys) -> None:
    assert main(["pki", "issue", "client", "soon", "--dir", str(pki), "--days", "10"]) == 0
    capsys.readouterr()
    assert main(["pki", "list", "--dir", str(pki), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"server", "alice", "bob", "soon"}
    assert rows["server"]["role"] == "server" and rows["alice"]["role"] == "client"
    assert rows["alice"]["status"] == "valid" and rows["soon"]["status"] == "expiring"
    assert rows["alice"]["serial"] == serial_hex(serial_of(pki / "issued" / "alice.crt"))
    assert main(["pki", "list", "--dir", str(pki)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "CN", "SERIAL", "ROLE", "NOT", "AFTER", "STATUS"]
    assert any(line.startswith("soon ") and line.endswith("expiring") for line in table)


def test_list_shows_expired_and_revoked(pki: Path) -> None:
    store = PkiStore(pki)
    ca = store.load_ca()
    past = datetime.now(UTC) - timedelta(days=2)
    store.save_issued("old", issue_cert(ca, "client", "old", not_before=past - timedelta(1),
                                        not_after=past))
    Lifecycle(store).revoke("bob")
    status = {c.common_name: c.status for c in Lifecycle(store).inventory()}
    assert status == {"server": "valid", "alice": "valid", "bob": "revoked", "old": "expired"}


@pytest.mark.directive("crl-verify")
def test_revoke_marks_the_index_moves_the_files_and_writes_the_crl(pki: Path, capsys) -> None:
    serial = serial_of(pki / "issued" / "bob.crt")
    sx = serial_hex(serial)
    assert main(["pki", "revoke", "bob", "--dir", str(pki), "--reason", "keyCompromise"]) == 0
    assert "management command 'kill bob'" in capsys.readouterr().out
    line = next(x for x in (pki / "index.txt").read_text().splitlines() if "/CN=bob" in x)
    assert line.split("\t")[0] == "R" and line.split("\t")[2].endswith("Z,keyCompromise")
    assert not (pki / "issued" / "bob.crt").exists()
    assert not (pki / "private" / "bob.key").exists()
    assert not (pki / "certs_by_serial" / f"{sx}.pem").exists()
    assert serial_of(pki / "revoked" / "certs_by_serial" / f"{sx}.crt") == serial
    assert (pki / "revoked" / "private_by_serial" / f"{sx}.key").stat().st_mode & 0o077 == 0
    crl = crl_at(pki / "crl.pem")
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    ca_key = load_certificate((pki / "ca.crt").read_text()).public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_key)
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=180)  # EASYRSA_CRL_DAYS
    assert crl.get_revoked_certificate_by_serial_number(serial_of(
        pki / "issued" / "alice.crt")) is None


def test_the_crl_next_update_is_the_operators_choice(pki: Path) -> None:
    assert main(["pki", "revoke", "bob", "--dir", str(pki), "--crl-days", "7"]) == 0
    crl = crl_at(pki / "crl.pem")
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)


def test_a_revoked_name_can_be_issued_again(pki: Path) -> None:
    assert main(["pki", "revoke", "bob", "--dir", str(pki)]) == 0
    assert main(["pki", "issue", "client", "bob", "--dir", str(pki)]) == 0
    statuses = [e.status for e in parse_index((pki / "index.txt").read_text())
                if e.common_name == "bob"]
    assert statuses == ["R", "V"]


def test_crl_re_signs_with_a_new_next_update_and_crl_number(pki: Path, capsys) -> None:
    assert main(["pki", "revoke", "bob", "--dir", str(pki), "--crl-days", "1"]) == 0
    first = crl_at(pki / "crl.pem")
    assert main(["pki", "crl", "--dir", str(pki)]) == 0
    assert "1 revoked" in capsys.readouterr().out
    second = crl_at(pki / "crl.pem")
    assert second.next_update_utc is not None and first.next_update_utc is not None
    assert second.next_update_utc - first.next_update_utc > timedelta(days=170)
    number = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    assert [r.serial_number for r in second] == [r.serial_number for r in first]


def test_renew_keeps_cn_role_and_key_type_with_a_new_key(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    assert main(["pki", "init", str(root), "--key-type", "rsa"]) == 0
    assert main(["pki", "issue", "client", "carol", "--dir", str(root), "--key-type", "rsa",
                 "--rsa-bits", "3072"]) == 0
    assert main(["pki", "issue", "server", "vpn", "--dir", str(root)]) == 0
    old = load_certificate((root / "issued" / "carol.crt").read_text())
    old_key = (root / "private" / "carol.key").read_bytes()
    assert main(["pki", "renew", "carol", "--dir", str(root), "--overlap-days", "3"]) == 0
    assert main(["pki", "renew", "vpn", "--dir", str(root)]) == 0
    new = load_certificate((root / "issued" / "carol.crt").read_text())
    assert new.subject == old.subject and new.serial_number != old.serial_number
    public = new.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    assert (root / "private" / "carol.key").read_bytes() != old_key  # a new key
    assert new.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    server = load_certificate((root / "issued" / "vpn.crt").read_text())
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # easy-rsa's renewed/ layout: the old files wait there until they are revoked
    assert serial_of(root / "renewed" / "issued" / "carol.crt") == old.serial_number
    assert (root / "renewed" / "private" / "carol.key").read_bytes() == old_key
    both = [c for c in Lifecycle(PkiStore(root)).inventory() if c.common_name == "carol"]
    assert sorted((c.current, c.status) for c in both) == [(False, "valid"), (True, "valid")]


def test_renew_keeps_the_whole_subject(pki: Path) -> None:
    store = PkiStore(pki)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "dora")])
    store.save_issued("dora", issue_cert(store.load_ca(), "client", "dora", subject=subject))
    assert main(["pki", "renew", "dora", "--dir", str(pki)]) == 0
    assert load_certificate((pki / "issued" / "dora.crt").read_text()).subject == subject
    lines = (pki / "index.txt").read_text().splitlines()
    assert [line.split("\t")[5] for line in lines if "dora" in line] == ["/O=Example/CN=dora"] * 2


@pytest.mark.directive("crl-verify")
def test_the_old_certificate_is_revoked_once_the_overlap_ends(pki: Path) -> None:
    life = Lifecycle(PkiStore(pki))
    now = datetime.now(UTC)
    old = serial_of(pki / "issued" / "alice.crt")
    result = life.renew("alice", overlap_days=5, now=now)
    assert result.revoke_after is not None
    assert result.crl is None  # nothing revoked yet
    assert life.make_crl(now=now + timedelta(days=4)).superseded == ()
    assert crl_at(pki / "crl.pem").get_revoked_certificate_by_serial_number(old) is None
    done = life.make_crl(now=now + timedelta(days=5, seconds=1))
    assert done.superseded == (old,)
    entry = crl_at(pki / "crl.pem").get_revoked_certificate_by_serial_number(old)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.superseded
    sx = serial_hex(old)
    assert (pki / "revoked" / "certs_by_serial" / f"{sx}.crt").exists()
    assert (pki / "revoked" / "private_by_serial" / f"{sx}.key").exists()
    assert not (pki / "renewed" / "issued" / "alice.crt").exists()
    assert (pki / "renewed" / "trivpn-revoke-after").read_text() == ""
    assert index_of(pki)["alice"] == "V"  # the new one
    assert crl_at(pki / "crl.pem").get_revoked_certificate_by_serial_number(
        serial_of(pki / "issued" / "alice.crt")) is None


def test_renew_with_no_overlap_revokes_the_old_certificate_at_once(pki: Path) -> None:
    old = serial_of(pki / "issued" / "bob.crt")
    assert main(["pki", "renew", "bob", "--dir", str(pki), "--overlap-days", "0"]) == 0
    assert crl_at(pki / "crl.pem").get_revoked_certificate_by_serial_number(old) is not None
    assert (pki / "revoked" / "certs_by_serial" / f"{serial_hex(old)}.crt").exists()
    assert not (pki / "renewed" / "issued" / "bob.crt").exists()


def test_a_second_renewal_during_the_overlap_is_refused(pki: Path, capsys) -> None:
    assert main(["pki", "renew", "bob", "--dir", str(pki)]) == 0
    capsys.readouterr()
    assert main(["pki", "renew", "bob", "--dir", str(pki)]) == 1
    assert "a renewal of bob is still pending" in capsys.readouterr().err


def test_the_profile_exports_the_renewed_certificate(pki: Path, tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text("\n".join([
        "port 1194", "proto udp", "dev tun", f"ca {pki}/ca.crt", f"cert {pki}/issued/server.crt",
        f"key {pki}/private/server.key", "dh none", "topology subnet",
        "server 198.18.8.0 255.255.255.0"]) + "\n")
    out = tmp_path / "alice.ovpn"
    args = ["profile", "alice", "--server-config", str(conf), "--remote", "198.18.0.1",
            "--out", str(out)]
    assert main(args) == 0
    assert main(["pki", "renew", "alice", "--dir", str(pki)]) == 0
    assert main([*args, "--force"]) == 0
    renewed = (pki / "issued" / "alice.crt").read_text().strip()
    assert renewed in out.read_text()
    assert (pki / "private" / "alice.key").read_text().strip() in out.read_text()


def test_expiring_exits_non_zero_when_something_expires_soon(pki: Path, capsys) -> None:
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "30"]) == 0
    assert "nothing expires within 30 days" in capsys.readouterr().out
    assert main(["pki", "issue", "client", "temp", "--dir", str(pki), "--days", "10"]) == 0
    capsys.readouterr()
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "30"]) == 1
    assert capsys.readouterr().out.startswith("certificate temp: expires ")
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "5"]) == 0


def test_an_expired_current_certificate_counts_until_it_is_revoked(pki: Path, capsys) -> None:
    store = PkiStore(pki)
    past = datetime.now(UTC) - timedelta(days=2)
    store.save_issued("old", issue_cert(store.load_ca(), "client", "old",
                                        not_before=past - timedelta(1), not_after=past))
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "1"]) == 1
    out = capsys.readouterr().out
    assert "certificate old: expires" in out and out.rstrip().endswith("(EXPIRED)")
    assert main(["pki", "revoke", "old", "--dir", str(pki)]) == 0
    capsys.readouterr()
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "1"]) == 0


def test_expiring_counts_the_crl_and_the_ca_but_not_revoked_certificates(pki: Path,
                                                                         capsys) -> None:
    assert main(["pki", "issue", "client", "temp", "--dir", str(pki), "--days", "10"]) == 0
    assert main(["pki", "revoke", "temp", "--dir", str(pki), "--crl-days", "3"]) == 0
    capsys.readouterr()
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "5", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [x["what"] for x in found] == ["crl"]
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "4000", "--json"]) == 1
    kinds = {x["what"] for x in json.loads(capsys.readouterr().out)}
    assert kinds == {"crl", "ca", "certificate"}


def test_a_directory_of_an_older_trivpn_without_index_gets_one(pki: Path) -> None:
    for name in ("index.txt", "index.txt.attr", "serial"):
        (pki / name).unlink()
    life = Lifecycle(open_pki(pki))
    assert {c.common_name for c in life.inventory()} == {"server", "alice", "bob"}
    life.revoke("alice")
    assert index_of(pki) == {"server": "V", "alice": "R", "bob": "V"}
    assert (pki / "index.txt.attr").exists() and (pki / "serial").exists()


# --- bad input ---------------------------------------------------------------------------------

def test_an_unknown_name_is_refused_and_the_issued_names_listed(pki: Path, capsys) -> None:
    assert main(["pki", "revoke", "mallory", "--dir", str(pki)]) == 1
    assert "unknown name 'mallory'" in capsys.readouterr().err
    assert main(["pki", "renew", "mallory", "--dir", str(pki)]) == 1
    assert "(issued: alice, bob, server)" in capsys.readouterr().err


def test_revoking_twice_says_already_revoked(pki: Path, capsys) -> None:
    assert main(["pki", "revoke", "bob", "--dir", str(pki)]) == 0
    before = (pki / "index.txt").read_text()
    assert main(["pki", "revoke", "bob", "--dir", str(pki)]) == 1
    assert "bob is already revoked" in capsys.readouterr().err
    assert (pki / "index.txt").read_text() == before


@pytest.mark.parametrize("action", [["list"], ["revoke", "bob"], ["crl"], ["expiring"],
                                    ["renew", "bob"]])
def test_a_directory_that_is_not_a_pki_is_named(tmp_path: Path, capsys, action) -> None:
    (tmp_path / "notes").mkdir()
    assert main(["pki", *action, "--dir", str(tmp_path / "notes")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'}: not a PKI directory: no ca.crt" in err


def test_a_malformed_index_line_is_named(pki: Path, capsys) -> None:
    with (pki / "index.txt").open("a") as index:
        index.write("V\tgarbage\n")
    assert main(["pki", "list", "--dir", str(pki)]) == 1
    assert f"{pki / 'index.txt'}:4: expected 6 tab-separated fields" in capsys.readouterr().err


def _encrypted_pki(root: Path, passphrase: bytes) -> PkiStore:
    store = PkiStore(root)
    ca = create_ca("locked CA")
    store.save_ca(ca)
    store.save_issued("dave", issue_cert(ca, "client", "dave"))
    (root / "private" / "ca.key").write_bytes(ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase)))
    return store


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_wrong_ca_passphrase_changes_nothing(tmp_path: Path, capsys) -> None:
    root = tmp_path / "pki"
    _encrypted_pki(root, b"right horse")
    before = snapshot(root)
    for action in (["revoke", "dave"], ["renew", "dave"], ["crl"]):
        assert main(["pki", *action, "--dir", str(root), "--passin", "pass:wrong"]) == 1
        err = capsys.readouterr().err
        assert f"{root / 'private' / 'ca.key'}: wrong passphrase" in err, err
        assert snapshot(root) == before


def test_an_encrypted_ca_key_needs_passin_when_there_is_no_terminal(
        tmp_path: Path, capsys, monkeypatch) -> None:
    root = tmp_path / "pki"
    _encrypted_pki(root, b"right horse")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["pki", "crl", "--dir", str(root)]) == 1
    assert "give the CA key's passphrase with --passin" in capsys.readouterr().err
    (tmp_path / "pass").write_text("right horse\n")
    monkeypatch.setenv("CA_PASS", "right horse")
    assert main(["pki", "revoke", "dave", "--dir", str(root), "--passin",
                 f"file:{tmp_path / 'pass'}"]) == 0
    assert main(["pki", "crl", "--dir", str(root), "--passin", "env:CA_PASS"]) == 0
    assert main(["pki", "crl", "--dir", str(root), "--passin", "env:NOT_SET_HERE"]) == 1
    assert "environment variable is not set" in capsys.readouterr().err


def test_an_encrypted_ca_key_is_asked_for_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "pki"
    _encrypted_pki(root, b"right horse")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "right horse"

    monkeypatch.setattr("getpass.getpass", ask)
    assert main(["pki", "revoke", "dave", "--dir", str(root)]) == 0
    assert asked == ["CA key passphrase: "]


def test_nothing_is_half_written_when_a_write_fails(pki: Path, monkeypatch) -> None:
    before = snapshot(pki)

    def fail(*args: object, **kwargs: object) -> None:
        raise PkiError("disk full", "test")

    monkeypatch.setattr("trivpn.pki.lifecycle.write_file", fail)
    with pytest.raises(PkiError):
        Lifecycle(PkiStore(pki)).revoke("bob")
    assert snapshot(pki) == before
    assert not list(pki.rglob(".*.tmp"))
