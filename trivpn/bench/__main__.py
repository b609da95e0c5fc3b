"""``python -m trivpn.bench [throughput|rtt|handshakes|idle] [options]`` (``scripts/bench``).

Needs root (namespaces), ``iperf3``, ``ping``, ``ss`` and ``openvpn``. Prints progress on
stderr and the result table on stdout; ``--json FILE`` writes the report document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from trivpn.bench import handshakes, idle, rtt, throughput
from trivpn.bench.contenders import CHECKOUT_PREFIX, CONTENDERS, checkout_of
from trivpn.bench.report import Metric, format_table
from trivpn.bench.swarm import swarm_main
from trivpn.protocol.datachannel import CIPHERS

COMMANDS = ("throughput", "rtt", "handshakes", "idle", "swarm")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port_range(text: str) -> range:
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError("expected LO-HI") from None
    if not sep or not 1024 <= first <= last <= 65535:
        raise argparse.ArgumentTypeError("expected LO-HI within 1024-65535")
    return range(first, last + 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench",
                                     description="trivpn against OpenVPN 2.6 in namespaces.")
    sub = parser.add_subparsers(dest="command", metavar="BENCHMARK")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rounds", type=_positive_int, default=3)
        p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
        p.add_argument("--cipher", type=str.upper, default="AES-256-GCM",
                       choices=sorted(c for c, (_, aead) in CIPHERS.items() if aead))
        p.add_argument("--contenders", default=",".join(CONTENDERS),
                       help="comma-separated subset of: " + ", ".join(CONTENDERS)
                       + f", or {CHECKOUT_PREFIX}DIR (trivpn from another checkout)")
        p.add_argument("--json", type=Path, metavar="FILE", help="write the report here")

    tp = sub.add_parser("throughput", help="iperf3 TCP 1 and 4 streams, idle RTT, CPU, pkt/s")
    common(tp)
    tp.add_argument("--duration", type=_positive_float, default=10.0,
                    help="seconds per iperf3 run (default 10)")

    rt = sub.add_parser("rtt", help="idle RTT only, with CPU per ping (seconds per round)")
    common(rt)
    rt.set_defaults(rounds=5)
    rt.add_argument("--pings", type=_positive_int, default=50,
                    help="pings per round (default 50)")
    rt.add_argument("--interval", type=_positive_float, default=0.05,
                    help="seconds between pings (default 0.05; ping needs root below 0.2)")

    hs = sub.add_parser("handshakes", help="full handshakes per second a server completes")
    common(hs)
    hs.add_argument("--count", type=_positive_int, default=300,
                    help="handshakes per measurement (default 300)")
    hs.add_argument("--concurrency", type=_positive_int,
                    default=handshakes.DEFAULT_CONCURRENCY,
                    help="handshakes in flight, over all swarm processes (default "
                         f"{handshakes.DEFAULT_CONCURRENCY}: trivpn's per-address limit of "
                         "handshakes in progress; the swarm has one address)")
    hs.add_argument("--procs", type=_positive_int, default=2,
                    help="swarm (load generator) processes (default 2)")

    idle = sub.add_parser("idle", help="N idle clients on one trivpn server: memory, CPU")
    idle.add_argument("--clients", type=_positive_int, default=1000)
    idle.add_argument("--rest", type=_positive_float, default=30.0,
                      help="seconds at rest to measure CPU over (default 30)")
    idle.add_argument("--keepalive", type=_positive_int, default=10,
                      help="ping interval in seconds (ping-restart is 6x)")
    idle.add_argument("--json", type=Path, metavar="FILE")

    sw = sub.add_parser("swarm", help=argparse.SUPPRESS)  # internal: runs in the client netns
    sw.add_argument("config", type=Path)
    sw.add_argument("--mode", choices=("handshakes", "idle"), required=True)
    sw.add_argument("--count", type=_positive_int, required=True)
    sw.add_argument("--concurrency", type=_positive_int, default=8)
    sw.add_argument("--start-rate", type=_positive_float, default=None)
    sw.add_argument("--start-burst", type=_positive_int, default=90)
    sw.add_argument("--timeout", type=_positive_float, default=120.0)
    sw.add_argument("--start-at", type=_positive_float, default=None)
    sw.add_argument("--ports", type=_port_range, default=None)
    return parser


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _contenders(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise SystemExit("unknown contenders: (none)")
    for name in names:
        try:
            checkout_of(name)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    return names


def _preflight(need_openvpn: bool, need_iperf3: bool = True) -> str | None:
    if os.geteuid() != 0:
        return "the benchmark needs root (network namespaces, TUN devices)"
    tools = (["ip", "ping", "ss"] + (["iperf3"] if need_iperf3 else [])
             + (["openvpn"] if need_openvpn else []))
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    return None


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _finish(report: dict[str, Any], metrics: Sequence[Metric], json_path: Path | None) -> int:
    sys.stdout.write(format_table(report, metrics) + "\n")
    for error in report["errors"]:
        sys.stdout.write(f"error: {error}\n")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not report["errors"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help"):
        args_list.insert(0, "throughput")
    args = build_parser().parse_args(args_list)
    if args.command == "swarm":
        return swarm_main(args)
    contenders = _contenders(args.contenders) if args.command != "idle" else ("trivpn",)
    problem = _preflight("openvpn" in contenders, need_iperf3=args.command == "throughput")
    if problem is not None:
        _say(f"bench: {problem}")
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    try:
        if args.command == "throughput":
            report = throughput.run_throughput(throughput.ThroughputOptions(
                duration=args.duration, rounds=args.rounds, transport=args.transport,
                cipher=args.cipher, contenders=contenders), _say)
            return _finish(report, throughput.METRICS, args.json)
        if args.command == "rtt":
            report = rtt.run_rtt(rtt.RttOptions(
                pings=args.pings, interval=args.interval, rounds=args.rounds,
                transport=args.transport, cipher=args.cipher, contenders=contenders), _say)
            return _finish(report, rtt.METRICS, args.json)
        if args.command == "handshakes":
            if args.transport != "udp":
                _say("bench: the handshake swarm speaks UDP only")
                return 2
            report = handshakes.run_handshakes(handshakes.HandshakeOptions(
                count=args.count, concurrency=args.concurrency, procs=args.procs,
                rounds=args.rounds,
                transport=args.transport, cipher=args.cipher, contenders=contenders), _say)
            return _finish(report, handshakes.METRICS, args.json)
        report = idle.run_idle(idle.IdleOptions(clients=args.clients, rest=args.rest,
                                                keepalive=args.keepalive), _say)
        return _finish(report, idle.METRICS, args.json)
    except KeyboardInterrupt:
        _say("bench: interrupted; everything it started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
