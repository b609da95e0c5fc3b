"""``trivpn run CONFIG``: bring up a client or server tunnel from an OpenVPN config file."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import trio

from trivpn.config import ConfigError, Options, load_config
from trivpn.logging import LogFormat, configure_logging, get_logger, level_for_verb
from trivpn.runtime.client import run_client
from trivpn.runtime.metrics import parse_listen
from trivpn.runtime.operator import OperatorTools
from trivpn.runtime.server import run_server
from trivpn.runtime.stats import LogHistory, install_log_history


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run a client or server from an OpenVPN config file",
                            description="Run a client or server from an OpenVPN config file.")
    parser.add_argument("config", type=Path, help="OpenVPN config file (.conf or .ovpn)")
    parser.add_argument("--log-format", choices=("json", "console"), default=None,
                        help="log line format (default: console on a terminal, else json)")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="append log lines to this file instead of stderr (overrides the "
                             "config's log/log-append)")
    parser.add_argument("--metrics-listen", type=_listen_address, default=None,
                        metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    parser.add_argument("--drop-revoked", action="store_true",
                        help="server with 'crl-verify FILE': when FILE changes, disconnect the "
                             "connected clients whose certificate it revokes (without this, "
                             "as in OpenVPN, they are refused at their next TLS handshake)")
    parser.set_defaults(handler=handle)


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


LOG_FILE_MODE = 0o600
"""Mode of a new ``log``/``log-append`` file: OpenVPN's ``redirect_stdout_stderr`` creates it
with ``S_IRUSR | S_IWUSR`` (an existing file keeps its mode)."""


def open_log_file(path: Path, *, append: bool) -> TextIO:
    """``log FILE`` (truncated) or ``log-append FILE`` / ``--log-file`` (appended), opened
    before privileges are dropped, line-buffered."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, LOG_FILE_MODE)
    return os.fdopen(fd, "a" if append else "w", buffering=1)


def handle(args: argparse.Namespace) -> int:
    try:
        options = load_config(args.config)
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    stream = None
    pid_file: Path | None = None
    try:
        if args.log_file is not None:
            stream = open_log_file(args.log_file, append=True)
        elif options.log is not None:
            stream = open_log_file(options.log, append=options.log_append)
    except OSError as exc:
        print(f"trivpn: cannot open log file: {exc}", file=sys.stderr)
        return 1
    try:
        verb = options.verb
        configure_for(options, stream=stream, fmt=args.log_format)
        history = LogHistory(output_level=level_for_verb(verb))  # management sees INFO too
        install_log_history(history)
        tools = OperatorTools(history, metrics_listen=args.metrics_listen,
                              status_path=options.status.path if options.status else None)
        log = get_logger()
        log.info("trivpn_starting", config=str(args.config), role=options.role)
        if options.daemon:
            become_daemon()
        apply_nice(options, log)
        if options.writepid is not None:
            write_pid_file(options.writepid)
            pid_file = options.writepid
        if options.role == "server":
            main = functools.partial(run_server, options, log, tools,
                                     drop_revoked=args.drop_revoked)
        else:
            main = functools.partial(run_client, options, log, tools)
        code: int = trio.run(main)
        return code
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the pid file
        print(f"trivpn: cannot write pid file '{options.writepid}': "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if pid_file is not None:  # OpenVPN removes it at exit (init.c, remove_pid_file)
            with contextlib.suppress(OSError):
                pid_file.unlink()
        if stream is not None:
            stream.close()


def configure_for(options: Options, *, stream: TextIO | None,
                  fmt: LogFormat | None = None) -> None:
    """Logging as the config asks: ``verb``, ``mute``, and ``syslog [NAME]`` or ``daemon
    [NAME]`` sending it to the system logger unless it goes to a log file (OpenVPN)."""
    ident = None
    if stream is None and (options.syslog is not None or options.daemon):
        ident = options.syslog if options.syslog is not None else options.daemon_name
    configure_logging(verb=options.verb, fmt=fmt or ("json" if stream else None),
                      stream=stream, syslog_ident=ident, mute=options.mute)


def apply_nice(options: Options, log: Any) -> None:
    """``nice N``: add N to the process's niceness, as OpenVPN does at start
    (platform.c, platform_nice()); a failure (raising priority without the right) warns."""
    if not options.nice:
        return
    try:
        os.nice(options.nice)
    except OSError as exc:
        log.warning("nice_failed", nice=options.nice, error=exc.strerror or str(exc))
    else:
        log.info("nice_applied", nice=options.nice)


def become_daemon() -> None:
    """``daemon``: what OpenVPN gets from daemon(3) (init.c, possibly_become_daemon): fork, the
    parent exits 0, the child leads a new session with stdin/stdout/stderr on /dev/null (the
    log goes to its file or the system logger, never to them). Unlike daemon(3) without --cd,
    the working directory is kept (the config's relative paths were resolved against it)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def write_pid_file(path: Path) -> None:
    """``writepid FILE``: our process id and a newline, written before privileges are dropped
    (OpenVPN: init.c, write_pid_file)."""
    path.write_text(f"{os.getpid()}\n")
