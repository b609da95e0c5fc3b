"""Read OpenVPN config text into directives (``options.c`` ``read_config_file()`` rules).

Handles what is file syntax rather than option meaning: comments and quoting (via the lexer),
a UTF-8 BOM, a leading ``--``, inline ``<name>…</name>`` blocks, ``config FILE`` includes and
``cd DIR``. Relative paths resolve against the top-level config file's directory, changed by
``cd`` (OpenVPN resolves against its working directory, which ``cd`` changes while parsing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trivpn.config.errors import ConfigError
from trivpn.config.lexer import tokenize_line

MAX_INCLUDE_DEPTH = 10
MAX_LINE_BYTES = 254  # fgets() into OPTION_LINE_SIZE (256) must also hold the newline
BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive: ``name`` and ``args`` as tokenized, where it was written, and for an
    inline block (``<ca>…</ca>``) its verbatim content (then ``args`` is empty).

    ``base_dir``: the directory a relative file name in it means, when that is not the
    config's (set for the command-line form, where arguments resolve against the working
    directory and each ``--config`` file against its own; see config/cmdline.py)."""

    name: str
    args: tuple[str, ...]
    path: Path
    line: int
    inline: str | None = None
    base_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """All directives of a config file with its includes expanded, in order."""

    path: Path
    directives: tuple[Directive, ...]
    base_dir: Path


def read_config(path: Path | str, base_dir: Path | None = None) -> ConfigSource:
    """Read a config file from disk (ConfigError if it cannot be read). ``base_dir``: where
    relative names resolve, when not the file's own directory (a client-config-dir file's
    names resolve as the server config's do)."""
    path = Path(path)
    try:
        text = _read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", path) from None
    return read_config_text(text, path, base_dir)


def read_config_text(text: str, path: Path | str,
                     base_dir: Path | None = None) -> ConfigSource:
    """Read config text that claims to live at ``path`` (used for messages and relative paths;
    ``config`` includes are still read from disk)."""
    path = Path(path)
    reader = _Reader(base_dir if base_dir is not None else path.parent.absolute())
    reader.read(text, path, depth=1)
    return ConfigSource(path=path, directives=tuple(reader.directives), base_dir=reader.base_dir)


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def resolve(base_dir: Path, name: str) -> Path:
    """Resolve a file name written in a config against the effective directory."""
    p = Path(name)
    return p if p.is_absolute() else base_dir / p


class _Reader:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.directives: list[Directive] = []

    def read(self, text: str, path: Path, depth: int) -> None:
        if text.startswith(BOM):
            text = text[len(BOM):]
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        i = 0
        while i < len(lines):
            lineno = i + 1
            raw = lines[i]
            i += 1
            if len(raw.encode("utf-8", errors="surrogateescape")) > MAX_LINE_BYTES:
                raise ConfigError(
                    f"line is longer than {MAX_LINE_BYTES} bytes (OpenVPN's maximum line length)",
                    path, lineno)
            tokens = tokenize_line(raw, path, lineno)
            if not tokens:
                continue
            if tokens[0].startswith("--"):
                tokens[0] = tokens[0][2:]
            name = tokens[0]
            if len(tokens) == 1 and len(name) > 2 and name.startswith("<") and name.endswith(">"):
                tag = name[1:-1]
                content, i = self._inline_block(lines, i, tag, path, lineno)
                self.directives.append(Directive(tag, (), path, lineno, content))
                continue
            args = tuple(tokens[1:])
            if name == "config" and len(args) == 1:
                self._include(args[0], path, lineno, depth)
            elif name == "cd" and len(args) == 1:
                self.base_dir = resolve(self.base_dir, args[0])
            else:
                self.directives.append(Directive(name, args, path, lineno))

    @staticmethod
    def _inline_block(lines: list[str], start: int, tag: str, path: Path,
                      opening_line: int) -> tuple[str, int]:
        end_tag = f"</{tag}>"
        for j in range(start, len(lines)):
            if lines[j].lstrip(" \t").startswith(end_tag):
                content = "".join(line + "\n" for line in lines[start:j])
                return content, j + 1
        raise ConfigError(f"inline block <{tag}> has no end tag {end_tag}", path, opening_line)

    def _include(self, name: str, path: Path, lineno: int, depth: int) -> None:
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(
                f"'config {name}' exceeds {MAX_INCLUDE_DEPTH} levels of nested config files "
                "(does a file include itself?)", path, lineno)
        target = resolve(self.base_dir, name)
        try:
            text = _read_text(target)
        except OSError as exc:
            raise ConfigError(
                f"cannot read included config file '{target}': {exc.strerror or exc}",
                path, lineno) from None
        self.read(text, target, depth + 1)
