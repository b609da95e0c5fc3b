"""The idle-RTT benchmark: interleaved rounds of pings through each contender's tunnel.

Per contender and round: bring the tunnel up, warm it with a few pings, then ``pings`` pings
``interval`` seconds apart (default 50 at 50 ms, the spacing of the throughput benchmark's
idle RTT) and report the median and minimum RTT and the CPU time the server and the client
VPN process spent per ping (``/proc/PID/task/*/schedstat``, nanoseconds). A round takes
seconds, so changes to the data path can be compared quickly; as always compare the ratios of
one run, not figures of different runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from trivpn.bench.contenders import CONTENDERS, SERVER_TUN_IP, TunnelSpec, start_pair, stop_pair
from trivpn.bench.lab import Lab
from trivpn.bench.measure import MeasureError, parse_ping_rtts, parse_schedstat_ns
from trivpn.bench.report import Metric, build_report
from trivpn.bench.rounds import Progress, run_rounds

WARMUP_PINGS = 5

METRICS: tuple[Metric, ...] = (
    Metric("rtt_us", "idle RTT (median)", "µs"),
    Metric("rtt_min_us", "idle RTT (minimum)", "µs"),
    Metric("cpu_server_us", "server CPU per ping", "µs"),
    Metric("cpu_client_us", "client CPU per ping", "µs"),
)


@dataclass(frozen=True, slots=True)
class RttOptions:
    pings: int = 50
    interval: float = 0.05
    rounds: int = 5
    transport: str = "udp"
    cipher: str = "AES-256-GCM"
    contenders: tuple[str, ...] = CONTENDERS


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += parse_schedstat_ns(path.read_text())
        except OSError:  # a thread that just exited
            continue
    return total


def _pings(lab: Lab, ns: str, count: int, interval: float) -> list[float]:
    done = lab.run(ns, ["ping", "-c", str(count), "-i", f"{interval:g}", "-W", "1",
                        SERVER_TUN_IP], timeout=count * interval + 20)
    rtts = parse_ping_rtts(done.stdout)
    if not rtts:
        raise MeasureError("ping", f"no replies: {done.stdout[-300:]} {done.stderr[-300:]}")
    return rtts


def measure_contender(lab: Lab, server_ns: str, client_ns: str, contender: str, *,
                      workdir: Path, opts: RttOptions) -> dict[str, float]:
    spec = TunnelSpec(transport=opts.transport, cipher=opts.cipher)
    pair = start_pair(lab, server_ns, client_ns, contender, workdir=workdir, spec=spec)
    try:
        _pings(lab, client_ns, WARMUP_PINGS, opts.interval)
        before = cpu_ns(pair.server.pid), cpu_ns(pair.client.pid)
        rtts = _pings(lab, client_ns, opts.pings, opts.interval)
        after = cpu_ns(pair.server.pid), cpu_ns(pair.client.pid)
    finally:
        stop_pair(lab, pair)
    per_ping = 1000.0 * len(rtts)  # ns -> µs, per answered ping
    return {
        "rtt_us": statistics.median(rtts),
        "rtt_min_us": min(rtts),
        "cpu_server_us": (after[0] - before[0]) / per_ping,
        "cpu_client_us": (after[1] - before[1]) / per_ping,
    }


def run_rtt(opts: RttOptions, progress: Progress) -> dict[str, Any]:
    def summary(v: dict[str, float]) -> str:
        return (f"RTT {v['rtt_us']:.0f} µs (min {v['rtt_min_us']:.0f}), CPU per ping "
                f"server {v['cpu_server_us']:.0f} µs, client {v['cpu_client_us']:.0f} µs")

    rounds, errors = run_rounds(opts.contenders, opts.rounds, partial(measure_contender, opts=opts),
                                summary, progress)
    config = {"pings": opts.pings, "interval_s": opts.interval, "rounds": opts.rounds,
              "transport": opts.transport, "cipher": opts.cipher, "control": "tls-crypt"}
    return build_report("rtt", config, opts.contenders, METRICS, rounds, errors=errors)
