"""The real-config corpora: client profiles and server configs from public sources, parsed,
never run against anything.

Two corpora share this code: ``clients/`` (profiles as providers, generators and OpenVPN's
samples publish them) and ``servers/`` (server configs as generator scripts, Ansible roles,
web UIs, OpenVPN's and Debian's samples produce them). Each has a ``SOURCES.json`` manifest:
where every file came from, what was changed (keys replaced by TEST keys, absolute paths made
relative, templates rendered with their defaults), the outcome trivpn is expected to give and
the outcome OpenVPN 2.6 gave when measured. ``python -m tests.config.corpus report`` prints
the acceptance rates; ``update`` rewrites the expected outcomes (trivpn's always, OpenVPN's
with ``--openvpn``, which needs root, ``unshare`` and the openvpn binary).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from trivpn.config import ConfigError, load_config
from trivpn.config.parser import parse_source
from trivpn.config.reader import read_config
from trivpn.runplan import build_plan

ROOT = Path(__file__).resolve().parent
CLIENTS = ROOT / "clients"
SERVERS = ROOT / "servers"
MANIFEST = CLIENTS / "SOURCES.json"

Verdict = Literal["accepted", "refused"]


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str  # why it was refused (trivpn: the error without its file prefix), or evidence


@dataclass(frozen=True, slots=True)
class Corpus:
    """One corpus directory. ``role`` decides how both programs are judged on its files."""

    name: str
    root: Path
    role: Literal["client", "server"]

    @property
    def manifest(self) -> Path:
        return self.root / "SOURCES.json"

    def entries(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.manifest.read_text())
        return data

    def profile(self, entry: dict[str, Any]) -> Path:
        return self.root / str(entry["file"])

    def trivpn_outcome(self, path: Path) -> Outcome:
        return trivpn_outcome(path) if self.role == "client" else trivpn_server_outcome(path)

    def openvpn_outcome(self, path: Path, binary: str = "/usr/sbin/openvpn") -> Outcome:
        return (openvpn_outcome(path, binary) if self.role == "client"
                else openvpn_server_outcome(path, binary))


CLIENT_CORPUS = Corpus("clients", CLIENTS, "client")
SERVER_CORPUS = Corpus("servers", SERVERS, "server")
CORPORA = {c.name: c for c in (CLIENT_CORPUS, SERVER_CORPUS)}


def entries() -> list[dict[str, Any]]:
    """The client corpus's manifest entries."""
    return CLIENT_CORPUS.entries()


def _refusal(exc: ConfigError) -> Outcome:
    where = f"line {exc.line}: " if exc.line is not None else ""
    return Outcome("refused", where + exc.reason)


def trivpn_outcome(path: Path) -> Outcome:
    """What ``trivpn run`` does with a client file up to the point it would start: parse it
    and read every file it references (``load_config``)."""
    try:
        load_config(path)
    except ConfigError as exc:
        return _refusal(exc)
    return Outcome("accepted", "")


def trivpn_server_outcome(path: Path) -> Outcome:
    """Would ``trivpn run`` start this server? Judged as ``trivpn check`` judges it
    (trivpn/runplan.py, ``build_plan``): parse, read the referenced files, build the TLS
    context, keys, pool and tunnel plan and resolve ``user``/``group``, all without traffic
    or changes to the system."""
    try:
        source = read_config(path)
        build_plan(parse_source(source), source.directives, files=True, now=datetime.now(UTC))
    except ConfigError as exc:
        return _refusal(exc)
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


def _strip(out: str) -> list[str]:
    return [_TIMESTAMP.sub("", line) for line in out.splitlines() if line.strip()]


def _fatal_reason(lines: list[str]) -> Outcome | None:
    for line in lines:
        if line.startswith("Options error:"):
            return Outcome("refused", line)
    for before, line in itertools.pairwise(lines):
        if line.startswith("Exiting due to fatal error"):
            return Outcome("refused", before)  # the line that says why
    return None


