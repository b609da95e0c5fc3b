"""The throughput benchmark: interleaved rounds of every contender, one after the other.

Per contender and round: bring the tunnel up, idle ping RTT (``ping -c 20 -i 0.05``, median)
before any load, then iperf3 TCP client→server through the tunnel with one stream and with four,
``duration`` seconds each. Around each iperf3 run: CPU seconds of the server and client VPN
processes (``/proc/PID/stat``) and packets through the tunnel per second (TCP segments sent in
both namespaces, ``/proc/net/snmp`` ``OutSegs``, less the VPN's own TCP connection).
The contender order alternates between rounds so drift hits both alike.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from trivpn.bench.contenders import (
    CONTENDERS,
    SERVER_TUN_IP,
    Pair,
    TunnelSpec,
    inner_segments,
    start_pair,
    stop_pair,
)
from trivpn.bench.lab import Lab, LabError
from trivpn.bench.measure import MeasureError, parse_iperf3, parse_ping_rtts
from trivpn.bench.report import Metric, build_report
from trivpn.bench.rounds import Progress, run_rounds

IPERF_PORT = 5201
IPERF_ATTEMPTS = 2
STREAMS = (1, 4)

METRICS: tuple[Metric, ...] = (
    Metric("p1_mbps", "TCP, 1 stream", "Mbit/s"),
    Metric("p4_mbps", "TCP, 4 streams", "Mbit/s"),
    Metric("rtt_us", "idle RTT (median of 20)", "µs"),
    Metric("p1_pps", "tunnel packets/s, 1 stream", "pkt/s"),
    Metric("p4_pps", "tunnel packets/s, 4 streams", "pkt/s"),
    Metric("p1_cpu_server", "server CPU, 1 stream", "s", 2),
    Metric("p1_cpu_client", "client CPU, 1 stream", "s", 2),
    Metric("p4_cpu_server", "server CPU, 4 streams", "s", 2),
    Metric("p4_cpu_client", "client CPU, 4 streams", "s", 2),
    Metric("p1_retransmits", "TCP retransmits, 1 stream", ""),
    Metric("p4_retransmits", "TCP retransmits, 4 streams", ""),
)


@dataclass(frozen=True, slots=True)
class ThroughputOptions:
    duration: float = 10.0
    rounds: int = 3
    transport: str = "udp"
    cipher: str = "AES-256-GCM"
    contenders: tuple[str, ...] = CONTENDERS




def _ping(lab: Lab, ns: str) -> float:
    done = lab.run(ns, ["ping", "-c", "20", "-i", "0.05", "-W", "1", SERVER_TUN_IP],
                   timeout=20)
    rtts = parse_ping_rtts(done.stdout)
    if not rtts:
        raise MeasureError("ping", f"no replies: {done.stdout[-300:]} {done.stderr[-300:]}")
    return statistics.median(rtts)


def _wait_iperf_server(lab: Lab, ns: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = lab.run(ns, ["ss", "-H", "-tln", "sport", "=", f":{IPERF_PORT}"], timeout=5)
        if done.stdout.strip():
            return
        time.sleep(0.05)
    raise LabError("iperf3 server did not listen")


def _segments(lab: Lab, namespaces: tuple[str, str], transport: str) -> int:
    return sum(inner_segments(lab, ns, transport) for ns in namespaces)


def _iperf(lab: Lab, namespaces: tuple[str, str], pair: Pair, streams: int,
           opts: ThroughputOptions) -> dict[str, float]:
    client_ns, duration = namespaces[1], opts.duration
    cpu0 = (pair.server.cpu_seconds(), pair.client.cpu_seconds())
    pk0 = _segments(lab, namespaces, opts.transport)
    t0 = time.monotonic()
    cmd = ["iperf3", "-c", SERVER_TUN_IP, "-p", str(IPERF_PORT), "-t", f"{duration:g}",
           "-P", str(streams), "-J"]
    done = lab.run(client_ns, cmd, timeout=duration + 30)
    elapsed = time.monotonic() - t0
    pk1 = _segments(lab, namespaces, opts.transport)
    cpu1 = (pair.server.cpu_seconds(), pair.client.cpu_seconds())
    result = parse_iperf3(done.stdout)
    if result.seconds < duration * 0.8:
        raise MeasureError("iperf3", f"ran {result.seconds:.1f} s of {duration:g} s")
    p = f"p{streams}"
    return {
        f"{p}_mbps": result.mbps,
        f"{p}_retransmits": float(result.retransmits),
        f"{p}_pps": (pk1 - pk0) / elapsed,
        f"{p}_cpu_server": cpu1[0] - cpu0[0],
        f"{p}_cpu_client": cpu1[1] - cpu0[1],
    }


def measure_contender(lab: Lab, server_ns: str, client_ns: str, contender: str, *,
                      workdir: Path, opts: ThroughputOptions) -> dict[str, float]:
    spec = TunnelSpec(transport=opts.transport, cipher=opts.cipher)
    pair = start_pair(lab, server_ns, client_ns, contender, workdir=workdir, spec=spec)
    iperf: subprocess.Popen[bytes] | None = None
    try:
        values: dict[str, float] = {"rtt_us": _ping(lab, client_ns)}
        iperf = lab.spawn(server_ns, ["iperf3", "-s", "-B", SERVER_TUN_IP,
                                      "-p", str(IPERF_PORT)])
        _wait_iperf_server(lab, server_ns)
        for streams in STREAMS:
            for attempt in range(IPERF_ATTEMPTS):
                try:
                    values.update(_iperf(lab, (server_ns, client_ns), pair, streams, opts))
                    break
                except MeasureError:  # iperf3's control connection failed: once more
                    if attempt + 1 == IPERF_ATTEMPTS:
                        raise
                    time.sleep(1.0)
        return values
    finally:
        if iperf is not None:
            lab.stop(iperf)
        stop_pair(lab, pair)


def run_throughput(opts: ThroughputOptions, progress: Progress) -> dict[str, Any]:
    def summary(v: dict[str, float]) -> str:
        return (f"P1 {v['p1_mbps']:.0f} Mbit/s, P4 {v['p4_mbps']:.0f} Mbit/s, "
                f"RTT {v['rtt_us']:.0f} µs")

    rounds, errors = run_rounds(opts.contenders, opts.rounds, partial(measure_contender, opts=opts),
                                summary, progress)
    config = {"duration_s": opts.duration, "rounds": opts.rounds,
              "transport": opts.transport, "cipher": opts.cipher, "control": "tls-crypt"}
    return build_report("throughput", config, opts.contenders, METRICS, rounds, errors=errors)
