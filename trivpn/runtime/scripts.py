"""Running OpenVPN-style scripts (``up``, ``down``, ``route-up``, ...) without blocking.

The command line and environment come from the pure builders of
:mod:`trivpn.runtime.scriptenv`; this module only runs them: through ``trio.run_process``
(the event loop keeps serving the tunnel), with a timeout, without a shell, with exactly the
given environment (OpenVPN passes its own variables only), and with ``script-security``
enforced as OpenVPN does (run_command.c, ``openvpn_execve``): below level 2 no user script
runs, OpenVPN's warning is logged once and the call counts as failed.

Role-neutral: the server's hooks (client-connect, learn-address, ...) use the same runner.

``plugin .../openvpn-plugin-down-root.so "CMD"`` is implemented natively by
:class:`RootHelper`: before ``user``/``group`` drop privileges, a small helper process is
forked that keeps root and runs CMD once, at down, with the down script's arguments and
environment (what the plugin does: it forks a privileged helper at start-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from trivpn.runtime.scriptenv import (
    SCRIPT_SECURITY_WARNING,
    CommandError,
    allowed,
    filter_passwords,
)

Log = structlog.stdlib.BoundLogger

SCRIPT_TIMEOUT = 60.0
"""Longest run of one script; then it is killed and counts as failed (OpenVPN waits
forever, blocking its tunnel; trivpn never blocks the tunnel and bounds the wait)."""


@dataclass(frozen=True, slots=True)
class ScriptResult:
    ok: bool
    detail: str  # OpenVPN's words: "external program exited with error status: 1", ...
    returncode: int | None = None


class ScriptRunner:
    """Runs the configured programs for one process (client or server)."""

    def __init__(self, level: int, log: Log, *, timeout: float = SCRIPT_TIMEOUT,
                 cwd: Path | None = None) -> None:
        self.level = level
        self.log = log
        self.timeout = timeout
        self.cwd = cwd
        self._warned = False

    async def run(self, script_type: str, argv: Sequence[str],
                  env: Mapping[str, str]) -> ScriptResult:
        """Run ``argv`` with ``env``; the result (never raises for the script's failure)."""
        if not allowed(self.level, user_script=True):
            if not self._warned:
                self._warned = True
                self.log.warning("script_refused", script_type=script_type,
                                 level=self.level, detail=SCRIPT_SECURITY_WARNING)
            return ScriptResult(False, "disallowed by script-security setting")
        full_env = filter_passwords(env, self.level)
        argv = program_path(argv, self.cwd)
        self.log.info("script_run", script_type=script_type, argv=argv)
        result = await self._execute(argv, full_env)
        if result.ok:
            self.log.debug("script_done", script_type=script_type)
        else:
            self.log.warning("script_failed", script_type=script_type, detail=result.detail)
        return result

    async def _execute(self, argv: list[str], env: dict[str, str]) -> ScriptResult:
        with trio.move_on_after(self.timeout) as scope:
            try:
                done = await trio.run_process(
                    argv, env=env, stdin=subprocess.DEVNULL, check=False,
                    start_new_session=True, cwd=_usable(self.cwd))
            except OSError as exc:
                return ScriptResult(False, f"could not execute external program: {exc}")
        if scope.cancelled_caught:
            return ScriptResult(False, f"external program did not finish in {self.timeout:g} s "
                                       "(killed)")
        code = done.returncode
        if code == 0:
            return ScriptResult(True, "external program exited normally", 0)
        if code < 0:
            return ScriptResult(False, "external program did not exit normally "
                                       f"(signal {-code})", code)
        return ScriptResult(False, f"external program exited with error status: {code}", code)


def program_path(argv: Sequence[str], cwd: Path | None) -> list[str]:
    """OpenVPN execve()s the program as written: never searched in PATH, a relative name is
    relative to the working directory (which ``cd DIR`` sets; trivpn's is ``cwd``, the
    config's base directory)."""
    out = list(argv)
    if out and cwd is not None and not os.path.isabs(out[0]):
        out[0] = str(cwd / out[0])
    return out


def _usable(cwd: Path | None) -> Path | None:
    """``cwd`` unless we may no longer enter it (after user/group): OpenVPN's scripts inherit
    its working directory even when the new user could not enter it; the closest trivpn can
    do then is its own working directory."""
    return cwd if cwd is not None and os.access(cwd, os.X_OK) else None


# --- down-root ----------------------------------------------------------------------------------

_HELPER = r"""
import json, os, subprocess, sys
line = sys.stdin.readline()
if not line:
    sys.exit(0)
job = json.loads(line)
try:
    code = subprocess.run(job["argv"], env=job["env"], stdin=subprocess.DEVNULL,
                          timeout=job["timeout"]).returncode
except (OSError, subprocess.TimeoutExpired) as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
    sys.exit(0)
print(json.dumps({"code": code}), flush=True)
"""


class RootHelper:
    """A process forked while still privileged that runs one command as root at down (the
    native form of OpenVPN's down-root plugin). Start it before dropping privileges."""

    def __init__(self, log: Log, *, timeout: float = SCRIPT_TIMEOUT,
                 cwd: Path | None = None) -> None:
        self.log = log
        self.timeout = timeout
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={},
                start_new_session=True, cwd=self.cwd)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def run(self, argv: Sequence[str], env: Mapping[str, str]) -> ScriptResult:
        """Run ``argv`` as root (once); the helper then exits."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None or proc.stdout is None:
            return ScriptResult(False, "the down-root helper is not running")
        argv = program_path(argv, self.cwd)
        job = json.dumps({"argv": argv, "env": dict(env), "timeout": self.timeout})
        self.log.info("script_run", script_type="down-root", argv=list(argv))
        stdin, stdout = proc.stdin, proc.stdout

        def exchange() -> str:
            try:
                stdin.write(job.encode() + b"\n")
                stdin.close()
                return stdout.readline().decode()
            finally:
                proc.wait(self.timeout + 5)

        try:
            answer = await trio.to_thread.run_sync(exchange)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _kill(proc)
            return ScriptResult(False, f"down-root helper failed: {exc}")
        try:
            reply = json.loads(answer)
        except ValueError:
            reply = {"error": "no answer"}
        if "code" not in reply:
            result = ScriptResult(False, f"could not execute external program: "
                                         f"{reply.get('error')}")
        elif reply["code"] == 0:
            result = ScriptResult(True, "external program exited normally", 0)
        else:
            result = ScriptResult(False, "external program exited with error status: "
                                         f"{reply['code']}", int(reply["code"]))
        if not result.ok:
            self.log.warning("script_failed", script_type="down-root", detail=result.detail)
        return result

    def close(self) -> None:
        """Stop the helper if it never ran (closing its stdin makes it exit)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


__all__ = ["CommandError", "RootHelper", "ScriptResult", "ScriptRunner"]
