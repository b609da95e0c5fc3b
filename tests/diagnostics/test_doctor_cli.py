"""``trivpn doctor``: arguments, exit codes (0/1/2), --json shape and --log."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.diagnostics.doctorkit import CLIENT, SERVER, write_config, write_pki
from tests.netns import NetnsLab
from trivpn.commands import doctor

FIXTURES = Path(__file__).parent / "fixtures"
OFFLINE = ["config.syntax", "config.files", "pki.chain", "pki.validity", "pki.key_match",
           "pki.eku"]


def main(argv: Sequence[str]) -> int:
    """The CLI as ``trivpn`` wires it: ``doctor`` registered on the subcommand parser."""
    parser = argparse.ArgumentParser(prog="trivpn")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor.register(sub)
    args = parser.parse_args(["doctor", *argv])
    code: int = args.handler(args)
    return code


@pytest.fixture
def good_client(tmp_path: Path) -> Path:
    write_pki(tmp_path)
    return write_config(tmp_path, CLIENT, "client.conf")


def test_healthy_offline_checks_exit_0_with_json(good_client: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(good_client), "--json", "--check", *OFFLINE]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["version", "config", "role", "verdict", "duration_s", "checks"]
    assert data["role"] == "client"
    assert data["verdict"] == "ok"
    assert data["config"] == str(good_client)
    assert [c["id"] for c in data["checks"]] == OFFLINE
    assert all(c["status"] == "ok" for c in data["checks"])


def test_failing_check_exits_1(good_client: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (good_client.parent / "client.key").write_bytes(
        (good_client.parent / "server.key").read_bytes())
    assert main([str(good_client), "--check", "pki.key_match"]) == 1
    out = capsys.readouterr().out
    assert "[✗] pki.key_match" in out
    assert "\x1b[" not in out  # captured stdout is not a terminal


def test_check_selection_pulls_in_dependencies(good_client: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(good_client), "--json", "--check", "pki.eku"]) == 0
    ids = [c["id"] for c in json.loads(capsys.readouterr().out)["checks"]]
    assert ids == ["config.syntax", "config.files", "pki.eku"]


def test_server_config_gets_the_server_role(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    write_pki(tmp_path)
    path = write_config(tmp_path, SERVER)
    assert main([str(path), "--json", "--check", "config.syntax"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "server"


def test_peer_to_peer_tls_server_gets_the_server_role(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write_pki(tmp_path)
    path = write_config(tmp_path, "dev tun\nlport 1194\nifconfig 198.19.5.1 198.19.5.2\n"
                        "tls-server\ndh none\nca ca.crt\ncert server.crt\nkey server.key\n")
    assert main([str(path), "--json", "--check", "config.syntax"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "server"


def test_unparsable_config_fails_syntax_and_still_runs_option_free_checks(
        tmp_path: Path, netns_lab: NetnsLab, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ns = netns_lab.add("cli")
    monkeypatch.setenv(doctor.NETNS_ENV, ns.name)
    path = write_config(tmp_path, "server 198.19.0.0 255.255.255.0\nbogus-directive 1\n")
    assert main([str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["role"] == "server"  # guessed from the 'server' line
    by_id = {c["id"]: c for c in data["checks"]}
    syntax = by_id["config.syntax"]
    assert syntax["status"] == "fail"
    assert syntax["evidence"]["line"] == 2
    assert f"{path}:2" in syntax["fix"]
    assert by_id["env.tun"]["status"] == "ok"
    assert by_id["env.privileges"]["status"] in ("ok", "fail")
    assert by_id["server.listen"]["status"] == "skip"
    assert by_id["server.listen"]["summary"] == "skipped: config.syntax failed"


@pytest.mark.parametrize("argv", [
    ["/nonexistent/trivpn-doctor.conf"],
    [],
    ["--log", "/nonexistent/openvpn.log"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "trivpn doctor:" in capsys.readouterr().err


def test_unknown_check_id_exits_2(good_client: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(good_client), "--check", "no.such"]) == 2
    assert "no.such" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_bad_timeout_is_an_argparse_error(good_client: Path, timeout: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(good_client), "--timeout", timeout])
    assert exc.value.code == 2


def test_log_with_errors_exits_1_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log", str(FIXTURES / "server-tls-auth-mismatch.log")]) == 1
    out = capsys.readouterr().out
    assert "[✗] log.hmac_auth_failed" in out
    assert "Fix: " in out


def test_log_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log", str(FIXTURES / "client-resolve.log"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["config"].endswith("client-resolve.log")
    assert data["role"] == "client"
    assert [c["id"] for c in data["checks"]] == ["log.resolve_failed"]


def test_clean_log_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "ok.log"
    log.write_text("2026-11-26 08:59:31 Initialization Sequence Completed\n")
    assert main(["--log", str(log)]) == 0


def test_log_and_config_together_is_a_usage_error(good_client: Path) -> None:
    assert main([str(good_client), "--log", str(FIXTURES / "client-resolve.log")]) == 2


def test_target_is_refused_with_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "openvpn.log"
    log.write_text("")
    assert main(["--log", str(log), "--target", "198.18.20.10"]) == 2
    assert "--target" in capsys.readouterr().err


def test_targets_reach_the_checks_context(good_client: Path) -> None:
    ctx = doctor.build_context(good_client, 5.0, targets=("198.18.20.10", "host.example"))
    assert ctx.targets == ("198.18.20.10", "host.example")
    assert ctx.tunnel is None  # the broker is opened by the run, not the context
