"""``trivpn doctor CONFIG``: find out why a VPN does not work, with evidence and a fix.

``trivpn doctor CONFIG [--json] [--timeout S] [--check ID ...] [--target HOST ...]`` runs the
checks for the config's role (``--target``: hosts tunnel.beyond probes through the tunnel);
``trivpn doctor --log FILE [--json]`` explains the known error lines of an existing OpenVPN or
trivpn log; ``trivpn doctor --watch CONFIG`` (or ``--watch --management HOST:PORT|PATH``)
attaches to a running tunnel's management interface and explains its events as they happen
(trivpn/diagnostics/watch.py) until the connection closes, Ctrl-C/SIGTERM, or
``--watch-time S``. Exit status: 0 when nothing failed, 1 when a check failed, 2
for usage errors (bad arguments, unreadable config or log file, unknown check id).

Tests may set the environment variable ``TRIVPN_DOCTOR_NETNS`` to the name of an existing
network namespace; every namespace-aware check then looks and probes inside it. It is not a
user-facing option.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from trivpn.config import ConfigError, Options, load_config_salvaged, tokenize_line
from trivpn.diagnostics.logscan import scan_log_file
from trivpn.diagnostics.model import Check, DoctorContext, Role
from trivpn.diagnostics.registry import all_checks
from trivpn.diagnostics.render import render_human, render_json, use_color
from trivpn.diagnostics.runner import (
    DoctorReport,
    UnknownCheckError,
    make_report,
    run_checks,
    select_checks,
)
from trivpn.diagnostics.tunnel_session import TunnelBroker
from trivpn.diagnostics.watch import (
    DEFAULT_INTERVAL,
    WatchEvent,
    WatchOutcome,
    address_from_options,
    render_event,
    watch,
)
from trivpn.runtime.management_client import (
    ManagementAddress,
    ManagementClientError,
    parse_address,
)

NETNS_ENV = "TRIVPN_DOCTOR_NETNS"
DEFAULT_TIMEOUT = 10.0
USAGE_ERROR = 2


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "doctor", help="check a client or server config and explain what is wrong",
        description="Check an OpenVPN client or server config (files, certificates, routes, "
                    "reachability of the server, TLS) and explain every problem with its "
                    "evidence and fix; or explain the error lines of an existing log.")
    parser.add_argument("config", type=Path, nargs="?",
                        help="OpenVPN config file (.conf or .ovpn)")
    parser.add_argument("--log", type=Path, metavar="FILE", default=None,
                        help="explain the known error lines of an OpenVPN or trivpn log "
                             "instead of checking a config")
    parser.add_argument("--watch", action="store_true",
                        help="attach to the running tunnel of CONFIG (or of --management) "
                             "through its management interface and explain events as they "
                             "happen")
    parser.add_argument("--management", metavar="HOST:PORT|PATH", default=None,
                        help="with --watch: the management address (instead of reading it "
                             "from CONFIG)")
    parser.add_argument("--password-file", type=Path, metavar="FILE", default=None,
                        help="with --watch --management: the management password file")
    parser.add_argument("--watch-time", type=_positive_seconds, metavar="S", default=None,
                        help="with --watch: stop after S seconds")
    parser.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, metavar="N",
                        help=f"with --watch: seconds between counter updates "
                             f"(default {DEFAULT_INTERVAL})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (with --watch: one per event and line)")
    parser.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT,
                        metavar="S", help=f"time limit per check in seconds "
                                          f"(default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--check", nargs="+", metavar="ID", default=None, dest="checks",
                        help="run only these checks (and those they depend on)")
    parser.add_argument("--target", action="append", metavar="HOST", default=[],
                        dest="targets",
                        help="a host that should be reachable through the tunnel (IP "
                             "address or name; repeatable): tunnel.beyond probes it through "
                             "the data channel and tells where the path ends")
    parser.set_defaults(handler=handle)


def guess_role(path: Path) -> Role:
    """The role of a config that may not parse: server if it says ``server``, ``mode server``
    or ``tls-server``, else client."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "client"
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            words = tokenize_line(line, path, number)
        except ConfigError:
            continue
        if not words:
            continue
        name = words[0].removeprefix("--")
        if name in ("server", "tls-server") or (name == "mode" and words[1:2] == ["server"]):
            return "server"
    return "client"


