"""tls-crypt-v2 key files: ``trivpn pki genkey`` writes what ``openvpn --genkey`` writes, and
each reads the other's keys."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_openvpn
from trivpn.cli import main
from trivpn.pki.statickeys import (
    KeyFileError,
    generate_tls_crypt_v2_client_key,
    generate_tls_crypt_v2_server_key,
    parse_tls_crypt_v2_client_key,
    parse_tls_crypt_v2_server_key,
)
from trivpn.protocol.tlscryptv2 import timestamp_metadata


def _openvpn(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_openvpn(), *args], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=20)


def test_server_key_file_has_openvpns_pem_name_and_128_bytes():
    text = generate_tls_crypt_v2_server_key()
    assert text.startswith("-----BEGIN OpenVPN tls-crypt-v2 server key-----\n")
    assert text.endswith("-----END OpenVPN tls-crypt-v2 server key-----\n")
    assert all(len(line) <= 64 for line in text.splitlines()[1:-1])
    parse_tls_crypt_v2_server_key(text)


def test_client_key_carries_its_creation_time_unless_user_metadata_is_given():
    server_text = generate_tls_crypt_v2_server_key()
    server = parse_tls_crypt_v2_server_key(server_text)
    stamped = parse_tls_crypt_v2_client_key(
        generate_tls_crypt_v2_client_key(server_text, unix_now=1_800_000_000))
    assert server.unwrap_client_key(stamped.wkc).metadata == timestamp_metadata(1_800_000_000)
    user = parse_tls_crypt_v2_client_key(generate_tls_crypt_v2_client_key(
        server_text, unix_now=0, user_metadata=b"alice"))
    unwrapped = server.unwrap_client_key(user.wkc)
    assert unwrapped.metadata == b"\x00alice" and unwrapped.key == user.key


def test_metadata_longer_than_openvpn_allows_is_refused():
    with pytest.raises(KeyFileError, match="metadata too long"):
        generate_tls_crypt_v2_client_key(generate_tls_crypt_v2_server_key(), unix_now=0,
                                         user_metadata=b"x" * 734)


def test_a_static_key_is_not_a_tls_crypt_v2_key():
    with pytest.raises(KeyFileError):
        parse_tls_crypt_v2_server_key("-----BEGIN OpenVPN Static key V1-----\n00\n"
                                      "-----END OpenVPN Static key V1-----\n")


def test_pki_genkey_writes_both_kinds_mode_0600(tmp_path: Path):
    assert main(["pki", "genkey", "tls-crypt-v2-server", str(tmp_path / "s.key")]) == 0
    assert main(["pki", "genkey", "tls-crypt-v2-client", str(tmp_path / "c.key"),
                     "--server-key", str(tmp_path / "s.key"), "--metadata", "YWxpY2U="]) == 0
    for name in ("s.key", "c.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    server = parse_tls_crypt_v2_server_key((tmp_path / "s.key").read_text())
    client = parse_tls_crypt_v2_client_key((tmp_path / "c.key").read_text())
    assert server.unwrap_client_key(client.wkc).metadata == b"\x00alice"


def test_pki_genkey_client_needs_the_server_key(tmp_path: Path):
    assert main(["pki", "genkey", "tls-crypt-v2-client", str(tmp_path / "c.key")]) != 0
    assert not (tmp_path / "c.key").exists()


def test_openvpn_wraps_client_keys_with_our_server_key_and_we_unwrap_them(tmp_path: Path):
    (tmp_path / "s.key").write_text(generate_tls_crypt_v2_server_key())
    result = _openvpn(tmp_path, "--tls-crypt-v2", "s.key", "--genkey", "tls-crypt-v2-client",
                      "c.key", "Ym9i")
    assert result.returncode == 0, result.stdout + result.stderr
    server = parse_tls_crypt_v2_server_key((tmp_path / "s.key").read_text())
    client = parse_tls_crypt_v2_client_key((tmp_path / "c.key").read_text())
    assert server.unwrap_client_key(client.wkc).metadata == b"\x00bob"


def test_we_wrap_client_keys_with_openvpns_server_key(tmp_path: Path):
    result = _openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "s.key")
    assert result.returncode == 0, result.stdout + result.stderr
    server_text = (tmp_path / "s.key").read_text()
    client = parse_tls_crypt_v2_client_key(
        generate_tls_crypt_v2_client_key(server_text, unix_now=1_800_000_000))
    unwrapped = parse_tls_crypt_v2_server_key(server_text).unwrap_client_key(client.wkc)
    assert unwrapped.key == client.key
