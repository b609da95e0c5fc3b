"""The client-profile corpus: real client configs from public sources, parsed, never run.

``clients/SOURCES.json`` lists every profile: where it came from, what was changed (keys
replaced by TEST keys, absolute paths made relative), the outcome trivpn is expected to give
and the outcome OpenVPN 2.6 gave when measured. ``python -m tests.config.corpus report``
prints both acceptance rates; ``update`` rewrites the expected outcomes (trivpn's always,
OpenVPN's with ``--openvpn``, which needs root, ``unshare`` and the openvpn binary).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trivpn.config import ConfigError, load_config

CLIENTS = Path(__file__).resolve().parent / "clients"
MANIFEST = CLIENTS / "SOURCES.json"

Verdict = Literal["accepted", "refused"]


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str  # why it was refused (trivpn: the error without its file prefix), or evidence


def entries() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(MANIFEST.read_text())
    return data


def trivpn_outcome(path: Path) -> Outcome:
    """What ``trivpn run`` does with the file up to the point it would start: parse it and
    read every file it references (``load_config``)."""
    try:
        load_config(path)
    except ConfigError as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        return Outcome("refused", where + exc.reason)
    return Outcome("accepted", "")


# OpenVPN 2.6 messages that show it got past option parsing, key and certificate loading and
# into its connect phase (resolving or reaching the remote): the config was accepted.
_CONNECT_PHASE = re.compile(
    r"Could not determine IPv4/IPv6 protocol|RESOLVE: Cannot resolve host address"
    r"|network-unreachable|connection-failed|Network is unreachable"
    r"|TCP/UDP: Preserving recently used remote address|Attempting to establish TCP connection"
    r"|UDP link local")
# It would prompt for a username: options are accepted, the prompt needs a terminal.
_PROMPT = "can't ask for 'Enter Auth Username:'"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (us=\d+ )?")


def _run_openvpn(workdir: Path, config: str, extra: list[str], binary: str) -> str:
    """Run OpenVPN on ``config`` in a new network namespace that has only a loopback
    interface, which is down: nothing can leave it. Stdin is closed. Stopped (by its PID)
    as soon as a line shows the verdict, or after 6 s."""
    proc = subprocess.Popen(
        ["unshare", "--net", "--", binary, "--config", config, *extra],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace")
    timer = threading.Timer(6.0, proc.kill)
    timer.start()
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if (line.find("Options error:") >= 0 or _PROMPT in line
                    or _CONNECT_PHASE.search(line)):
                break
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    return "".join(out)


def openvpn_outcome(path: Path, binary: str = "/usr/sbin/openvpn") -> Outcome:
    """OpenVPN 2.6's verdict on the file, measured parse-only (see ``_run_openvpn``).

    The profile's directory is copied to a scratch directory first (OpenVPN resolves
    relative paths against its working directory, and writepid/log must not touch the
    corpus). A profile that would prompt for a username is run once more with
    ``--auth-user-pass`` naming a TEST credentials file, so that the rest of it (keys,
    certificates) is checked as well."""
    with tempfile.TemporaryDirectory(prefix="corpus-ovpn-") as tmp:
        work = Path(tmp) / "p"
        shutil.copytree(path.parent, work)
        out = _run_openvpn(work, path.name, [], binary)
        if _PROMPT in out:
            creds = Path(tmp) / "creds.txt"
            creds.write_text("testuser\ntestpass\n")
            os.chmod(creds, 0o600)
            out = _run_openvpn(work, path.name, ["--auth-user-pass", str(creds)], binary)
    lines = [_TIMESTAMP.sub("", line) for line in out.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Options error:"):
            return Outcome("refused", line)
    for line in lines:
        if _CONNECT_PHASE.search(line) or _PROMPT in line:
            return Outcome("accepted", line)
    for before, line in itertools.pairwise(lines):
        if line.startswith("Exiting due to fatal error"):
            return Outcome("refused", before)  # the line that says why
    return Outcome("refused", lines[-1] if lines else "no output")


def profile(entry: dict[str, Any]) -> Path:
    return CLIENTS / str(entry["file"])


def rate(verdicts: list[Verdict]) -> str:
    n = sum(1 for v in verdicts if v == "accepted")
    return f"{n}/{len(verdicts)} ({100 * n / len(verdicts):.0f} %)" if verdicts else "0/0"
