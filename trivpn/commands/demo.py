"""``trivpn demo [--keep] [--stop]``: a working tunnel between two namespaces, step by step.

The work is done by :mod:`trivpn.demo.runner`; this module parses arguments, turns SIGTERM into
the same clean teardown as Ctrl-C, and writes the demo's lines to stdout (progress lines are
redrawn in place on a terminal and left out otherwise).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any, TextIO

from trivpn.demo.runner import DemoSettings, run_demo, stop_demos


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="show a tunnel between two network namespaces (root)",
        description="Create two network namespaces joined by a veth pair (198.18.0.0/15), a "
                    "throwaway PKI and classic server/client configs; start a trivpn server "
                    "and client, ping through the tunnel, run 'trivpn doctor', show the JSON "
                    "log and tear everything down. Needs root.")
    parser.add_argument("--keep", action="store_true",
                        help="leave the tunnel running and print how to enter and stop it")
    parser.add_argument("--stop", action="store_true",
                        help="stop every demo left running by --keep")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="how long to wait for the tunnel (default 30 s)")
    parser.set_defaults(handler=handle)


class TerminalOutput:
    """Lines to ``stream``; progress redrawn in place only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._progress_width = 0

    def line(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, text: str) -> None:
        if not self.tty:
            return
        self._clear()
        if text:
            self.stream.write(text)
            self._progress_width = len(text)
        self.stream.flush()

    def _clear(self) -> None:
        if self._progress_width:
            self.stream.write("\r" + " " * self._progress_width + "\r")
            self._progress_width = 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def handle(args: argparse.Namespace) -> int:
    out = TerminalOutput(sys.stdout)
    if args.stop:
        if args.keep:
            print("trivpn demo: --stop and --keep exclude each other", file=sys.stderr)
            return 2
        return stop_demos(out)
    if not args.timeout > 0:
        print("trivpn demo: --timeout must be positive", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_demo(out, DemoSettings(keep=args.keep, tunnel_timeout=args.timeout))
    finally:
        signal.signal(signal.SIGTERM, previous)
