"""Credential sources (trivpn/runtime/credentials.py): the terminal (a real pty), a fake
systemd-ask-password first in PATH, the management interface's password queries and hold
(driven over its socket in-process), askpass files."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from tests.interop.openvpn import write_pki
from tests.runtime.test_management import BANNER, Client
from trivpn.config import Options, load_config
from trivpn.config.options import StaticChallenge
from trivpn.logging import get_logger
from trivpn.runtime import credentials as cr
from trivpn.runtime.credentials import (
    CredentialError,
    CredentialSource,
    NoConsole,
    Prompt,
    SystemdConsole,
    ask_terminal,
    system_console,
)
from trivpn.runtime.management import ManagementServer
from trivpn.runtime.stats import LogHistory, OperatorState


class _Runtime:
    is_server = False

    def status_lines(self, version: int) -> list[str]:
        return ["END"]

    def kill(self, target: str) -> str:
        return "ERROR"

    def bytecount_lines(self) -> list[str]:
        return []


def _config(tmp_path: Path, extra: str) -> Options:
    conf = tmp_path / "c.conf"
    write_pki(tmp_path)
    conf.write_text("client\ndev tun\nremote 198.18.0.1\nca ca.crt\ncert client.crt\n"
                    "key client.key\n" + extra)
    return load_config(conf)


# -- terminal ---------------------------------------------------------------------------------


def _pty_session(prompts: list[Prompt], typed: list[bytes]) -> tuple[list[str], bytes]:
    """Run ask_terminal on a pty's slave while 'typing' on its master; (answers, screen).
    Each line is typed once its prompt (ending in ':') is on the screen."""
    master, slave = os.openpty()
    device = os.ttyname(slave)
    result: list[list[str]] = []
    thread = threading.Thread(target=lambda: result.append(ask_terminal(prompts, device)),
                              daemon=True)
    thread.start()
    screen = b""

    def read(deadline: float) -> None:
        nonlocal screen
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            screen += os.read(master, 1024)

    try:
        for i, line in enumerate(typed):
            deadline = time.monotonic() + 5
            while screen.count(b":") < i + 1 and time.monotonic() < deadline:
                read(deadline)
            os.write(master, line)
        thread.join(5)
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            read(end)
    finally:
        os.close(master)
        os.close(slave)
    assert result, "ask_terminal did not return"
    return result[0], screen


@pytest.mark.directive("auth-user-pass")
def test_terminal_prompt_echoes_the_username_but_not_the_password():
    answers, screen = _pty_session(
        [Prompt("Enter Auth Username:", True), Prompt("Enter Auth Password:", False)],
        [b"alice\n", b"hunter2\n"])
    assert answers == ["alice", "hunter2"]
    assert b"Enter Auth Username:alice" in screen
    assert b"Enter Auth Password:" in screen
    assert b"hunter2" not in screen


# -- systemd-ask-password ---------------------------------------------------------------------


def _fake_ask_password(directory: Path, answer: str) -> Path:
    program = directory / "systemd-ask-password"
    program.write_text("#!/bin/sh\n"
                       f'for a in "$@"; do printf "%s\\n" "$a"; done >> "{directory}/argv"\n'
                       f'echo "--" >> "{directory}/argv"\necho "{answer}"\n')
    program.chmod(0o755)
    return program


@pytest.mark.directive("auth-user-pass")
async def test_without_a_terminal_systemd_ask_password_gets_openvpns_arguments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_ask_password(tmp_path, "agent-answer")
    monkeypatch.setattr(cr, "has_terminal", lambda device="": False)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    console = system_console(systemd_running=str(tmp_path))
    assert isinstance(console, SystemdConsole)
    answers = await console.ask([Prompt("Enter Auth Username:", True),
                                 Prompt("Enter Auth Password:", False)])
    assert answers == ["agent-answer", "agent-answer"]
    calls = (tmp_path / "argv").read_text().split("--\n")[:-1]
    # console_systemd.c get_console_input_systemd: [--echo] --icon network-vpn --timeout=0 P
    assert [c.splitlines() for c in calls] == [
        ["--echo", "--icon", "network-vpn", "--timeout=0", "Enter Auth Username:"],
        ["--icon", "network-vpn", "--timeout=0", "Enter Auth Password:"]]


async def test_without_terminal_nor_running_systemd_asking_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_ask_password(tmp_path, "x")
    monkeypatch.setattr(cr, "has_terminal", lambda device="": False)
    monkeypatch.setenv("PATH", str(tmp_path))
    console = system_console(systemd_running=str(tmp_path / "no-systemd"))
    assert isinstance(console, NoConsole)
    with pytest.raises(CredentialError, match="there is no terminal"):
        await console.ask([Prompt("Enter Auth Password:", False)])


async def test_a_failing_systemd_ask_password_is_an_error(tmp_path: Path):
    program = tmp_path / "systemd-ask-password"
    program.write_text("#!/bin/sh\nexit 1\n")
    program.chmod(0o755)
    with pytest.raises(CredentialError, match="exit status 1"):
        await SystemdConsole(str(program)).ask([Prompt("Enter Auth Password:", False)])


# -- askpass ----------------------------------------------------------------------------------


@pytest.mark.directive("askpass")
async def test_askpass_file_gives_the_key_password_from_its_first_line(tmp_path: Path):
    (tmp_path / "pass.txt").write_text("key-secret\nignored\n")
    source = CredentialSource(_config(tmp_path, "askpass pass.txt\n"), console=NoConsole())
    assert await source.key_password() == "key-secret"


@pytest.mark.directive("askpass")
async def test_bare_askpass_asks_private_key_password_without_echo(tmp_path: Path):
    asked: list[Prompt] = []

    class Console:
        async def ask(self, prompts: Sequence[Prompt]) -> list[str]:
            asked.extend(prompts)
            return ["typed"]

    source = CredentialSource(_config(tmp_path, "askpass\n"), console=Console())
    assert await source.key_password() == "typed"
    assert asked == [Prompt("Enter Private Key Password:", False)]


# -- management -------------------------------------------------------------------------------


async def _management(nursery: trio.Nursery, tmp_path: Path,
                      hold: bool = False) -> tuple[ManagementServer, Path]:
    path = tmp_path / "mgmt.sock"
    server = ManagementServer(_Runtime(), LogHistory(), OperatorState(), get_logger(),
                              host=str(path), port=None, unix=True, hold=hold)
    await nursery.start(server.serve)
    return server, path


async def _connect(path: Path) -> Client:
    client = Client(await trio.open_unix_socket(str(path)))
    assert await client.line() == BANNER
    return client


@pytest.mark.directive("management-query-passwords", "auth-user-pass")
async def test_management_query_is_answered_with_username_and_password_commands(
        nursery: trio.Nursery, tmp_path: Path):
    server, path = await _management(nursery, tmp_path)
    source = CredentialSource(
        _config(tmp_path, f"management {path} unix\nmanagement-query-passwords\n"
                          "auth-user-pass\n"), console=NoConsole(), queries=server)
    got: list[tuple[str, str]] = []

    async def ask() -> None:
        creds = await source.user_pass()
        got.append((creds.username, creds.password))

    nursery.start_soon(ask)
    client = await _connect(path)  # connects after the query: it is shown on connect
    assert await client.line() == ">PASSWORD:Need 'Auth' username/password"
    await client.send('password "Auth" "two words"')
    assert await client.line() == "SUCCESS: 'Auth' password entered, but not yet verified"
    await client.send('username "Private Key" alice')
    assert await client.line() == ("ERROR: username of type 'Private Key' entered, but we "
                                   "need one of type 'Auth'")
    await client.send('username "Auth" alice')
    assert await client.line() == "SUCCESS: 'Auth' username entered, but not yet verified"
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.01)
    assert got == [("alice", "two words")]
    await client.send("username Auth bob")
    assert await client.line() == "ERROR: no username is currently needed at this time"


@pytest.mark.directive("management-query-passwords", "static-challenge")
async def test_management_query_announces_the_static_challenge(
        nursery: trio.Nursery, tmp_path: Path):
    server, path = await _management(nursery, tmp_path)
    client = await _connect(path)
    answered: list[tuple[str, str]] = []

    async def ask() -> None:
        answered.append(await server.query_user_pass("Auth", StaticChallenge("Your PIN", True)))

    nursery.start_soon(ask)
    assert await client.line() == ">PASSWORD:Need 'Auth' username/password SC:1,Your PIN"
    await client.send("username Auth u")
    await client.line()
    await client.send("password Auth SCRV1:cA==:MQ==")
    await client.line()
    with trio.fail_after(5):
        while not answered:
            await trio.sleep(0.01)
    assert answered == [("u", "SCRV1:cA==:MQ==")]


@pytest.mark.directive("management-query-passwords", "askpass")
async def test_management_query_for_the_private_key_password(
        nursery: trio.Nursery, tmp_path: Path):
    server, path = await _management(nursery, tmp_path)
    client = await _connect(path)
    source = CredentialSource(
        _config(tmp_path, f"management {path} unix\nmanagement-query-passwords\naskpass\n"),
        console=NoConsole(), queries=server)
    got: list[str] = []

    async def ask() -> None:
        got.append(await source.key_password())

    nursery.start_soon(ask)
    assert await client.line() == ">PASSWORD:Need 'Private Key' password"
    await client.send("username 'Private Key' x")
    assert await client.line() == "ERROR: no username is currently needed at this time"
    await client.send('password "Private Key" k3y')
    assert await client.line() == ("SUCCESS: 'Private Key' password entered, but not yet "
                                   "verified")
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.01)
    assert got == ["k3y"]


@pytest.mark.directive("management-hold")
async def test_hold_waits_for_hold_release(nursery: trio.Nursery, tmp_path: Path):
    server, path = await _management(nursery, tmp_path, hold=True)
    released = trio.Event()

    async def hold() -> None:
        assert await server.wait_hold(0)
        released.set()

    nursery.start_soon(hold)
    client = await _connect(path)
    assert await client.line() == ">HOLD:Waiting for hold release:0"
    await client.send("hold")
    assert await client.line() == "SUCCESS: hold=1"
    assert not released.is_set()
    await client.send("hold release")
    assert await client.line() == "SUCCESS: hold release succeeded"
    with trio.fail_after(5):
        await released.wait()
    await client.send("hold off")
    assert await client.line() == "SUCCESS: hold flag set to OFF"
    assert not await server.wait_hold(5)  # no hold any more


async def test_auth_failure_is_reported_to_management_clients(
        nursery: trio.Nursery, tmp_path: Path):
    server, path = await _management(nursery, tmp_path)
    client = await _connect(path)
    server.auth_failed("Auth", "CRV1:R:sid:YQ==:PIN")
    assert await client.line() == ">PASSWORD:Verification Failed: 'Auth' ['CRV1:R:sid:YQ==:PIN']"
