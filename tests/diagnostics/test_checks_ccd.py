"""server.ccd: the doctor reads the client-config-dir as the server would."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.diagnostics.doctorkit import by_id, context, write_config
from trivpn.diagnostics.checks_ccd import CHECKS
from trivpn.diagnostics.model import CheckResult

CCD = by_id(CHECKS, "server.ccd")
BASE = ("dev tun\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n"
        "server 198.18.8.0 255.255.255.0\ntopology subnet\nclient-config-dir ccd\n")


def _run(tmp_path: Path, files: dict[str, str], extra: str = "") -> CheckResult:
    (tmp_path / "ccd").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "ccd" / name).write_text(text)
    ctx = context(write_config(tmp_path, BASE + extra))
    return trio.run(CCD.run, ctx)


def test_clean_directory_is_ok(tmp_path: Path):
    result = _run(tmp_path, {"site": "iroute 198.18.30.0 255.255.255.0\n", ".swp": "junk\n"},
                  "route 198.18.30.0 255.255.255.0\n")
    assert result.status == "ok" and result.evidence["files"] == 1, result


def test_a_bad_file_fails_naming_its_file_and_line(tmp_path: Path):
    result = _run(tmp_path, {"alice": "\nifconfig-push 198.18.8.500 255.255.255.0\n"})
    assert result.status == "fail"
    assert result.evidence["errors"][0].endswith(
        "ccd/alice:2: 'ifconfig-push' expects an IPv4 address, got '198.18.8.500'")


def test_iroute_without_a_server_route_warns(tmp_path: Path):
    result = _run(tmp_path, {"site": "iroute 198.18.30.0 255.255.255.0\n"},
                  "route 198.18.31.0 255.255.255.0\n")
    assert result.status == "warn"
    assert "has no matching 'route 198.18.30.0 255.255.255.0'" in result.summary


def test_one_fixed_address_in_two_files_warns_and_outside_the_subnet_fails(tmp_path: Path):
    same = "ifconfig-push 198.18.8.50 255.255.255.0\n"
    result = _run(tmp_path, {"a": same, "b": same})
    assert result.status == "warn" and "also in a" in result.evidence["warnings"][0]
    result = _run(tmp_path, {"c": "ifconfig-push 198.18.9.50 255.255.255.0\n"})
    assert result.status == "fail" and "outside the server's subnet" in result.summary


def test_missing_directory_fails_and_no_directory_skips(tmp_path: Path):
    ctx = context(write_config(tmp_path, BASE))
    assert trio.run(CCD.run, ctx).status == "fail"
    ctx = context(write_config(tmp_path, BASE.replace("client-config-dir ccd\n", "")))
    assert trio.run(CCD.run, ctx).status == "skip"


def test_route_that_no_client_file_claims_warns(tmp_path: Path):
    result = _run(tmp_path, {"site": "iroute 198.18.30.0 255.255.255.0\n"},
                  "route 198.18.30.0 255.255.255.0\nroute 198.18.31.0 255.255.255.0\n")
    assert result.status == "warn"
    (warning,) = result.evidence["warnings"]
    assert "'route 198.18.31.0 255.255.255.0' has no 'iroute' in any client file" in warning
    assert warning.startswith(f"{tmp_path / 'test.conf'}:")


def test_route_through_a_gateway_outside_the_tunnel_needs_no_iroute(tmp_path: Path):
    result = _run(tmp_path, {}, "route 198.18.31.0 255.255.255.0 198.18.0.254\n")
    assert result.status == "ok", result


def test_iroute_overlapping_the_pool_warns(tmp_path: Path):
    result = _run(tmp_path, {"site": "iroute 198.18.8.128 255.255.255.128\n"},
                  "route 198.18.8.128 255.255.255.128\n")
    assert result.status == "warn"
    assert result.evidence["warnings"] == [
        f"{tmp_path / 'ccd' / 'site'}: 'iroute 198.18.8.128 255.255.255.128' overlaps the VPN "
        "pool 198.18.8.0/24"]


def test_route_without_any_client_config_dir_warns(tmp_path: Path):
    text = BASE.replace("client-config-dir ccd\n", "") + "route 198.18.30.0 255.255.255.0\n"
    result = trio.run(CCD.run, context(write_config(tmp_path, text)))
    assert result.status == "warn"
    assert "client-config-dir" in result.fix