def _emit(report: DoctorReport, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(render_json(report))
    else:
        sys.stdout.write(render_human(report, color=use_color(sys.stdout)))
    sys.stdout.flush()


def _usage(message: str) -> int:
    print(f"trivpn doctor: {message}", file=sys.stderr)
    return USAGE_ERROR


def handle(args: argparse.Namespace) -> int:
    if args.watch:
        return _handle_watch(args)
    if args.management is not None or args.watch_time is not None:
        return _usage("--management and --watch-time go with --watch")
    if args.log is not None:
        if args.config is not None or args.checks is not None or args.targets:
            return _usage("--log FILE takes no CONFIG, no --check and no --target")
        return _handle_log(args.log, args.json)
    if args.config is None:
        return _usage("give a CONFIG file, or --log FILE")
    return _handle_config(args.config, as_json=args.json, timeout=args.timeout,
                          only=args.checks, targets=tuple(args.targets))


def _handle_log(path: Path, as_json: bool) -> int:
    start = time.monotonic()
    try:
        scan = scan_log_file(path)
    except OSError as exc:
        return _usage(f"cannot read log file {path}: {exc.strerror or exc}")
    report = make_report(scan.results, config=str(path), role=scan.role,
                         duration_s=time.monotonic() - start)
    _emit(report, as_json)
    return report.exit_code


def build_context(path: Path, timeout: float, netns: str | None = None,
                  targets: tuple[str, ...] = ()) -> DoctorContext:
    """Parse ``path`` (without reading referenced files; the checks do) into a context. Lines
    that fail are left out and listed in ``config_errors``, so the network checks still run
    with what parsed; a config that cannot be parsed at all gives ``options=None`` and the
    guessed role."""
    options, errors = load_config_salvaged(path)
    # A TLS server in peer-to-peer mode (tls-server without mode server) waits for its peer
    # like a server does: server-side checks apply, probing it as a client would not.
    role: Role = ((options.tls_role if options.tls_role == "server" else options.role)
                  if options is not None else guess_role(path))
    return DoctorContext(config_path=path, options=options, role=role, timeout=timeout,
                         netns=netns, config_errors=errors, targets=targets)


def _handle_config(path: Path, *, as_json: bool, timeout: float,
                   only: Sequence[str] | None, targets: tuple[str, ...] = ()) -> int:
    if not path.is_file():
        return _usage(f"config file {path} does not exist or is not a file")
    checks: tuple[Check, ...] = all_checks()
    ctx = build_context(path, timeout, os.environ.get(NETNS_ENV) or None, targets)
    try:
        select_checks(checks, ctx.role, only)
    except UnknownCheckError as exc:
        return _usage(str(exc))
    report = trio.run(_run, checks, ctx, only)
    _emit(report, as_json)
    return report.exit_code


async def _run(checks: Sequence[Check], ctx: DoctorContext,
               only: Sequence[str] | None) -> DoctorReport:
    # One post-handshake session for every check that needs the data channel; closing it
    # says goodbye to the server (tunnel_session.py).
    async with TunnelBroker() as broker:
        return await run_checks(checks, replace(ctx, tunnel=broker), only=only)


def _handle_watch(args: argparse.Namespace) -> int:
    if args.log is not None or args.checks is not None or args.targets:
        return _usage("--watch takes no --log, no --check and no --target")
    if not 1 <= args.interval <= 3600:
        return _usage("--interval must be from 1 to 3600 seconds")
    options: Options | None = None
    if args.config is not None:
        if not args.config.is_file():
            return _usage(f"config file {args.config} does not exist or is not a file")
        options, _errors = load_config_salvaged(args.config)
    address: ManagementAddress | None
    if args.management is not None:
        try:
            address = parse_address(args.management, args.password_file)
        except ValueError as exc:
            return _usage(f"--management {args.management}: {exc}")
    elif options is not None:
        address = address_from_options(options)
        if address is None:
            return _usage(f"{args.config} has no 'management' line: give --management "
                          "HOST:PORT|PATH")
    else:
        return _usage("--watch needs a CONFIG with a 'management' line, or --management")
    as_json = args.json
    color = use_color(sys.stdout)

    def emit(event: WatchEvent) -> None:
        if as_json:
            sys.stdout.write(json.dumps(event.as_json(), default=str) + "\n")
        else:
            sys.stdout.write(render_event(event, color=color))
        sys.stdout.flush()

    failure: ManagementClientError | None = None
    outcome: WatchOutcome | None = None
    try:
        outcome = trio.run(_watch, address, emit, options, args.interval, args.watch_time)
    except* ManagementClientError as group:
        failure = next(e for e in group.exceptions if isinstance(e, ManagementClientError))
    if failure is not None or outcome is None:
        print(f"trivpn doctor: {failure}", file=sys.stderr)
        return USAGE_ERROR
    return 1 if outcome.worst == "fail" else 0


async def _watch(address: ManagementAddress, emit: Any, options: Options | None,
                 interval: int, duration: float | None) -> WatchOutcome:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop.set()
                    return

        nursery.start_soon(on_signals)
        outcome = await watch(address, emit, options=options, interval=interval,
                              duration=duration, stop=stop)
        nursery.cancel_scope.cancel()
    return outcome
