"""The ``trivpn`` command line. The only module that prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trivpn import __version__
from trivpn.commands import check as check_cmd
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
        epilog="As a drop-in for 'openvpn': trivpn --config FILE [--OPENVPN-OPTION ARGS...]... "
               "(see 'trivpn run --help').",
    )
    parser.add_argument("--version", action="version", version=f"trivpn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run_cmd.register(sub)
    check_cmd.register(sub)
    doctor_cmd.register(sub)
    pki_cli.register(sub)
    demo_cmd.register(sub)
    profile_cmd.register(sub)
    init_server_cmd.register(sub)
    return parser


SUBCOMMANDS = ("run", "check", "doctor", "pki", "demo", "profile", "init-server")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return run_cmd.main(argv[1:], first_position=2)
    if argv and argv[0] == "check":
        return check_cmd.main(argv[1:], first_position=2)
    if argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        # a drop-in for 'openvpn': `trivpn --config X ...`, `trivpn --client --dev tun ...`
        return run_cmd.main(argv, first_position=1)
    if (len(argv) == 1 and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-")
            and Path(argv[0]).is_file()):
        return run_cmd.main(argv, first_position=1)  # `openvpn client.conf`
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
