"""``trivpn run CONFIG``: bring up a client or server tunnel from an OpenVPN config file."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import trio

from trivpn.config import ConfigError, load_config
from trivpn.logging import configure_logging, get_logger, level_for_verb
from trivpn.runtime.client import run_client
from trivpn.runtime.metrics import parse_listen
from trivpn.runtime.operator import OperatorTools
from trivpn.runtime.server import run_server
from trivpn.runtime.stats import EventTap, install_event_tap


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run a client or server from an OpenVPN config file",
                            description="Run a client or server from an OpenVPN config file.")
    parser.add_argument("config", type=Path, help="OpenVPN config file (.conf or .ovpn)")
    parser.add_argument("--log-format", choices=("json", "console"), default=None,
                        help="log line format (default: console on a terminal, else json)")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="append log lines to this file instead of stderr")
    parser.add_argument("--metrics-listen", type=_listen_address, default=None,
                        metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    parser.set_defaults(handler=handle)


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def handle(args: argparse.Namespace) -> int:
    try:
        options = load_config(args.config)
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    stream = None
    pid_file: Path | None = None
    if args.log_file is not None:
        stream = args.log_file.open("a", buffering=1)
    try:
        verb = options.verb if options.verb else 3
        configure_logging(verb=verb, fmt=args.log_format or ("json" if stream else None),
                          stream=stream)
        tap = EventTap(output_level=level_for_verb(verb))  # operator tools see every event
        install_event_tap(tap)
        tools = OperatorTools(tap, metrics_listen=args.metrics_listen,
                              status_path=options.status.path if options.status else None)
        log = get_logger()
        log.info("trivpn_starting", config=str(args.config), role=options.role)
        if options.writepid is not None:
            write_pid_file(options.writepid)
            pid_file = options.writepid
        main = run_server if options.role == "server" else run_client
        code: int = trio.run(functools.partial(main, options, log, tools))
        return code
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the pid file
        print(f"trivpn: cannot write pid file '{options.writepid}': "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if pid_file is not None:  # OpenVPN removes it at exit (init.c, remove_pid_file)
            with contextlib.suppress(OSError):
                pid_file.unlink()
        if stream is not None:
            stream.close()


def write_pid_file(path: Path) -> None:
    """``writepid FILE``: our process id and a newline, written before privileges are dropped
    (OpenVPN: init.c, write_pid_file)."""
    path.write_text(f"{os.getpid()}\n")
