"""Where a client's username, password and private-key password come from (they do I/O).

OpenVPN's order (src/openvpn/misc.c, get_user_pass_cr; ssl.c, auth_user_pass_setup and
pem_password_setup), which :class:`CredentialSource` follows:

* ``management-query-passwords`` and no file (bare ``auth-user-pass`` / ``askpass``): the
  management interface's ``>PASSWORD:Need 'Auth' username/password`` (``Need 'Private Key'
  password``) query, answered with ``username "Auth" NAME`` / ``password "Auth" PASS``. A
  static challenge is announced as `` SC:ECHO,TEXT``; the management client then sends the
  ``SCRV1:...`` password itself.
* ``auth-user-pass FILE`` or an inline block: line 1 the username, line 2 the password; a
  missing password is asked for (management if enabled, else the console).
* otherwise the console: ``Enter Auth Username:`` (echoed), ``Enter Auth Password:`` (not).
* a static challenge asks ``CHALLENGE: TEXT`` after the password and sends
  ``SCRV1:base64(password):base64(response)``; a dynamic challenge (``AUTH_FAILED,CRV1:...``
  with ``auth-retry interact``) asks ``CHALLENGE: TEXT`` only and sends the server's username
  with ``CRV1::STATE_ID::RESPONSE`` (formats: trivpn/protocol/challenge.py).

The console is the controlling terminal (``/dev/tty``, echo off for secrets, as OpenVPN's
console_builtin.c get_console_input). Without a terminal, ``systemd-ask-password`` is run with
the arguments OpenVPN's console_systemd.c passes (``[--echo] --icon network-vpn --timeout=0
PROMPT``); without either, a clear error. (OpenVPN built with systemd prefers
systemd-ask-password whenever systemd is the init system, even on a terminal.)

Passwords and tokens are never logged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from trivpn.config import Options
from trivpn.config.options import FileSource, StaticChallenge
from trivpn.protocol.challenge import (
    DynamicChallenge,
    dynamic_challenge_password,
    static_challenge_password,
)
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.sessionsetup import Credentials

AUTH = "Auth"
PRIVATE_KEY = "Private Key"
SYSTEMD_ASK_PASSWORD = "systemd-ask-password"
MAX_INPUT = 4096


class CredentialError(RuntimeSetupError):
    """A username, password or challenge response could not be obtained."""


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    echo: bool


class Console(Protocol):
    """Asks a person: one answer per prompt, in order."""

    async def ask(self, prompts: Sequence[Prompt]) -> list[str]: ...


class PasswordQueries(Protocol):
    """The management interface's side of ``management-query-passwords``
    (trivpn/runtime/management.py, ManagementServer)."""

    async def query_user_pass(self, kind: str,
                              static_challenge: StaticChallenge | None) -> tuple[str, str]: ...

    async def query_password(self, kind: str) -> str: ...


# -- consoles ---------------------------------------------------------------------------------


def _read_line(fd: int) -> str | None:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_INPUT:
        chunk = os.read(fd, 1)
        if not chunk:
            return data.decode("utf-8", "surrogateescape") if data else None
        data += chunk
    return data.rstrip(b"\r\n").decode("utf-8", "surrogateescape")


def ask_terminal(prompts: Sequence[Prompt], device: str = "/dev/tty") -> list[str]:
    """Ask on the terminal (blocking): the prompt, then a line read with echo off for
    secrets (and the newline the user typed written back), as OpenVPN's
    get_console_input does."""
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    answers: list[str] = []
    try:
        for prompt in prompts:
            saved = None
            if not prompt.echo:  # echo off before the prompt shows: nothing typed is lost
                with contextlib.suppress(termios.error):
                    saved = termios.tcgetattr(fd)
                    quiet = list(saved)
                    quiet[3] &= ~(termios.ECHO | termios.ECHOE | termios.ECHOK
                                  | termios.ECHONL | termios.ISIG)
                    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
            os.write(fd, prompt.text.encode())
            try:
                line = _read_line(fd)
            finally:
                if saved is not None:
                    termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
                    os.write(fd, b"\n")
            if line is None:
                raise CredentialError(f"no answer on the terminal to '{prompt.text}'")
            answers.append(line)
    finally:
        os.close(fd)
    return answers


class TerminalConsole:
    def __init__(self, device: str = "/dev/tty") -> None:
        self.device = device

    async def ask(self, prompts: Sequence[Prompt]) -> list[str]:
        return await trio.to_thread.run_sync(ask_terminal, prompts, self.device,
                                             abandon_on_cancel=True)


class SystemdConsole:
    """``systemd-ask-password`` once per prompt (a password agent answers)."""

    def __init__(self, program: str) -> None:
        self.program = program

    def argv(self, prompt: Prompt) -> list[str]:
        return [self.program, *(["--echo"] if prompt.echo else []), "--icon", "network-vpn",
                "--timeout=0", prompt.text]

    async def ask(self, prompts: Sequence[Prompt]) -> list[str]:
        answers = []
        for prompt in prompts:
            try:
                done = await trio.run_process(self.argv(prompt), capture_stdout=True,
                                              stdin=subprocess.DEVNULL, check=False)
            except OSError as exc:
                raise CredentialError(f"cannot run {self.program}", prompt.text,
                                      errno=exc.errno) from exc
            if done.returncode != 0:
                raise CredentialError(f"{self.program} failed (exit status "
                                      f"{done.returncode}) for '{prompt.text}'")
            answers.append(done.stdout.decode("utf-8", "surrogateescape").splitlines()[0]
                           if done.stdout else "")
        return answers


class NoConsole:
    """No terminal and no systemd-ask-password: asking is an error that says what to do."""

    async def ask(self, prompts: Sequence[Prompt]) -> list[str]:
        what = prompts[0].text if prompts else "input"
        raise CredentialError(
            f"cannot ask '{what}': there is no terminal, and no {SYSTEMD_ASK_PASSWORD} "
            "(not installed, or systemd not running); put the username and password in a "
            "file ('auth-user-pass FILE', "
            "'askpass FILE') or answer through the management interface "
            "('management-query-passwords')")


def has_terminal(device: str = "/dev/tty") -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


SYSTEMD_RUNNING = "/run/systemd/system"
"""Exists when systemd is the init system (sd_booted(), which OpenVPN checks first)."""


def system_console(systemd_running: str = SYSTEMD_RUNNING) -> Console:
    """The terminal if there is one; else systemd-ask-password from PATH when systemd runs
    (without it no password agent would ever answer: OpenVPN's check_systemd_running);
    else none (asking is then an error)."""
    if has_terminal():
        return TerminalConsole()
    program = shutil.which(SYSTEMD_ASK_PASSWORD)
    if program is not None and os.path.isdir(systemd_running):
        return SystemdConsole(program)
    return NoConsole()


# -- the source -------------------------------------------------------------------------------


def _lines(source: FileSource) -> list[str]:
    # a fresh read for a file (auth-nocache, auth-retry interact); the block for inline text
    text = source.inline if source.inline is not None else replace_text(source).read_text()
    return text.splitlines()


def replace_text(source: FileSource) -> FileSource:
    """The same file without the copy loaded at start (so it is read again)."""
    return FileSource(source.directive, source.config_path, source.line, source.path)


class CredentialSource:
    """Obtains credentials as OpenVPN 2.6 does (see the module text)."""

    def __init__(self, options: Options, console: Console | None = None,
                 queries: PasswordQueries | None = None) -> None:
        self.options = options
        self._console = console
        self.queries = queries

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = system_console()
        return self._console

    def _management(self) -> PasswordQueries | None:
        return self.queries if self.options.management_query_passwords else None

    async def user_pass(self, challenge: DynamicChallenge | None = None) -> Credentials:
        """The username and password to send (already in their challenge encoding)."""
        source = self.options.auth_user_pass
        management = self._management()
        if management is not None and not isinstance(source, FileSource):
            user, password = await management.query_user_pass(AUTH,
                                                              self.options.static_challenge)
            return Credentials(user, password)
        if challenge is not None:
            (response,) = await self.console.ask([Prompt(challenge.prompt, challenge.echo)])
            return Credentials(challenge.username,
                               dynamic_challenge_password(challenge, response))
        username = password = ""
        if isinstance(source, FileSource):
            lines = _lines(source)
            username = lines[0] if lines else ""
            password = lines[1] if len(lines) > 1 else ""
            if not username:
                raise CredentialError(f"the username in {source.describe()} is empty")
            if not password and management is not None:
                username, password = await management.query_user_pass(
                    AUTH, self.options.static_challenge)
                return Credentials(username, password)
            if not password:
                (password,) = await self.console.ask([Prompt(f"Enter {AUTH} Password:",
                                                             False)])
        else:
            username, password = await self.console.ask([
                Prompt(f"Enter {AUTH} Username:", True),
                Prompt(f"Enter {AUTH} Password:", False)])
            if not username:
                raise CredentialError(f"{AUTH} username is empty")
        sc = self.options.static_challenge
        if sc is not None:
            (response,) = await self.console.ask([Prompt(f"CHALLENGE: {sc.text}", sc.echo)])
            password = static_challenge_password(password, response)
        return Credentials(username, password)

    async def key_password(self) -> str:
        """The password of an encrypted private key: ``askpass FILE`` (line 1), the
        management interface, or the console (``Enter Private Key Password:``)."""
        source = self.options.askpass
        if isinstance(source, FileSource):
            lines = _lines(source)
            if not lines or not lines[0]:
                raise CredentialError(f"no password on line 1 of {source.describe()} (askpass)")
            return lines[0]
        management = self._management()
        if management is not None:
            return await management.query_password(PRIVATE_KEY)
        (password,) = await self.console.ask([Prompt(f"Enter {PRIVATE_KEY} Password:",
                                                     False)])
        return password
