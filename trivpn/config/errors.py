"""The config layer's one exception type."""

from __future__ import annotations

from pathlib import Path

COMMAND_LINE = Path("[command line]")
"""The "file" of directives given as command-line arguments (OpenVPN's ``[CMD-LINE]``); their
"line" is the argument's position on the command line (1 = the first argument)."""


def location_text(path: Path | None, line: int | None) -> str:
    """``client.conf:12``, ``client.conf``, or ``command line, argument 3``."""
    if path is None:
        return ""
    if path == COMMAND_LINE:
        return "command line" if line is None else f"command line, argument {line}"
    return str(path) if line is None else f"{path}:{line}"


class ConfigError(Exception):
    """A config file (or pushed option) is not acceptable.

    Carries the file, the 1-based line, and what was expected, and renders as
    ``server.conf:12: 'port' takes 1 argument, got 2``.
    """

    def __init__(self, reason: str, path: Path | str | None = None,
                 line: int | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        self.line = line
        super().__init__(self.location_prefix() + reason)

    def location_prefix(self) -> str:
        if self.path is None:
            return ""
        return location_text(self.path, self.line) + ": "
