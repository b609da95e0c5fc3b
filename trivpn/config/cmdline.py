"""OpenVPN's command-line form: ``--name args...`` arguments as directives.

``openvpn --config client.conf --verb 4`` and ``openvpn --client --dev tun --remote HOST ...``
work the way OpenVPN reads them (OpenVPN src/openvpn/options_parse.c, parse_argv(), and
options.c, add_option()):

* every ``--name`` starts a directive; the arguments that follow it up to the next ``--``
  token are its arguments. It is the same directive as a config-file line ``name args...``
  (same table, same checks); its errors name ``command line, argument N`` (N counts the
  command line's arguments from 1) instead of ``file:line``.
* ``--config FILE`` reads FILE *in place*: its directives are applied where the argument
  stands, so a later argument overrides the file and an earlier one is overridden by it
  (checked against the real openvpn: ``--verb 5 --config f`` keeps f's ``verb``).
* a single argument without ``--`` is a config file (``openvpn client.conf``).
* ``--cd DIR`` changes the directory before what follows is read, as OpenVPN's chdir(2).

Relative file names: after a ``cd`` (on the command line or in a file) every relative name
resolves against that directory, as in OpenVPN, where files are opened after all options
are read, in the last ``cd`` directory. Without one, a command-line argument resolves against
the working directory and a config file's line against that file's directory (as for
``trivpn run FILE``). With Debian's units (``WorkingDirectory=/etc/openvpn/client`` and
``--config NAME.conf``, or ``--cd /etc/openvpn --config /etc/openvpn/NAME.conf``) both rules
name the same files.

Inline blocks (``<ca>...</ca>``) exist only in files: ``--ca`` on the command line names a
file, as in OpenVPN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from trivpn.config.errors import COMMAND_LINE, ConfigError
from trivpn.config.reader import ConfigSource, Directive, read_config_text, resolve

MAX_ARGS = 15  # OpenVPN's MAX_PARMS (16) holds the name and at most 15 arguments


def split_arguments(argv: Sequence[str], first_position: int = 1) -> list[Directive]:
    """Group ``argv`` into directives as OpenVPN's parse_argv() does (no files are read).

    ``first_position`` is the position of ``argv[0]`` on the whole command line, for
    messages (``trivpn run --verb 4``: 2)."""
    if len(argv) == 1 and not argv[0].startswith("--"):
        return [Directive("config", (argv[0],), COMMAND_LINE, first_position)]
    found: list[Directive] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"'{token}' is not an option: options start with '--' and are "
                              "followed by their arguments", COMMAND_LINE, first_position + i)
        name = token[2:]
        if name.startswith("<"):
            raise ConfigError(f"'{token}': inline blocks such as <ca>...</ca> can only be "
                              "written in a config file", COMMAND_LINE, first_position + i)
        j = i + 1
        while j < len(argv) and j - i <= MAX_ARGS and not argv[j].startswith("--"):
            j += 1
        found.append(Directive(name, tuple(argv[i + 1:j]), COMMAND_LINE, first_position + i))
        i = j
    return found


def read_command_line(argv: Sequence[str], cwd: Path | None = None,
                      first_position: int = 1) -> ConfigSource:
    """All directives of a command line, with its ``--config`` files read in place and
    ``--cd`` applied (see the module docstring). ``cwd``: the working directory (default:
    the process's). ConfigError for an unreadable file or a stray argument."""
    return expand_command_line(split_arguments(argv, first_position), cwd)


def expand_command_line(arguments: Iterable[Directive],
                        cwd: Path | None = None) -> ConfigSource:
    """Command-line directives (:func:`split_arguments`) with ``config`` read in place and
    ``cd`` applied, as one source for :func:`~trivpn.config.parser.parse_source`."""
    cwd = (cwd if cwd is not None else Path.cwd()).absolute()
    here = cwd  # OpenVPN's working directory while it parses
    cd_seen = False
    first_config: Path | None = None
    config_base: Path | None = None
    directives: list[Directive] = []
    for d in arguments:
        if d.name == "cd" and len(d.args) == 1:
            target = resolve(here, d.args[0])
            if not target.is_dir():
                raise ConfigError(f"cd to '{target}' failed: no such directory", d.path, d.line)
            here, cd_seen = target, True
        elif d.name == "config" and len(d.args) == 1:
            target = resolve(here, d.args[0])
            try:
                text = target.read_bytes().decode("utf-8", errors="surrogateescape")
            except OSError as exc:
                raise ConfigError(f"cannot read config file '{target}': "
                                  f"{exc.strerror or exc}", d.path, d.line) from None
            source = read_config_text(text, target)
            if source.base_dir != target.parent.absolute():  # the file has a `cd`
                here, cd_seen = source.base_dir, True
            if first_config is None:
                first_config, config_base = target, source.base_dir
            directives += [replace(f, base_dir=source.base_dir) for f in source.directives]
        else:
            directives.append(replace(d, base_dir=cwd))
    if cd_seen:  # the last cd decides for every relative name, as in OpenVPN
        directives = [replace(d, base_dir=None) for d in directives]
        base = here
    else:
        base = config_base if config_base is not None else cwd
    return ConfigSource(path=first_config if first_config is not None else COMMAND_LINE,
                        directives=tuple(directives), base_dir=base)
