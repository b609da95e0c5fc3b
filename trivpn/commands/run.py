"""``trivpn run CONFIG``: bring up a client or server tunnel from an OpenVPN config file.

Also OpenVPN's command-line form (``trivpn run --config CONFIG --verb 4``, options alone on
the command line, and ``trivpn --config CONFIG ...`` without ``run``, as a drop-in for
``openvpn``): config/cmdline.py and docs/cli.md."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from trivpn import __version__
from trivpn.config import COMMAND_LINE, ConfigError, Directive, Options, split_arguments
from trivpn.config.cmdline import expand_command_line
from trivpn.config.errors import location_text
from trivpn.config.parser import parse_source
from trivpn.logging import LogFormat, configure_logging, get_logger, level_for_verb
from trivpn.runtime.client import run_client
from trivpn.runtime.dns import DEFAULT_STATE_DIR, DNS_MODES, DnsManager
from trivpn.runtime.metrics import parse_listen
from trivpn.runtime.mlock import MlockError, lock_memory
from trivpn.runtime.operator import OperatorTools
from trivpn.runtime.sdnotify import READY, InitializationStatus, sd_notify
from trivpn.runtime.server import run_server
from trivpn.runtime.stats import LogHistory, install_log_history
from trivpn.runtime.supervision import log_internal_error, task_name

USAGE = ("trivpn run CONFIG [OPTIONS...]\n"
         "       trivpn run --config CONFIG [--OPENVPN-OPTION ARGS...]... [OPTIONS...]\n"
         "       trivpn --config CONFIG [--OPENVPN-OPTION ARGS...]...   (as 'openvpn')")
FORM_HELP = """\
OpenVPN's command-line form: every '--name ARGS...' is the config directive 'name ARGS...'
(e.g. --verb 4, --remote HOST PORT, --auth-user-pass FILE). '--config FILE' is read in place:
later arguments override earlier ones, as in OpenVPN. '--cd DIR' changes directory first.
Errors name the argument's position on the command line."""


def register(sub: Any) -> None:
    sub.add_parser("run", help="run a client or server from an OpenVPN config file",
                   add_help=False)  # parsed by main() below (OpenVPN's form needs its own)


def build_parser() -> argparse.ArgumentParser:
    """trivpn's own flags of ``trivpn run``; everything else is OpenVPN's form."""
    parser = argparse.ArgumentParser(
        prog="trivpn run", usage=USAGE, allow_abbrev=False, epilog=FORM_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a client or server from an OpenVPN config file and/or OpenVPN "
                    "command-line options.")
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
    parser.add_argument("--dns-mode", choices=DNS_MODES, type=_dns_mode,
                        default=os.environ.get("TRIVPN_DNS_MODE", "auto"),
                        help="how a client applies the DNS servers and domains of 'dns' and "
                             "'dhcp-option' (config or pushed): systemd-resolved over D-Bus, "
                             "resolvconf, or off (leave DNS alone); auto: resolved if it "
                             "runs, else resolvconf (default: $TRIVPN_DNS_MODE or auto; "
                             "docs/dns.md)")
    parser.add_argument("--dns-state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="where a client records the DNS changes to undo after a crash "
                             f"(default {DEFAULT_STATE_DIR})")
    return parser


# trivpn's own flags and how many values each takes; every other '--name' is OpenVPN's
OWN_FLAGS: dict[str, int] = {"--log-format": 1, "--log-file": 1, "--metrics-listen": 1,
                             "--drop-revoked": 0, "--dns-mode": 1, "--dns-state-dir": 1,
                             "-h": 0, "--help": 0}


@dataclass(frozen=True, slots=True)
class SplitArgs:
    """A ``trivpn run`` command line taken apart: trivpn's own flags (for argparse) and the
    OpenVPN-form directives (config/cmdline.py), each with its position."""

    own: list[str]
    directives: list[Directive]


def split_run_args(argv: Sequence[str], first_position: int,
                   own_flags: Mapping[str, int] = OWN_FLAGS) -> SplitArgs:
    """``[CONFIG] (--own-flag [VALUE] | --openvpn-option ARGS...)...``. A bare CONFIG may
    stand first or right after one of trivpn's flags (``run --drop-revoked server.conf``).
    ``own_flags``: trivpn's flags and how many values each takes."""
    own: list[str] = []
    directives: list[Directive] = []
    config_given = False
    i = 0
    while i < len(argv):
        token = argv[i]
        flag = token.split("=", 1)[0]
        if flag in own_flags:
            count = 0 if "=" in token else own_flags[flag]
            own += argv[i:i + 1 + count]
            i += 1 + count
            continue
        if not token.startswith("-") and not config_given:
            directives.append(Directive("config", (token,), COMMAND_LINE, first_position + i))
            config_given = True
            i += 1
            continue
        if not token.startswith("--"):
            raise ConfigError(f"'{token}' is not an option: options start with '--' and are "
                              "followed by their arguments", COMMAND_LINE, first_position + i)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        directives += split_arguments(argv[i:j], first_position + i)
        config_given = True
        i = j
    return SplitArgs(own, directives)


