"""The handshake-rate benchmark: full handshakes per second one server completes.

Per contender and round a fresh server (``duplicate-cn``: every swarm client shows the same
certificate) faces swarms of sans-IO trivpn client sessions in the client namespace
(:mod:`trivpn.bench.swarm`): ``procs`` processes that start together, ``concurrency``
handshakes in flight between them, each going from hard reset through TLS, key method 2 and the
push reply, then leaving with EXIT.

Both servers get ``connect-freq-initial`` far above the offered rate, so the figure is how fast
the server works, not its reflection limiter. What the server does is measured from its side:
CPU per handshake, and how busy it was (CPU seconds over the run's wall time, in % of one core).
A server near 100% busy sets the rate; well below that, the load generator or the machine did,
and only the CPU per handshake compares the servers. The swarm's own CPU per handshake is
reported too.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
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
from trivpn.protocol.admission import PREAUTH_PER_SOURCE

METRICS: tuple[Metric, ...] = (
    Metric("handshakes_per_s", "full handshakes per second", "1/s", 1),
    Metric("server_cpu_ms_per_handshake", "server CPU per handshake", "ms", 2),
    Metric("server_busy_percent", "server busy (CPU / wall time)", "% of a core", 0),
    Metric("swarm_cpu_ms_per_handshake", "load generator CPU per handshake", "ms", 2),
    Metric("failed", "failed handshakes", ""),
)
POOL = ("198.18.64.0", "255.255.192.0")
_FILE_DIRECTIVES = ("ca", "cert", "key", "tls-crypt")
# Far above any rate reached here: the benchmark measures handshakes, not the reset limiter.
CONNECT_FREQ_INITIAL = "connect-freq-initial 1000000 10"
SWARM_START_DELAY = 2.0  # seconds for the swarm processes to import and load their config
SWARM_PORTS = range(2000, 32000)  # below Linux's ephemeral range; split between the processes
# The swarm runs from one source address: trivpn's server admits at most PREAUTH_PER_SOURCE
# handshakes per address at a time (docs/server-admission.md) and refuses the rest until they
# retry, so more in flight would measure that limit (16 gave 74/s instead of ~330/s).
DEFAULT_CONCURRENCY = PREAUTH_PER_SOURCE


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    count: int = 300
    concurrency: int = DEFAULT_CONCURRENCY
    procs: int = 2
    rounds: int = 3
    transport: str = "udp"
    cipher: str = "AES-256-GCM"
    contenders: tuple[str, ...] = CONTENDERS


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative shares (larger shares first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True, slots=True)
class SwarmTotals:
    """The ``done`` lines of several swarm processes, added up."""

    completed: int
    failed: int
    seconds: float  # first start to last end
    cpu: float

    @classmethod
    def of(cls, docs: list[dict[str, Any]]) -> SwarmTotals:
        return cls(completed=sum(int(d["completed"]) for d in docs),
                   failed=sum(int(d["failed"]) for d in docs),
                   seconds=(max(float(d["ended"]) for d in docs)
                            - min(float(d["started"]) for d in docs)),
                   cpu=sum(float(d["cpu"]) for d in docs))


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
                      netmask=POOL[1], server_extra=("duplicate-cn", "max-clients 1024",
                                                     CONNECT_FREQ_INITIAL))
    server: Endpoint = start(lab, server_ns, contender, "server", workdir=workdir,
                             lines=server_config(spec))
    try:
        wait_listening(lab, server_ns, server, opts.transport)
        time.sleep(0.5)
        conf = workdir / "swarm.conf"
        conf.write_text("\n".join(absolute_files(client_config(spec), workdir)) + "\n")
        timeout = 60.0
        procs = min(opts.procs, opts.count)
        start_at = time.time() + SWARM_START_DELAY
        cpu0 = server.cpu_seconds()
        span = len(SWARM_PORTS) // procs
        swarms = [
            lab.spawn(client_ns, swarm_command(
                conf, "handshakes", count=count, concurrency=max(1, concurrency),
                timeout=timeout, extra=(
                    "--start-at", f"{start_at:.3f}",
                    "--ports", f"{SWARM_PORTS[i * span]}-{SWARM_PORTS[(i + 1) * span - 1]}")),
                stdout=subprocess.PIPE)
            for i, (count, concurrency) in enumerate(zip(split(opts.count, procs),
                                                         split(opts.concurrency, procs),
                                                         strict=True))]
        try:
            docs = [read_json_line(swarm, "done", SWARM_START_DELAY + timeout + 15)
                    for swarm in swarms]
        finally:
            for swarm in swarms:
                lab.stop(swarm)
        cpu = server.cpu_seconds() - cpu0
        totals = SwarmTotals.of(docs)
        if totals.completed == 0:
            raise MeasureError("swarm", f"no handshake completed: {server.log_tail()}")
        return {"handshakes_per_s": totals.completed / totals.seconds,
                "server_cpu_ms_per_handshake": cpu * 1000.0 / totals.completed,
                "server_busy_percent": cpu / totals.seconds * 100.0,
                "swarm_cpu_ms_per_handshake": totals.cpu * 1000.0 / totals.completed,
                "failed": float(totals.failed)}
    finally:
        lab.stop(server.proc)


def run_handshakes(opts: HandshakeOptions, progress: Progress) -> dict[str, Any]:
    rounds, errors = run_rounds(
        opts.contenders, opts.rounds, partial(_measure, opts=opts),
        lambda v: f"{v['handshakes_per_s']:.1f} handshakes/s", progress)
    config = {"count": opts.count, "concurrency": opts.concurrency, "procs": opts.procs,
              "rounds": opts.rounds,
              "transport": opts.transport, "cipher": opts.cipher, "control": "tls-crypt"}
    return build_report("handshakes", config, opts.contenders, METRICS, rounds, errors=errors)
