"""``trivpn pki`` on a PKI made by Debian's real easy-rsa 3, and easy-rsa on what trivpn wrote.

Every claim the docs make about easy-rsa (its file layout on revoke and renew, index.txt, that
its renew makes a new key) is checked here against ``/usr/share/easy-rsa/easyrsa``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import require_easyrsa
from trivpn.cli import main
from trivpn.pki.certs import certificate_pem, load_certificate
from trivpn.pki.crl import DEFAULT_CRL_DAYS
from trivpn.pki.index import parse_index, serial_hex
from trivpn.pki.lifecycle import Lifecycle, open_pki


def easyrsa(pki: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    pki.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EASYRSA_BATCH": "1", "EASYRSA_PKI": str(pki), **(env or {})}
    done = subprocess.run([require_easyrsa(), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=pki.parent)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """init-pki, build-ca nopass, a server, a serverClient and two clients, by easy-rsa."""
    pki = tmp_path_factory.mktemp("easyrsa") / "pki"
    easyrsa(pki, "init-pki")
    easyrsa(pki, "build-ca", "nopass")
    easyrsa(pki, "build-server-full", "server", "nopass")
    easyrsa(pki, "build-serverClient-full", "both", "nopass")
    easyrsa(pki, "build-client-full", "alice", "nopass")
    easyrsa(pki, "build-client-full", "bob", "nopass")
    return pki


@pytest.fixture
def pki(template: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "work" / "pki"
    shutil.copytree(template, copy, symlinks=True)
    yield copy


def serial_of(path: Path) -> int:
    return load_certificate(path.read_text()).serial_number


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".old") and p.name != "crl.pem"}


def test_trivpn_lists_the_certificates_easyrsa_issued(pki: Path) -> None:
    certs = {c.name: c for c in Lifecycle(open_pki(pki)).inventory()}
    assert set(certs) == {"server", "both", "alice", "bob"}
    assert {n: c.role for n, c in certs.items()} == {
        "server": "server", "both": "server+client", "alice": "client", "bob": "client"}
    assert all(c.status == "valid" and c.current for c in certs.values())
    assert certs["alice"].serial == serial_of(pki / "issued" / "alice.crt")
    # an easy-rsa working directory (holding pki/) is found too
    assert open_pki(pki.parent).root == pki


def test_trivpn_revoke_leaves_the_files_easyrsa_revoke_leaves(pki: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs" / "pki"
    shutil.copytree(pki, theirs, symlinks=True)
    easyrsa(theirs, "revoke", "alice", "keyCompromise")
    assert main(["pki", "revoke", "alice", "--dir", str(pki), "--reason", "keyCompromise"]) == 0
    assert files(pki) == files(theirs)
    ours_index = parse_index((pki / "index.txt").read_text())
    theirs_index = parse_index((theirs / "index.txt").read_text())
    strip = [(e.status, e.expires, e.reason, e.serial, e.filename, e.subject)
             for e in theirs_index]
    assert [(e.status, e.expires, e.reason, e.serial, e.filename, e.subject)
            for e in ours_index] == strip
    # byte for byte apart from the revocation time
    for ours, their in zip((pki / "index.txt").read_text().splitlines(),
                           (theirs / "index.txt").read_text().splitlines(), strict=True):
        o, t = ours.split("\t"), their.split("\t")
        assert o[:2] + o[3:] == t[:2] + t[3:]
        assert len(o[2]) == len(t[2])


@pytest.mark.directive("crl-verify")
def test_easyrsa_carries_on_after_trivpn_revoked(pki: Path) -> None:
    alice = serial_of(pki / "issued" / "alice.crt")
    bob = serial_of(pki / "issued" / "bob.crt")
    assert main(["pki", "revoke", "alice", "--dir", str(pki)]) == 0
    crl_text = openssl("crl", "-in", str(pki / "crl.pem"), "-noout", "-text")
    assert f"Serial Number: {serial_hex(alice)}" in crl_text
    assert "error" in openssl("verify", "-crl_check", "-CAfile", str(pki / "ca.crt"),
                              "-CRLfile", str(pki / "crl.pem"),
                              str(pki / "revoked" / "certs_by_serial" /
                                  f"{serial_hex(alice)}.crt")).lower()
    easyrsa(pki, "revoke", "bob")
    easyrsa(pki, "gen-crl")
    easyrsa(pki, "update-db")  # openssl ca -updatedb parses and rewrites index.txt
    crl_text = openssl("crl", "-in", str(pki / "crl.pem"), "-noout", "-text")
    assert f"Serial Number: {serial_hex(alice)}" in crl_text
    assert f"Serial Number: {serial_hex(bob)}" in crl_text
    # easy-rsa re-issues the revoked name; trivpn lists old and new
    easyrsa(pki, "build-client-full", "alice", "nopass")
    alice_rows = sorted(c.status for c in Lifecycle(open_pki(pki)).inventory()
                        if c.common_name == "alice")
    assert alice_rows == ["revoked", "valid"]


def test_trivpn_re_signs_the_crl_easyrsa_made(pki: Path) -> None:
    easyrsa(pki, "revoke", "bob", "superseded")
    easyrsa(pki, "gen-crl")
    theirs = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert theirs.next_update_utc is not None
    # easy-rsa's default CRL validity (EASYRSA_CRL_DAYS), which is trivpn's default too
    assert theirs.next_update_utc - theirs.last_update_utc == timedelta(days=DEFAULT_CRL_DAYS)
    bob = serial_of(pki / "revoked" / "certs_by_serial" /
                    f"{serial_hex(serial_of_index(pki, 'bob'))}.crt")
    assert main(["pki", "crl", "--dir", str(pki), "--crl-days", "30"]) == 0
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(bob)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.superseded
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "31"]) == 1
    assert main(["pki", "expiring", "--dir", str(pki), "--days", "29"]) == 0


def serial_of_index(pki: Path, cn: str) -> int:
    return next(e.serial for e in parse_index((pki / "index.txt").read_text())
                if e.common_name == cn)


def test_easyrsa_revokes_a_certificate_trivpn_issued(pki: Path) -> None:
    assert main(["pki", "issue", "client", "carol", "--dir", str(pki)]) == 0
    carol = serial_of(pki / "issued" / "carol.crt")
    assert (pki / "certs_by_serial" / f"{serial_hex(carol)}.pem").exists()
    done = easyrsa(pki, "revoke", "carol")
    assert "Failed to remove" not in done.stdout + done.stderr
    assert (pki / "revoked" / "certs_by_serial" / f"{serial_hex(carol)}.crt").exists()
    easyrsa(pki, "gen-crl")
    assert f"Serial Number: {serial_hex(carol)}" in openssl(
        "crl", "-in", str(pki / "crl.pem"), "-noout", "-text")


def test_easyrsa_renew_makes_a_new_key_and_parks_the_old_files_in_renewed(
        pki: Path) -> None:
    """What trivpn's renew copies: easy-rsa 3.1's renew (within EASYRSA_CERT_RENEW days)."""
    easyrsa(pki, "build-client-full", "short", "nopass", env={"EASYRSA_CERT_EXPIRE": "10"})
    old_key = (pki / "private" / "short.key").read_bytes()
    old_serial = serial_of(pki / "issued" / "short.crt")
    easyrsa(pki, "renew", "short", "nopass")
    assert (pki / "private" / "short.key").read_bytes() != old_key
    assert (pki / "renewed" / "private" / "short.key").read_bytes() == old_key
    assert serial_of(pki / "renewed" / "issued" / "short.crt") == old_serial
    assert (pki / "renewed" / "reqs" / "short.req").exists()
    # easy-rsa refuses to renew a certificate that expires in more than 30 days
    refused = easyrsa(pki, "renew", "alice", "nopass", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Renewal not allowed" in said
    assert "expires in more than 30 days" in said


def test_easyrsa_revoke_renewed_finishes_a_trivpn_renewal(pki: Path) -> None:
    old = serial_of(pki / "issued" / "alice.crt")
    assert main(["pki", "renew", "alice", "--dir", str(pki), "--overlap-days", "7"]) == 0
    for sub, ext in (("issued", "crt"), ("private", "key"), ("reqs", "req")):
        assert (pki / "renewed" / sub / f"alice.{ext}").exists()
    easyrsa(pki, "revoke-renewed", "alice")
    assert (pki / "revoked" / "certs_by_serial" / f"{serial_hex(old)}.crt").exists()
    # trivpn's pending revocation finds it done and drops it
    result = Lifecycle(open_pki(pki)).make_crl()
    assert result.superseded == ()
    assert (pki / "renewed" / "trivpn-revoke-after").read_text() == ""
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old) is not None
    easyrsa(pki, "gen-crl")


def test_trivpn_renew_with_no_overlap_moves_files_as_easyrsa_revoke_renewed(
        pki: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs" / "pki"
    shutil.copytree(pki, theirs, symlinks=True)
    # EASYRSA_CERT_RENEW: let easy-rsa renew a fresh certificate
    easyrsa(theirs, "renew", "bob", "nopass", env={"EASYRSA_CERT_RENEW": "2000"})
    easyrsa(theirs, "revoke-renewed", "bob", "superseded")
    assert main(["pki", "renew", "bob", "--dir", str(pki), "--overlap-days", "0"]) == 0
    old = serial_of_index(pki, "bob")
    ours = {f.replace(serial_hex(old), "OLD") for f in files(pki)}
    their_old = serial_of_index(theirs, "bob")
    their_files = {f.replace(serial_hex(their_old), "OLD") for f in files(theirs)}
    new_ours = {f for f in ours if f.startswith("certs_by_serial/")}
    new_theirs = {f for f in their_files if f.startswith("certs_by_serial/")}
    ours -= new_ours | {"renewed/trivpn-revoke-after"}
    their_files -= new_theirs
    assert ours == their_files
    assert len(new_ours) == len(new_theirs)
    easyrsa(pki, "gen-crl")


def test_an_encrypted_easyrsa_ca_key_takes_a_passphrase(tmp_path: Path, capsys) -> None:
    pki = tmp_path / "locked" / "pki"
    easyrsa(pki, "init-pki")
    easyrsa(pki, "--passout=pass:ca secret", "--passin=pass:ca secret", "build-ca")
    assert "ENCRYPTED" in (pki / "private" / "ca.key").read_text()
    easyrsa(pki, "--passin=pass:ca secret", "build-client-full", "erin", "nopass")
    before = (pki / "index.txt").read_text()
    assert main(["pki", "revoke", "erin", "--dir", str(pki), "--passin", "pass:nope"]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert (pki / "index.txt").read_text() == before and (pki / "issued" / "erin.crt").exists()
    assert main(["pki", "revoke", "erin", "--dir", str(pki), "--passin",
                 "pass:ca secret"]) == 0
    easyrsa(pki, "--passin=pass:ca secret", "gen-crl")
    easyrsa(pki, "--passin=pass:ca secret", "build-client-full", "erin", "nopass")
    # trivpn profile exports a certificate easy-rsa issued without the CA passphrase
    easyrsa(pki, "--passin=pass:ca secret", "build-server-full", "server", "nopass")
    conf = tmp_path / "server.conf"
    conf.write_text(f"port 1194\nproto udp\ndev tun\nca {pki}/ca.crt\n"
                    f"cert {pki}/issued/server.crt\nkey {pki}/private/server.key\ndh none\n"
                    "topology subnet\nserver 198.18.8.0 255.255.255.0\n")
    out = tmp_path / "erin.ovpn"
    assert main(["profile", "erin", "--server-config", str(conf), "--remote", "198.18.0.1",
                 "--out", str(out)]) == 0
    erin = certificate_pem(load_certificate((pki / "issued" / "erin.crt").read_text()))
    assert erin.decode().strip() in out.read_text()
