"""``trivpn pki genkey auth-token`` writes what ``auth-gen-token-secret`` reads."""

from __future__ import annotations

from pathlib import Path

from trivpn.pki.statickeys import write_auth_token_key
from trivpn.protocol.authtoken import KEY_LEN, parse_secret_pem


def test_genkey_auth_token_writes_a_private_openvpn_auth_token_key(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    write_auth_token_key(path)
    assert len(parse_secret_pem(path.read_text())) == KEY_LEN
    assert path.stat().st_mode & 0o777 == 0o600
