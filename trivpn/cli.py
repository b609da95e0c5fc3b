"""The ``trivpn`` command line. The only module that prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trivpn import __version__
from trivpn.commands import demo as demo_cmd
from trivpn.commands import doctor as doctor_cmd
from trivpn.commands import init_server as init_server_cmd
from trivpn.commands import profile as profile_cmd
from trivpn.commands import run as run_cmd
from trivpn.pki import cli as pki_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trivpn",
        description="An OpenVPN 2.6 compatible VPN with diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"trivpn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run_cmd.register(sub)
    doctor_cmd.register(sub)
    pki_cli.register(sub)
    demo_cmd.register(sub)
    profile_cmd.register(sub)
    init_server_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
