"""The demo's steps, from empty host to a ping through the tunnel and back to empty.

:func:`run_demo` creates the namespaces and files, starts ``trivpn run`` for the server and the
client, waits for the tunnel, pings through it, runs ``trivpn doctor`` on the client config and
shows the JSON log; then it removes everything, also when a step fails or the user interrupts
(KeyboardInterrupt; the command turns SIGTERM into one). With ``keep`` the tunnel stays up and
:mod:`trivpn.demo.state` records it for :func:`stop_demos`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trivpn.demo import state
from trivpn.demo.configs import (
    DemoAddresses,
    DemoFiles,
    client_config,
    server_config,
    write_configs,
    write_pki,
)
from trivpn.demo.lab import DemoLab, LabError
from trivpn.pki.errors import PkiError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
REQUIRED_TOOLS = ("ip", "ping")
LOG_TAIL = 12
SHOWN_LOG_LINES = 5
POLL_INTERVAL = 0.1
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


class Output(Protocol):
    """Where the demo reports: whole lines, and a progress line that the next output replaces
    (on a terminal) or that may be dropped."""

    def line(self, text: str) -> None: ...

    def progress(self, text: str) -> None: ...


class StepFailed(Exception):
    """A step did not work; ``details`` are lines (log tails) shown below the message."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


@dataclass(frozen=True, slots=True)
class DemoSettings:
    keep: bool = False
    tunnel_timeout: float = 30.0
    server_timeout: float = 10.0
    doctor_timeout: float = 90.0
    trivpn: tuple[str, ...] = field(default_factory=lambda: (sys.executable, "-m", "trivpn"))
    addresses: DemoAddresses = field(default_factory=DemoAddresses)


def preflight() -> str | None:
    """Why the demo cannot run here, or None."""
    if os.geteuid() != 0:
        return ("needs root: it creates network namespaces and TUN devices. "
                "Run it as root, e.g. 'sudo scripts/demo'.")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"needs {', '.join(missing)} (Debian packages iproute2 and iputils-ping); "
                "'scripts/demo' installs them when run as root.")
    return None


def run_demo(out: Output, settings: DemoSettings = DemoSettings()) -> int:
    """Run the whole demo; returns the exit code."""
    problem = preflight()
    if problem is not None:
        out.line(f"trivpn demo: {problem}")
        return EXIT_FAILED
    lab = DemoLab()
    files = DemoFiles(Path(tempfile.mkdtemp(prefix=f"{lab.tag}-")))
    kept = False
    try:
        kept = _steps(out, settings, lab, files)
        code = EXIT_OK
    except StepFailed as exc:
        out.line(f"!!! {exc}")
        for detail in exc.details:
            out.line(f"    {detail}")
        code = EXIT_FAILED
    except (LabError, OSError) as exc:
        out.line(f"!!! {exc}")
        code = EXIT_FAILED
    except KeyboardInterrupt:
        out.line("")
        out.line("!!! interrupted")
        code = EXIT_INTERRUPTED
    finally:
        if not kept:
            _teardown(out, lab, files)
    return code


def stop_demos(out: Output) -> int:
    """Remove every demo left running with ``--keep``."""
    if os.geteuid() != 0:
        out.line("trivpn demo --stop: needs root (it deletes network namespaces)")
        return EXIT_FAILED
    count, errors = state.stop_all(out.line)
    for error in errors:
        out.line(f"!!! {error}")
    if count == 0 and not errors:
        out.line("no demo is running")
    return EXIT_FAILED if errors else EXIT_OK


def _steps(out: Output, settings: DemoSettings, lab: DemoLab, files: DemoFiles) -> bool:
    addr = settings.addresses
    srv_ns, cli_ns = f"{lab.tag}-srv", f"{lab.tag}-cli"
    out.line(f"==> creating namespaces {srv_ns} and {cli_ns}, joined by a veth pair "
             f"({addr.server_link} <-> {addr.client_link})")
    try:
        lab.add_namespace("srv")
        lab.add_namespace("cli")
        lab.add_veth(srv_ns, addr.server_link, cli_ns, addr.client_link)
    except LabError as exc:
        hint = (" (left over from an earlier demo? 'trivpn demo --stop' removes it)"
                if "exists" in str(exc) else "")
        raise StepFailed(f"cannot create the namespaces: {exc}{hint}") from None

    out.line(f"==> making a throwaway PKI in {files.pki} "
             "(CA, certificates 'server' and 'client1', tls-crypt key)")
    try:
        write_pki(files)
    except PkiError as exc:
        raise StepFailed(f"cannot create the PKI: {exc}") from None
    write_configs(files, addr)
    out.line(f"==> wrote {files.server_conf}:")
    _show_config(out, server_config(addr))
    out.line(f"==> wrote {files.client_conf}:")
    _show_config(out, client_config(addr))

    out.line(f"==> starting server: trivpn run server.conf (in {srv_ns}, JSON log "
             f"{files.server_log})")
    server = _start(lab, settings, srv_ns, conf=files.server_conf, log=files.server_log,
                    output=files.server_output)
    _wait_event(out, lab, server, "link_open", what="server listening",
                timeout=settings.server_timeout)

    out.line(f"==> starting client: trivpn run client.conf (in {cli_ns}, JSON log "
             f"{files.client_log})")
    client = _start(lab, settings, cli_ns, conf=files.client_conf, log=files.client_log,
                    output=files.client_output)
    tun = _wait_event(out, lab, client, "tun_configured", what="tunnel up",
                      timeout=settings.tunnel_timeout, also=(server.log, server.output))
    addresses = ", ".join(str(a) for a in tun.get("addresses", ()))
    out.line(f"    tunnel is up: {tun.get('device', '?')} {addresses} in {cli_ns}, "
             f"server at {addr.server_tunnel_ip}")

    _ping(out, lab, cli_ns, addr.server_tunnel_ip)
    _doctor(out, lab, settings, cli_ns, files)
    _show_log(out, files.client_log)

    if not settings.keep:
        return False
    demo = state.KeptDemo(lab.tag, (srv_ns, cli_ns), (server.pid, client.pid), files.root)
    where = state.save(demo)
    lab.detach()
    out.line("==> leaving it running (--keep)")
    out.line(f"    server namespace: ip netns exec {srv_ns} bash")
    out.line(f"    client namespace: ip netns exec {cli_ns} bash   "
             f"(then: ping {addr.server_tunnel_ip})")
    out.line(f"    configs and logs: {files.root}")
    out.line(f"    server PID {server.pid}, client PID {client.pid}; state in {where}")
    out.line("    stop it with: trivpn demo --stop   (or: kill "
             f"{server.pid} {client.pid}; ip netns del {srv_ns}; ip netns del {cli_ns}; "
             f"rm -r {files.root})")
    return True


