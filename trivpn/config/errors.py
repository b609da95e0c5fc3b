"""The config layer's one exception type."""

from __future__ import annotations

from pathlib import Path


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
        if self.line is None:
            return f"{self.path}: "
        return f"{self.path}:{self.line}: "
