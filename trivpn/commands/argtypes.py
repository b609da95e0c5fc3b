"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse

MAX_PORT = 65535


def port(text: str) -> int:
    """An argparse type: a TCP/UDP port number 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"port must be 1-{MAX_PORT}, got {value}")
    return value
