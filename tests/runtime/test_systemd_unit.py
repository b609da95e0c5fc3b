"""The systemd unit template parses, and has the sections and hardening the docs promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "docs" / "systemd" / "trivpn@.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (systemd unit syntax: ``[Section]``, ``Key=value``, ``#``)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key, f"line {number}: not Key=value: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_unit_has_the_expected_sections_and_keys():
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Type"] == ["simple"]
    assert service["ExecStart"] == ["/usr/local/bin/trivpn run /etc/trivpn/%i.conf"]
    assert service["Restart"] == ["on-failure"]
    assert set(service["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"}
    assert service["DeviceAllow"][0].split()[0] == "/dev/net/tun"
    assert service["ProtectSystem"] == ["strict"]
    writable = service["ReadWritePaths"][0].split()
    assert "/run/trivpn" in writable and "/var/lib/trivpn" in writable
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (the structural test still runs)")
    instance = tmp_path / "trivpn@test.service"
    instance.write_text(UNIT.read_text())
    done = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True,
                          text=True, timeout=30, check=False)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and "/usr/local/bin/trivpn" not in line]
    assert not problems, problems
