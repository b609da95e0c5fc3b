"""The on-disk PKI directory: easy-rsa layout, permissions, refusing to overwrite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trivpn.pki.certs import Credential, create_ca, issue_cert
from trivpn.pki.errors import AlreadyExistsError, PkiError
from trivpn.pki.store import PkiStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def ca() -> Credential:
    return create_ca()


def test_ca_is_written_in_easy_rsa_layout(tmp_path, ca) -> None:
    store = PkiStore(tmp_path / "pki")
    paths = store.save_ca(ca)
    assert paths.cert == tmp_path / "pki" / "ca.crt"
    assert paths.key == tmp_path / "pki" / "private" / "ca.key"
    assert paths.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_issued_files_are_in_easy_rsa_layout(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    paths = store.save_issued("server1", issue_cert(ca, "server", "server1"))
    assert paths.cert == tmp_path / "issued" / "server1.crt"
    assert paths.key == tmp_path / "private" / "server1.key"


def test_private_files_are_0600_and_private_dir_0700_even_with_umask_0(tmp_path, ca) -> None:
    store = PkiStore(tmp_path / "pki")
    old = os.umask(0)
    try:
        ca_paths = store.save_ca(ca)
        leaf_paths = store.save_issued("alice", issue_cert(ca, "client", "alice"))
    finally:
        os.umask(old)
    assert mode(ca_paths.key) == 0o600
    assert mode(leaf_paths.key) == 0o600
    assert mode(tmp_path / "pki" / "private") == 0o700
    assert mode(ca_paths.cert) == 0o644
    assert mode(leaf_paths.cert) == 0o644


def test_loaded_ca_is_the_saved_ca(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    store.save_ca(ca)
    loaded = store.load_ca()
    assert loaded.cert == ca.cert
    assert loaded.key.public_key() == ca.key.public_key()


def test_loaded_ca_can_issue(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    store.save_ca(ca)
    leaf = issue_cert(store.load_ca(), "client", "bob")
    leaf.cert.verify_directly_issued_by(ca.cert)


def test_issued_credential_loads_back(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    leaf = issue_cert(ca, "client", "bob")
    store.save_issued("bob", leaf)
    assert store.load_issued("bob").cert == leaf.cert


@pytest.mark.parametrize("existing", ["ca.crt", "private/ca.key"])
def test_existing_ca_is_not_overwritten(tmp_path, ca, existing) -> None:
    (tmp_path / "private").mkdir()
    (tmp_path / existing).write_text("keep me")
    with pytest.raises(AlreadyExistsError) as caught:
        PkiStore(tmp_path).save_ca(ca)
    assert caught.value.where == str(tmp_path / existing)
    assert (tmp_path / existing).read_text() == "keep me"


def test_forced_ca_replaces_the_old_one(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    store.save_ca(create_ca())
    store.save_ca(ca, force=True)
    assert store.load_ca().cert == ca.cert
    assert mode(store.ca_key_path) == 0o600


def test_existing_name_is_not_overwritten(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    first = issue_cert(ca, "client", "alice")
    store.save_issued("alice", first)
    with pytest.raises(AlreadyExistsError, match="refusing to overwrite"):
        store.save_issued("alice", issue_cert(ca, "client", "alice"))
    assert store.load_issued("alice").cert == first.cert


def test_forced_name_is_replaced(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    store.save_issued("alice", issue_cert(ca, "client", "alice"))
    second = issue_cert(ca, "client", "alice")
    store.save_issued("alice", second, force=True)
    assert store.load_issued("alice").cert == second.cert
    assert mode(store.key_path("alice")) == 0o600
    assert sorted(p.name for p in (tmp_path / "private").iterdir()) == ["alice.key"]


def test_missing_ca_says_how_to_create_one(tmp_path) -> None:
    with pytest.raises(PkiError, match="trivpn pki init") as caught:
        PkiStore(tmp_path).load_ca()
    assert caught.value.where == str(tmp_path / "ca.crt")


def test_ca_with_someone_elses_key_is_refused(tmp_path, ca) -> None:
    store = PkiStore(tmp_path)
    store.save_ca(ca)
    other = PkiStore(tmp_path / "other")
    other.save_ca(create_ca())
    store.ca_key_path.write_bytes(other.ca_key_path.read_bytes())
    with pytest.raises(PkiError, match="does not match") as caught:
        store.load_ca()
    assert caught.value.where == str(store.ca_key_path)


@pytest.mark.parametrize(
    "name", ["", "../evil", "a/b", ".hidden", "-flag", "ca", "CA", "x" * 65, "sp ace"]
)
def test_unusable_names_are_refused(tmp_path, ca, name) -> None:
    with pytest.raises(PkiError):
        PkiStore(tmp_path).cert_path(name)
