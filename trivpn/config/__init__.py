"""trivpn config layer: OpenVPN 2.6 config files → typed, validated, frozen ``Options``.

``load_config(path)`` reads a file (and, by default, every file it references);
``parse_config(text, path)`` parses text that claims to live at ``path``;
``load_command_line(argv)`` reads OpenVPN's command-line form (``--config F --verb 4 ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trivpn.config.cmdline import read_command_line, split_arguments
from trivpn.config.derive import (
    AddressPool,
    PingSettings,
    PoolEntry,
    address_pool,
    ping_settings,
    server_push_options,
    server_tun_ifconfig,
)
from trivpn.config.errors import COMMAND_LINE, ConfigError
from trivpn.config.lexer import tokenize_line
from trivpn.config.options import (
    DEFAULT_DATA_CIPHERS,
    ConfigWarning,
    ConnectFreq,
    ConnectRetry,
    FileSource,
    Ifconfig,
    Keepalive,
    Management,
    Mssfix,
    Options,
    PeriodicFile,
    Remote,
    ReplayWindow,
    Route,
    ServerHelper,
    TlsVersion,
    VerifyX509Name,
)
from trivpn.config.parser import parse_source
from trivpn.config.reader import ConfigSource, Directive, read_config, read_config_text
from trivpn.protocol.push import PullFilter


def load_config(path: Path | str, *, read_files: bool = True, lenient: bool = False) -> Options:
    """Parse the config file at ``path``.

    With ``read_files`` every referenced file (ca, cert, key, dh unless ``none``, tls-auth,
    tls-crypt, crl-verify, extra-certs, auth-user-pass) is read into ``FileSource.text``, and
    an unreadable one raises ConfigError naming the config file, the directive's line and the
    file. Without it, paths are only resolved (for ``trivpn doctor``, which checks files itself).
    ``lenient`` turns directives trivpn does not implement into warnings (for the doctor).
    """
    options = parse_source(read_config(path), lenient=lenient)
    return options.with_files_loaded() if read_files else options


def load_config_salvaged(path: Path | str) -> tuple[Options | None, tuple[ConfigError, ...]]:
    """Parse ``path`` for ``trivpn doctor`` (lenient, files not read), leaving out every
    directive that fails instead of stopping at the first: the options built from the lines
    that parsed, and every error with its file and line. Options are None when the file
    cannot be read or the result fails the final cross-checks (that error is then listed
    too)."""
    errors: list[ConfigError] = []
    try:
        options: Options | None = parse_source(read_config(path), lenient=True, errors=errors)
    except ConfigError as exc:
        errors.append(exc)
        options = None
    return options, tuple(errors)


def load_command_line(argv: Sequence[str], *, cwd: Path | None = None,
                      first_position: int = 1, read_files: bool = True) -> Options:
    """Parse OpenVPN's command-line form: ``--name args...`` directives and ``--config FILE``
    read in place, later ones overriding earlier ones (config/cmdline.py). Errors name
    ``command line, argument N`` or the file and line."""
    options = parse_source(read_command_line(argv, cwd, first_position))
    return options.with_files_loaded() if read_files else options


def parse_config(text: str, path: Path | str, *, read_files: bool = False) -> Options:
    """Parse config ``text`` as if it were the file ``path`` (for messages and relative paths).
    Referenced files are only read with ``read_files=True``."""
    options = parse_source(read_config_text(text, path))
    return options.with_files_loaded() if read_files else options


__all__ = [
    "COMMAND_LINE",
    "DEFAULT_DATA_CIPHERS",
    "AddressPool",
    "ConfigError",
    "ConfigSource",
    "ConfigWarning",
    "ConnectFreq",
    "ConnectRetry",
    "Directive",
    "FileSource",
    "Ifconfig",
    "Keepalive",
    "Management",
    "Mssfix",
    "Options",
    "PeriodicFile",
    "PullFilter",
    "PingSettings",
    "PoolEntry",
    "Remote",
    "ReplayWindow",
    "Route",
    "ServerHelper",
    "TlsVersion",
    "VerifyX509Name",
    "address_pool",
    "load_command_line",
    "load_config",
    "load_config_salvaged",
    "parse_config",
    "ping_settings",
    "read_command_line",
    "read_config",
    "read_config_text",
    "server_push_options",
    "server_tun_ifconfig",
    "split_arguments",
    "tokenize_line",
]
