"""The script runner: OpenVPN's exit-status wording, a bounded wait, exactly the given
environment, and script-security enforced before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import trio
from structlog.testing import capture_logs

from trivpn.runtime.scripts import ScriptRunner


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "s.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _runner(level: int = 2, timeout: float = 10.0) -> ScriptRunner:
    return ScriptRunner(level, structlog.get_logger(), timeout=timeout)


@pytest.mark.directive("up")
async def test_exit_status_is_reported_in_openvpns_words(tmp_path: Path) -> None:
    result = await _runner().run("up", [_script(tmp_path, "exit 3\n")], {})
    assert not result.ok and result.returncode == 3
    assert result.detail == "external program exited with error status: 3"
    ok = await _runner().run("up", [_script(tmp_path, "exit 0\n")], {})
    assert ok.ok


@pytest.mark.directive("up")
async def test_the_script_sees_exactly_the_given_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.out"
    script = _script(tmp_path, f"env > {out}\n")
    assert (await _runner().run("up", [script, "tun0"], {"dev": "tun0", "A": "1"})).ok
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    seen.pop("PWD", None)  # set by the shell itself
    assert seen == {"dev": "tun0", "A": "1"}


@pytest.mark.directive("up")
async def test_a_script_that_hangs_is_killed_after_the_timeout(tmp_path: Path) -> None:
    started = trio.current_time()
    result = await _runner(timeout=0.5).run("up", [_script(tmp_path, "sleep 30\n")], {})
    assert not result.ok and "did not finish in 0.5 s" in result.detail
    assert trio.current_time() - started < 5


@pytest.mark.directive("up")
async def test_a_missing_program_fails_without_raising(tmp_path: Path) -> None:
    result = await _runner().run("up", [str(tmp_path / "nope")], {})
    assert not result.ok and result.detail.startswith("could not execute external program")


@pytest.mark.directive("script-security")
@pytest.mark.parametrize("level", [0, 1])
async def test_below_level_2_nothing_runs_and_openvpns_warning_is_logged_once(
        tmp_path: Path, level: int) -> None:
    marker = tmp_path / "ran"
    script = _script(tmp_path, f"touch {marker}\n")
    runner = _runner(level)
    with capture_logs() as logs:
        first = await runner.run("up", [script], {})
        await runner.run("down", [script], {})
    assert not first.ok and first.detail == "disallowed by script-security setting"
    assert not marker.exists()
    refused = [e for e in logs if e["event"] == "script_refused"]
    assert len(refused) == 1
    assert "'--script-security 2' or higher" in refused[0]["detail"]


@pytest.mark.directive("script-security")
async def test_password_is_withheld_below_level_3(tmp_path: Path) -> None:
    out = tmp_path / "env.out"
    script = _script(tmp_path, f"env > {out}\n")
    env = {"username": "alice", "password": "pw"}
    await _runner(2).run("x", [script], env)
    assert "password=" not in out.read_text()
    await _runner(3).run("x", [script], env)
    assert "password=pw" in out.read_text()
