"""The handshake-rate benchmark: full handshakes per second one server completes.

Per contender and round a fresh server (``duplicate-cn``: every swarm client shows the same
certificate) faces a swarm of sans-IO trivpn client sessions from one process in the client
namespace (:mod:`trivpn.bench.swarm`), ``concurrency`` in flight, each going from hard reset
through TLS, key method 2 and the push reply, then leaving with EXIT.

Both servers answer at most 100 new clients per 10 s by default (OpenVPN's
``connect-freq-initial 100 10``; trivpn's stateless-reset limiter is the same), so ``count``
stays below 100 per measurement and every round starts a new server: the figure is how fast
the server works through that burst, not the rate limiter.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trivpn.bench.contenders import (
    CONTENDERS,
    Endpoint,
    TunnelSpec,
    client_config,
    server_config,
    start,
    wait_listening,
)
from trivpn.bench.lab import Lab
from trivpn.bench.measure import MeasureError
from trivpn.bench.report import Metric, build_report
from trivpn.bench.rounds import Progress, run_rounds

METRICS: tuple[Metric, ...] = (
    Metric("handshakes_per_s", "full handshakes per second", "1/s", 1),
    Metric("server_cpu_ms_per_handshake", "server CPU per handshake", "ms", 2),
    Metric("failed", "failed handshakes", ""),
)
POOL = ("198.18.64.0", "255.255.192.0")
_FILE_DIRECTIVES = ("ca", "cert", "key", "tls-crypt")


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    count: int = 80
    concurrency: int = 8
    rounds: int = 3
    transport: str = "udp"
    cipher: str = "AES-256-GCM"
    contenders: tuple[str, ...] = CONTENDERS


def absolute_files(lines: list[str], base: Path) -> list[str]:
    """Config lines with the file arguments of ca/cert/key/tls-crypt made absolute."""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append(f"{word} {base / rest}" if word in _FILE_DIRECTIVES else line)
    return out


def read_json_line(proc: subprocess.Popen[bytes], event: str, timeout: float) -> dict[str, Any]:
    """The first JSON line on ``proc``'s stdout whose ``event`` is ``event``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
        if not chunk:
            break
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == event:
                return doc
    raise MeasureError("swarm", f"no {event!r} line within {timeout:g} s")


def swarm_command(conf: Path, mode: str, *, count: int, concurrency: int, timeout: float,
                  extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "trivpn.bench", "swarm", str(conf), "--mode", mode,
            "--count", str(count), "--concurrency", str(concurrency),
            "--timeout", f"{timeout:g}", *extra]


def _measure(lab: Lab, server_ns: str, client_ns: str, contender: str, *,
             workdir: Path, opts: HandshakeOptions) -> dict[str, float]:
    spec = TunnelSpec(transport=opts.transport, cipher=opts.cipher, network=POOL[0],
                      netmask=POOL[1], server_extra=("duplicate-cn", "max-clients 1024"))
    server: Endpoint = start(lab, server_ns, contender, "server", workdir=workdir,
                             lines=server_config(spec))
    try:
        wait_listening(lab, server_ns, server, opts.transport)
        time.sleep(0.5)
        conf = workdir / "swarm.conf"
        conf.write_text("\n".join(absolute_files(client_config(spec), workdir)) + "\n")
        timeout = 60.0
        cpu0 = server.cpu_seconds()
        swarm = lab.spawn(client_ns, swarm_command(conf, "handshakes", count=opts.count,
                                                   concurrency=opts.concurrency,
                                                   timeout=timeout),
                          stdout=subprocess.PIPE)
        try:
            done = read_json_line(swarm, "done", timeout + 15)
        finally:
            lab.stop(swarm)
        cpu = server.cpu_seconds() - cpu0
        completed = int(done["completed"])
        if completed == 0:
            raise MeasureError("swarm", f"no handshake completed: {server.log_tail()}")
        return {"handshakes_per_s": float(done["rate"]),
                "server_cpu_ms_per_handshake": cpu * 1000.0 / completed,
                "failed": float(done["failed"])}
    finally:
        lab.stop(server.proc)


def run_handshakes(opts: HandshakeOptions, progress: Progress) -> dict[str, Any]:
    def measure(lab: Lab, server_ns: str, client_ns: str, contender: str,
                workdir: Path) -> dict[str, float]:
        return _measure(lab, server_ns, client_ns, contender, workdir=workdir, opts=opts)

    rounds, errors = run_rounds(opts.contenders, opts.rounds, measure,
                                lambda v: f"{v['handshakes_per_s']:.1f} handshakes/s", progress)
    config = {"count": opts.count, "concurrency": opts.concurrency, "rounds": opts.rounds,
              "transport": opts.transport, "cipher": opts.cipher, "control": "tls-crypt"}
    return build_report("handshakes", config, opts.contenders, METRICS, rounds, errors=errors)
