"""Referenced files: read with read_files=True, only resolved with read_files=False."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.config.helpers import FIXTURES
from trivpn.config import ConfigError, FileSource, load_config


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    for name in ("server.conf", "ca.crt", "server.crt", "server.key", "dh1024.pem"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_missing_file_names_config_line_and_file(server_dir: Path) -> None:
    (server_dir / "server.key").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(server_dir / "server.conf")
    err = info.value
    assert (err.path, err.line) == (server_dir / "server.conf", 7)
    assert err.reason == (f"cannot read key file '{server_dir / 'server.key'}': "
                          "No such file or directory")


def test_read_files_false_only_resolves(server_dir: Path) -> None:
    (server_dir / "server.key").unlink()
    o = load_config(server_dir / "server.conf", read_files=False)
    assert o.key is not None
    assert (o.key.path, o.key.text) == (server_dir / "server.key", None)


def test_read_text_later_raises_the_same_located_error(server_dir: Path) -> None:
    (server_dir / "dh1024.pem").unlink()
    o = load_config(server_dir / "server.conf", read_files=False)
    assert isinstance(o.dh, FileSource)
    with pytest.raises(ConfigError) as info:
        o.dh.read_text()
    assert str(info.value) == (f"{server_dir / 'server.conf'}:8: cannot read dh file "
                               f"'{server_dir / 'dh1024.pem'}': No such file or directory")


def test_directory_instead_of_file_is_unreadable(server_dir: Path) -> None:
    (server_dir / "ca.crt").unlink()
    (server_dir / "ca.crt").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(server_dir / "server.conf")
    assert info.value.line == 5
    assert info.value.reason.startswith(f"cannot read ca file '{server_dir / 'ca.crt'}': ")


def test_every_referenced_file_is_read(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "ta.key").write_text("tls-auth key text\n")
    (tmp_path / "creds.txt").write_text("alice\npassword\n")
    (tmp_path / "extra.crt").write_text("extra\n")
    (tmp_path / "crl.pem").write_text("crl\n")
    (tmp_path / "client.conf").write_text(
        "client\ndev tun\nremote vpn.example.com\nca ca.crt\ncert client.crt\nkey client.key\n"
        "tls-auth ta.key 1\nauth-user-pass creds.txt\nextra-certs extra.crt\n"
        "crl-verify crl.pem\nremote-cert-tls server\n")
    o = load_config(tmp_path / "client.conf")
    assert [(s.directive, s.text is not None) for s in o.file_sources()] == [
        ("ca", True), ("cert", True), ("key", True), ("extra-certs", True),
        ("crl-verify", True), ("tls-auth", True), ("auth-user-pass", True)]
    assert isinstance(o.auth_user_pass, FileSource)
    assert o.auth_user_pass.text == "alice\npassword\n"
    assert "password" not in repr(o)


def test_dh_none_reads_nothing(tmp_path: Path) -> None:
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "s.conf").write_text("dev tun\nserver 198.18.8.0 255.255.255.0\nca ca.crt\n"
                                     "cert server.crt\nkey server.key\ndh none\n")
    assert load_config(tmp_path / "s.conf").dh == "none"


def test_missing_file_in_included_config_names_the_include(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "keys.conf").write_text("cert client.crt\nkey client.key\n")
    (tmp_path / "c.conf").write_text("client\ndev tun\nremote a\nca ca.crt\nconfig keys.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.conf")
    assert (info.value.path, info.value.line) == (tmp_path / "keys.conf", 2)