def openvpn_outcome(path: Path, binary: str = "/usr/sbin/openvpn") -> Outcome:
    """OpenVPN 2.6's verdict on a client file, measured parse-only (see ``_run_openvpn``).

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
    lines = _strip(out)
    for line in lines:
        if line.startswith("Options error:"):
            return Outcome("refused", line)
    for line in lines:
        if _CONNECT_PHASE.search(line) or _PROMPT in line:
            return Outcome("accepted", line)
    fatal = _fatal_reason(lines)
    if fatal is not None:
        return fatal
    return Outcome("refused", lines[-1] if lines else "no output")


# A server is up once OpenVPN completes its initialization; a socket that cannot be bound
# (a `local` address of the original host) also means every option, key and file was
# accepted: the bind is the last step before it would serve.
_SERVER_UP = re.compile(r"Initialization Sequence Completed"
                        r"|TCP/UDP: Socket bind failed on local address")
# A point-to-point listener (tls-server or a static key without `mode server`) completes
# its initialization only when its peer connects: having bound its socket and still running
# at the end of the wait, it accepted the config.
_LISTENING = re.compile(r"link local \(bound\)|Listening for incoming TCP connection")
_SERVER_WAIT = 6.0


def _log_files(config: Path) -> tuple[list[Path], bool]:
    """The files named by ``log``/``log-append`` in ``config`` (OpenVPN writes its messages
    there instead of stdout), and whether it has a ``syslog`` line."""
    found, syslog = [], False
    for line in config.read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("log", "log-append"):
            found.append(config.parent / words[1])
        syslog = syslog or (bool(words) and words[0] == "syslog")
    return found, syslog


def _kill_namespace_init(unshare_pid: int) -> None:
    """Kill, by PID, the first process of the PID namespace ``unshare --fork`` made (the
    kernel then kills every process in that namespace). ``--kill-child`` alone is not enough:
    an OpenVPN that drops privileges (``user nobody``) loses the parent-death signal."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)


def _run_openvpn_server(workdir: Path, config: str, binary: str) -> tuple[str, bool]:
    """Run an OpenVPN server on ``config`` in new network and PID namespaces: only a
    loopback interface (brought up, so that a management port on 127.0.0.1 can bind), no
    route anywhere else. Its messages are read from stdout and from the files its
    ``log``/``log-append`` lines name. Stopped as soon as a line shows the verdict, or
    after 6 s; the namespace's first process is killed by PID (``--kill-child`` takes every
    process in the PID namespace with it, a ``daemon`` child included). Returns the
    messages and whether it was still running at the end. A config that logs to syslog
    gets ``--log /proc/self/fd/1`` after it (a later --log overrides ``syslog``), so that its
    messages reach the test; nothing else is changed."""
    logs, syslog = _log_files(workdir / config)
    extra = ["--log", "/proc/self/fd/1"] if syslog else []
    proc = subprocess.Popen(
        ["unshare", "--net", "--pid", "--fork", "--kill-child", "--",
         "sh", "-c", 'ip link set lo up && exec "$@"', "sh", binary, "--config", config,
         *extra],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace")
    out: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + _SERVER_WAIT
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            text = "".join(out) + "".join(
                p.read_text(errors="replace") for p in logs if p.is_file())
            if "Options error:" in text or _SERVER_UP.search(text):
                break
            if _LISTENING.search(text):  # a listener: give it 1 s to fail, then stop
                deadline = min(deadline, time.monotonic() + 1.0)
            time.sleep(0.05)
        running = proc.poll() is None
    finally:
        _kill_namespace_init(proc.pid)
        proc.kill()
        proc.wait()
        reader.join(timeout=2)
    text = "".join(out) + "".join(p.read_text(errors="replace") for p in logs if p.is_file())
    return text, running


def openvpn_server_outcome(path: Path, binary: str = "/usr/sbin/openvpn") -> Outcome:
    """OpenVPN 2.6's verdict on a server config, measured in an isolated namespace (see
    ``_run_openvpn_server``) on a scratch copy of its directory: "Options error" or a fatal
    error before initialization completes = refused; "Initialization Sequence Completed"
    (or failing only to bind the original host's `local` address) = accepted; a
    point-to-point listener still waiting for its peer on its bound socket at the end of
    the wait = accepted."""
    with tempfile.TemporaryDirectory(prefix="corpus-ovpn-srv-") as tmp:
        work = Path(tmp) / "p"
        shutil.copytree(path.parent, work)
        out, running = _run_openvpn_server(work, path.name, binary)
    lines = _strip(out)
    for line in lines:
        if line.startswith("Options error:"):
            return Outcome("refused", line)
    for line in lines:
        if _SERVER_UP.search(line):
            return Outcome("accepted", line)
    fatal = _fatal_reason(lines)
    if fatal is not None:
        return fatal
    if running:
        for line in lines:
            if _LISTENING.search(line):
                return Outcome("accepted", line)
    return Outcome("refused", lines[-1] if lines else "exited without a message")


def profile(entry: dict[str, Any]) -> Path:
    """A client corpus entry's file."""
    return CLIENT_CORPUS.profile(entry)


def rate(verdicts: list[Verdict]) -> str:
    n = sum(1 for v in verdicts if v == "accepted")
    return f"{n}/{len(verdicts)} ({100 * n / len(verdicts):.0f} %)" if verdicts else "0/0"
