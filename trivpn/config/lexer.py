"""Tokenizer for OpenVPN config lines: :mod:`trivpn.protocol.optionline` with the file and
line of the config in its errors (pushed options are split by the same function)."""

from __future__ import annotations

from pathlib import Path

from trivpn.config.errors import ConfigError
from trivpn.protocol.optionline import (
    MAX_TOKEN_CHARS,
    MAX_TOKENS,
    OptionLineError,
    split_option_line,
)

__all__ = ["MAX_TOKENS", "MAX_TOKEN_CHARS", "tokenize_line"]


def tokenize_line(
    line: str, path: Path | str | None = None, lineno: int | None = None
) -> list[str]:
    """Split one config line into tokens as OpenVPN's ``parse_line()`` does
    (:func:`~trivpn.protocol.optionline.split_option_line`); a bad line is a
    :class:`ConfigError` naming ``path`` and ``lineno``."""
    try:
        return split_option_line(line)
    except OptionLineError as exc:
        raise ConfigError(exc.reason, path, lineno) from None