def main(argv: Sequence[str], first_position: int = 1) -> int:
    """``trivpn run ...`` (``first_position`` 2) or ``trivpn --config ...`` (1)."""
    try:
        split = split_run_args(argv, first_position)
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(split.own)
    for d in split.directives:
        if d.name == "help":
            parser.print_help()
            return 0
        if d.name == "version" and not d.args:
            print(f"trivpn {__version__} (reads OpenVPN 2.6 configs and command lines)")
            return 0
        if d.name == "genkey":
            print(f"trivpn: {location_text(d.path, d.line)}: '--genkey' is not part of "
                  "'trivpn run': use 'trivpn pki genkey tls-crypt|tls-auth FILE'",
                  file=sys.stderr)
            return 2
    if not split.directives:
        parser.print_usage(sys.stderr)
        print("trivpn run: give a config file or OpenVPN options", file=sys.stderr)
        return 2
    try:
        options = parse_source(expand_command_line(split.directives))
        options = options.with_files_loaded()
    except ConfigError as exc:
        print(f"trivpn: {exc}", file=sys.stderr)
        return 2
    return handle(options, args)


def _dns_mode(text: str) -> str:
    if text not in DNS_MODES:
        raise argparse.ArgumentTypeError(f"invalid DNS mode {text!r} (choose from "
                                         f"{', '.join(DNS_MODES)})")
    return text


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


def handle(options: Options, args: argparse.Namespace) -> int:
    """Run the parsed config with trivpn's own flags ``args`` (build_parser)."""
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
        history = LogHistory(output_level=level_for_verb(verb),  # management sees INFO too
                             history=options.management_log_cache)
        install_log_history(history)
        log = get_logger()
        notify_socket = os.environ.get("NOTIFY_SOCKET")
        observers = [] if not notify_socket else [InitializationStatus(
            notify_socket, lambda exc: log.warning("systemd_notify_failed",
                                                   socket=notify_socket, error=str(exc)))]
        tools = OperatorTools(history, metrics_listen=args.metrics_listen,
                              status_path=options.status.path if options.status else None,
                              observers=observers)
        log.info("trivpn_starting", config=str(options.config_path), role=options.role)
        for text in options.echo:  # echo msg...: OpenVPN's "ECHO:msg..." line
            log.info("echo", message=text)
        under_systemd = notify_systemd(notify_socket, log)
        if options.daemon and not under_systemd:  # as OpenVPN: no fork under systemd
            become_daemon()
        apply_nice(options, log)
        if options.mlock:  # OpenVPN: before the passwords are read (init.c, init_instance)
            try:
                lock_memory(log)
            except MlockError as exc:
                log.error("mlock_failed", detail=str(exc))
                return 1
        if options.writepid is not None:
            write_pid_file(options.writepid)
            pid_file = options.writepid
        if options.role == "server":
            main = functools.partial(run_server, options, log, tools,
                                     drop_revoked=args.drop_revoked)
        else:
            dns = DnsManager.for_mode(args.dns_mode, log, state_dir=args.dns_state_dir)
            main = functools.partial(run_client, options, log, tools, dns=dns)
        return run_supervised(main, log)
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


def run_supervised(main: Callable[[], Awaitable[int]], log: Any) -> int:
    """``trio.run(main)``; a bug the runtime's own supervision did not catch (before the
    server or client object exists) is still one ``internal_error`` event and status 1."""
    try:
        code: int = trio.run(main)
    except ConfigError:
        raise
    except Exception as exc:
        log_internal_error(log, exc, task_name(exc, (run_supervised.__code__,)))
        return 1
    return code


def configure_for(options: Options, *, stream: TextIO | None,
                  fmt: LogFormat | None = None) -> None:
    """Logging as the config asks: ``verb``, ``mute``, ``syslog [NAME]`` or ``daemon
    [NAME]`` sending it to the system logger unless it goes to a log file (OpenVPN), and
    ``suppress-timestamps`` / ``machine-readable-output`` (see config/directives.py)."""
    ident = None
    if stream is None and (options.syslog is not None or options.daemon):
        ident = options.syslog if options.syslog is not None else options.daemon_name
    if fmt is None and (stream is not None or options.machine_readable_output):
        fmt = "json"  # a log file, or machine-readable-output even on a terminal
    configure_logging(verb=options.verb, fmt=fmt, stream=stream, syslog_ident=ident,
                      mute=options.mute,
                      console_timestamps=(options.machine_readable_output
                                          or not options.suppress_timestamps))


def notify_systemd(socket_path: str | None, log: Any) -> bool:
    """``READY=1`` with our pid to systemd (``Type=notify`` units); whether we run under it."""
    try:
        return sd_notify(READY.format(pid=os.getpid()), socket_path)
    except OSError as exc:
        log.warning("systemd_notify_failed", socket=socket_path, error=str(exc))
        return False


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
