"""``trivpn run CONFIG``: bring up a client or server tunnel from an OpenVPN config file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import trio

from trivpn.config import ConfigError, load_config
from trivpn.logging import configure_logging, get_logger
from trivpn.runtime.client import run_client
from trivpn.runtime.server import run_server


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run a client or server from an OpenVPN config file",
                            description="Run a client or server from an OpenVPN config file.")
    parser.add_argument("config", type=Path, help="OpenVPN config file (.conf or .ovpn)")
    parser.add_argument("--log-format", choices=("json", "console"), default=None,
                        help="log line format (default: console on a terminal, else json)")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="append log lines to this file instead of stderr")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        options = load_config(args.config)
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    stream = None
    if args.log_file is not None:
        stream = args.log_file.open("a", buffering=1)
    try:
        configure_logging(verb=options.verb if options.verb else 3,
                          fmt=args.log_format or ("json" if stream else None), stream=stream)
        log = get_logger()
        log.info("trivpn_starting", config=str(args.config), role=options.role)
        main = run_server if options.role == "server" else run_client
        code: int = trio.run(main, options, log)
        return code
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    finally:
        if stream is not None:
            stream.close()
