"""``trivpn check`` on static-key configs: the role, the key and no TLS sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import write_pki
from trivpn.cli import main

STATIC = ("dev tun\nsecret static.key 1\ncipher AES-256-CBC\nremote 198.18.0.1 1194\n"
          "ifconfig 198.18.9.2 198.18.9.1\nlink-mtu 1400\n")


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
           *args: str) -> tuple[int, str]:
    write_pki(tmp_path)
    conf = tmp_path / "s.conf"
    conf.write_text(text)
    code = main(["check", str(conf), *args])
    return code, capsys.readouterr().out


@pytest.mark.directive("secret")
def test_check_names_static_key_mode_and_its_key(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(tmp_path, capsys, STATIC)
    assert code == 0, out
    assert "Role:         static-key peer-to-peer, no TLS (connects to its remote" in out
    assert "  secret:     " in out and "key direction 1" in out
    assert "reneg-sec" not in out and "peer cert" not in out


@pytest.mark.directive("secret", "link-mtu")
def test_check_json_of_a_waiting_static_key_side(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    text = STATIC.replace("remote 198.18.0.1 1194\n", "")
    code, out = _check(tmp_path, capsys, text, "--json")
    assert code == 0, out
    plan: dict[str, Any] = json.loads(out)["plan"]
    assert plan["static_key"] is True and plan["tls_role"] == "server"
    assert plan["verification"]["static_key"]["cipher"] == "AES-256-CBC"
    assert plan["device"]["mtu"] == 1348
