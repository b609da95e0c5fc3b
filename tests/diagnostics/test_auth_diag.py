"""What each AUTH_FAILED form means for a config (no network: the wire forms themselves are
checked against a real openvpn in tests/diagnostics/test_scenarios_auth.py)."""

from __future__ import annotations

from pathlib import Path

from trivpn.config import load_config
from trivpn.config.options import Options
from trivpn.diagnostics.auth_diag import diagnose_auth_failed


def _options(tmp_path: Path, *, creds: bool) -> Options:
    for name in ("ca.crt", "c.crt", "c.key"):
        (tmp_path / name).write_text("x\n")
    lines = ["client", "dev tun", "remote 198.18.0.1", "ca ca.crt", "cert c.crt", "key c.key"]
    if creds:
        (tmp_path / "up.txt").write_text("alice\nsecret\n")
        lines.append("auth-user-pass up.txt")
    (tmp_path / "c.conf").write_text("\n".join(lines) + "\n")
    return load_config(tmp_path / "c.conf")


def test_temporary_auth_failure_says_retry_later_with_the_backoff(tmp_path: Path) -> None:
    diag = diagnose_auth_failed(_options(tmp_path, creds=True),
                                "TEMP[backoff 30]:backend down")

    assert diag.cause == "auth_temp"
    assert diag.evidence["reason"] == "backend down"
    assert "after 30 s" in diag.explanation
    assert "not a wrong password" in diag.explanation


def test_wrong_password_fix_points_at_the_auth_user_pass_line(tmp_path: Path) -> None:
    diag = diagnose_auth_failed(_options(tmp_path, creds=True), None)

    assert diag.cause == "auth_failed"
    assert "c.conf line 7" in diag.fix


def test_challenge_without_echo_flag_says_not_echoed(tmp_path: Path) -> None:
    diag = diagnose_auth_failed(_options(tmp_path, creds=True), "CRV1:R:abc:dXNlcg==:PIN?")

    assert diag.cause == "auth_challenge"
    assert diag.evidence["challenge"] == "PIN?"
    assert "is not to be echoed" in diag.explanation
