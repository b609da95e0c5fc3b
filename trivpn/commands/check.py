"""``trivpn check CONFIG [--no-files] [--json]``: would ``trivpn run`` start with this config?

Like ``nginx -t``: parse (a config file and/or OpenVPN's command-line form, as ``trivpn run``),
read the referenced files, build what a run needs without sending anything or touching the
system, print the plan, and exit 0 (it would run) or 2 (it would not; the error names the
file and line). See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from trivpn.commands.run import split_run_args
from trivpn.config import ConfigError
from trivpn.config.cmdline import expand_command_line
from trivpn.config.parser import parse_source
from trivpn.runplan import SCHEMA, build_plan, place, render_text

EXIT_OK = 0
EXIT_WOULD_NOT_RUN = 2
OWN_FLAGS = {"--no-files": 0, "--json": 0, "-h": 0, "--help": 0}


def register(sub: Any) -> None:
    sub.add_parser("check", help="check a config: print what 'trivpn run' would do, exit 0 "
                                 "if it would start, 2 if not", add_help=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trivpn check", allow_abbrev=False,
        usage="trivpn check CONFIG [--no-files] [--json] [--OPENVPN-OPTION ARGS...]...",
        description="Parse the config (and OpenVPN command-line options after it, as 'trivpn "
                    "run' takes them), read the files it names, build the TLS context, keys, "
                    "tunnel and pool plan without network traffic or changes to the system, "
                    "print the plan, and exit 0 if 'trivpn run' would start, 2 if not.")
    parser.add_argument("--no-files", action="store_true",
                        help="do not read the files the config names (ca, cert, key, ...)")
    parser.add_argument("--json", action="store_true",
                        help="print the plan as one JSON object (keys: docs/cli.md)")
    return parser


def main(argv: Sequence[str], first_position: int = 2) -> int:
    parser = build_parser()
    try:
        split = split_run_args(argv, first_position, OWN_FLAGS)
    except ConfigError as exc:
        return _fail(exc, as_json="--json" in argv)
    args = parser.parse_args(split.own)
    if not split.directives:
        parser.print_usage(sys.stderr)
        print("trivpn check: give a config file or OpenVPN options", file=sys.stderr)
        return EXIT_WOULD_NOT_RUN
    try:
        source = expand_command_line(split.directives)
        options = parse_source(source)
        plan = build_plan(options, source.directives, files=not args.no_files,
                          now=datetime.now(UTC))
    except ConfigError as exc:
        return _fail(exc, as_json=args.json)
    if args.json:
        print(json.dumps({"schema": SCHEMA, "ok": True, "exit_code": EXIT_OK, "error": None,
                          "plan": plan}, indent=2))
    else:
        print("\n".join(render_text(plan)))
        print(f"OK: 'trivpn run' would start this {plan['role']} (nothing was sent, nothing "
              "on this host was changed).")
    return EXIT_OK


def _fail(exc: ConfigError, *, as_json: bool) -> int:
    if as_json:
        error = {"message": str(exc), "reason": exc.reason} | place(exc.path, exc.line)
        print(json.dumps({"schema": SCHEMA, "ok": False, "exit_code": EXIT_WOULD_NOT_RUN,
                          "error": error, "plan": None}, indent=2))
    else:
        print(f"trivpn check: {exc}", file=sys.stderr)
        print("FAILED: 'trivpn run' would not start with this config.", file=sys.stderr)
    return EXIT_WOULD_NOT_RUN