def _show_config(out: Output, text: str) -> None:
    for line in text.splitlines():
        if line and not line.startswith("#"):
            out.line(f"    {line}")


@dataclass(frozen=True, slots=True)
class Started:
    """A ``trivpn run`` process: its PID, JSON log and stdout/stderr file."""

    pid: int
    log: Path
    output: Path


def _start(lab: DemoLab, settings: DemoSettings, namespace: str, *, conf: Path, log: Path,
           output: Path) -> Started:
    try:
        pid = lab.spawn(namespace, [*settings.trivpn, "run", str(conf), "--log-format", "json",
                                    "--log-file", str(log)], log=output)
    except (LabError, OSError) as exc:
        raise StepFailed(f"cannot start trivpn run {conf.name}: {exc}") from None
    return Started(pid, log, output)


def read_events(log: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines log (unparsable lines skipped)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def tail(path: Path, count: int = LOG_TAIL) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return [f"({path.name} does not exist)"]
    return [f"{path.name}: {line}" for line in lines[-count:]] or [f"({path.name} is empty)"]


def _wait_event(out: Output, lab: DemoLab, proc: Started, event: str, *, what: str,
                timeout: float, also: Sequence[Path] = ()) -> dict[str, Any]:
    """Poll the process's JSON log for ``event``, showing progress; StepFailed if the process
    exits or the time runs out, with the logs' last lines."""
    log, pid = proc.log, proc.pid
    start = time.monotonic()
    while True:
        for found in read_events(log):
            if found.get("event") == event:
                out.progress("")
                out.line(f"    {what} after {time.monotonic() - start:.1f} s")
                return found
        elapsed = time.monotonic() - start
        details = [line for path in (log, proc.output, *also) for line in tail(path)]
        if not lab.running(pid):
            out.progress("")
            raise StepFailed(f"trivpn run exited before '{event}' ({log.name})", details)
        if elapsed > timeout:
            out.progress("")
            raise StepFailed(f"no '{event}' in {log.name} within {timeout:g} s", details)
        out.progress(f"    waiting for {what} ({event} in {log.name}) "
                     f"{elapsed:4.1f}/{timeout:g} s")
        time.sleep(POLL_INTERVAL)


def _ping(out: Output, lab: DemoLab, namespace: str, target: str) -> None:
    out.line(f"==> ping -c 3 {target} (the server's tunnel address, from {namespace})")
    done = lab.exec_in(namespace, ["ping", "-c", "3", "-i", "0.3", "-W", "2", target],
                       timeout=20)
    for line in done.stdout.strip().splitlines():
        out.line(f"    {line}")
    if done.returncode != 0:
        raise StepFailed(f"ping through the tunnel failed (exit {done.returncode})",
                         done.stderr.strip().splitlines())
    rtt = ping_rtt(done.stdout)
    if rtt is not None:
        out.line(f"    tunnel round trip: {rtt:.2f} ms average")


def ping_rtt(text: str) -> float | None:
    """The average RTT in ms from iputils ping's summary line, if present."""
    match = _RTT.search(text)
    return float(match.group(2)) if match else None


def _doctor(out: Output, lab: DemoLab, settings: DemoSettings, namespace: str,
            files: DemoFiles) -> None:
    out.line(f"==> trivpn doctor client.conf (inside {namespace}; it checks the files, the "
             "network path and a real handshake)")
    out.progress("    running the checks ...")
    env = dict(os.environ, NO_COLOR="1")
    done = lab.exec_in(namespace, [*settings.trivpn, "doctor", str(files.client_conf)],
                       timeout=settings.doctor_timeout, env=env)
    out.progress("")
    for line in done.stdout.rstrip().splitlines():
        out.line(f"    {line}")
    if done.returncode != 0:
        raise StepFailed(f"trivpn doctor reported a failed check (exit {done.returncode})",
                         done.stderr.strip().splitlines())


def _show_log(out: Output, log: Path) -> None:
    out.line(f"==> the client's JSON log ({log}), last {SHOWN_LOG_LINES} lines:")
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[-SHOWN_LOG_LINES:]:
        out.line(f"    {line}")


def _teardown(out: Output, lab: DemoLab, files: DemoFiles) -> None:
    out.line("==> tearing down: stopping server and client, deleting namespaces, removing "
             f"{files.root}")
    with _interrupts_ignored():
        errors = lab.close()
        shutil.rmtree(files.root, ignore_errors=True)
    for error in errors:
        out.line(f"!!! teardown: {error}")


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) must not leave the teardown half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
