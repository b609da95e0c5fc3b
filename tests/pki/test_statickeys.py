"""Static key files (tls-auth / tls-crypt): ours parse back and OpenVPN reads them, and
OpenVPN's parse with ours."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_openvpn
from trivpn.pki.errors import AlreadyExistsError
from trivpn.pki.statickeys import generate_static_key, write_static_key
from trivpn.protocol.statickey import format_static_key, parse_static_key


def test_written_key_parses_back(tmp_path) -> None:
    key = generate_static_key()
    path = tmp_path / "ta.key"
    write_static_key(path, key)
    assert parse_static_key(path.read_text()) == key


def test_generated_keys_differ() -> None:
    assert generate_static_key() != generate_static_key()


def test_key_file_is_0600(tmp_path) -> None:
    path = tmp_path / "ta.key"
    write_static_key(path, generate_static_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_key_file_is_kept_unless_forced(tmp_path) -> None:
    path = tmp_path / "ta.key"
    first, second = generate_static_key(), generate_static_key()
    write_static_key(path, first)
    with pytest.raises(AlreadyExistsError):
        write_static_key(path, second)
    assert parse_static_key(path.read_text()) == first
    write_static_key(path, second, force=True)
    assert parse_static_key(path.read_text()) == second


def openvpn_key_slices(
    openvpn: str, path: Path, *direction: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, bytes]]:
    """Run OpenVPN's crypto self-test on ``--secret path [direction]`` and collect the key
    bytes it reports using (verb 7 prints them)."""
    result = subprocess.run(
        [openvpn, "--test-crypto", "--secret", str(path), *direction, "--cipher", "AES-256-CBC",
         "--auth", "SHA256", "--verb", "7"],
        check=False, capture_output=True, text=True, timeout=20,
    )
    found: dict[str, bytes] = {}
    pattern = r"(Outgoing|Incoming) Static Key Encryption: (CIPHER|HMAC) KEY: ([0-9a-f ]+)"
    for way, kind, hexed in re.findall(pattern, result.stdout):
        found[f"{way} {kind}"] = bytes.fromhex(hexed.replace(" ", ""))
    return result, found


def test_openvpn_accepts_our_key_and_uses_its_bytes(tmp_path) -> None:
    openvpn = require_openvpn()
    key = generate_static_key()
    path = tmp_path / "static.key"
    write_static_key(path, key)
    result, found = openvpn_key_slices(openvpn, path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # No key direction: key[0] both ways; AES-256 and HMAC-SHA256 take the first 32 bytes
    # of their 64-byte slot (docs/protocol.md §3.1).
    assert found == {
        "Outgoing CIPHER": key.cipher(0)[:32],
        "Outgoing HMAC": key.hmac(0)[:32],
        "Incoming CIPHER": key.cipher(0)[:32],
        "Incoming HMAC": key.hmac(0)[:32],
    }


def test_openvpn_finds_the_second_key_where_we_put_it(tmp_path) -> None:
    openvpn = require_openvpn()
    key = generate_static_key()
    path = tmp_path / "static.key"
    write_static_key(path, key)
    # With direction 1, key[1] is outgoing and key[0] incoming. (The self-test then fails,
    # since it decrypts with the other half, but only after loading and printing the keys.)
    _, found = openvpn_key_slices(openvpn, path, "1")
    assert found == {
        "Outgoing CIPHER": key.cipher(1)[:32],
        "Outgoing HMAC": key.hmac(1)[:32],
        "Incoming CIPHER": key.cipher(0)[:32],
        "Incoming HMAC": key.hmac(0)[:32],
    }


def test_openvpn_generated_key_parses(tmp_path) -> None:
    openvpn = require_openvpn()
    path = tmp_path / "openvpn.key"
    subprocess.run([openvpn, "--genkey", "secret", str(path)], check=True,
                   capture_output=True, timeout=20)
    text = path.read_text()
    key = parse_static_key(text, str(path))
    assert format_static_key(key) == text  # we write the very layout OpenVPN writes
    result, found = openvpn_key_slices(openvpn, path)
    assert result.returncode == 0
    assert found["Outgoing CIPHER"] == key.cipher(0)[:32]
    assert found["Outgoing HMAC"] == key.hmac(0)[:32]
