"""The server's authentication runtime without a network: the auth-user-pass-verify script
run (trivpn/runtime/serverauth.py) and management-client-auth's command grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.runtime.test_management import start
from trivpn.protocol import userauth as ua
from trivpn.protocol.peerinfo import parse_peer_info
from trivpn.runtime.serverauth import (
    ClientAuthBroker,
    Credentials,
    ManagementAnswer,
    ScriptAuth,
    run_script_auth,
)

CREDS = Credentials("alice", "s3cret")
KW_SSO = parse_peer_info("IV_PROTO=990\nIV_SSO=crtext\n")

def _script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return (str(path),)

async def _run(script: ScriptAuth, *, timeout: float = 5.0, info: object = None,
               pending: list[list[str]] | None = None) -> ua.Verdict | tuple[ua.Verdict, str]:
    now = trio.current_time()
    sink = pending if pending is not None else []
    result = await run_script_auth(
        script, CREDS, common_name="client1", address=("198.18.10.2", 4000),
        info=KW_SSO if info is None else info,  # type: ignore[arg-type]
        deadline=now + timeout, max_pending=60, started=now,
        on_pending=lambda messages, _until: sink.append(messages))
    return result.verdict if result.reason is None else (result.verdict, result.reason)

@pytest.mark.parametrize(("code", "verdict"), [(0, ua.Verdict.ACCEPT), (1, ua.Verdict.REJECT),
                                               (3, ua.Verdict.REJECT)])
async def test_script_exit_code_decides(tmp_path: Path, code: int, verdict: ua.Verdict) -> None:
    script = ScriptAuth(_script(tmp_path, f"exit {code}\n"), True, 2)
    assert await _run(script) is verdict

async def test_via_file_gives_the_credentials_file_and_removes_it(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    script = ScriptAuth(_script(tmp_path, f'cat "$1" > {out}; echo "$1" >> {out}\n'), True, 2)
    assert await _run(script) is ua.Verdict.ACCEPT
    content, name = out.read_text().rsplit("\n", 2)[0], out.read_text().splitlines()[-1]
    assert content == "alice\ns3cret"
    assert not Path(name).exists()

@pytest.mark.parametrize(("level", "seen"), [(2, "alice:"), (3, "alice:s3cret")])
async def test_via_env_password_needs_script_security_3(tmp_path: Path, level: int,
                                                        seen: str) -> None:
    out = tmp_path / "seen"
    script = ScriptAuth(_script(tmp_path, f'echo "$username:$password" > {out}\n'), False, level)
    assert await _run(script) is ua.Verdict.ACCEPT
    assert out.read_text().strip() == seen

async def test_script_security_1_runs_nothing_and_refuses(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    script = ScriptAuth(_script(tmp_path, f"touch {out}\n"), True, 1)
    assert await _run(script) is ua.Verdict.REJECT
    assert not out.exists()

async def test_reason_file_is_the_auth_failed_reason(tmp_path: Path) -> None:
    script = ScriptAuth(_script(tmp_path, 'echo "expired" > "$auth_failed_reason_file"\n'
                                          "exit 1\n"), True, 2)
    assert await _run(script) == (ua.Verdict.REJECT, "expired")

async def test_deferred_decision_comes_from_the_control_file(tmp_path: Path) -> None:
    script = ScriptAuth(_script(tmp_path, '(sleep 0.3; echo 0 > "$auth_control_file") &\n'
                                          "exit 2\n"), True, 2)
    assert await _run(script) is ua.Verdict.REJECT

async def test_deferred_without_decision_times_out(tmp_path: Path) -> None:
    script = ScriptAuth(_script(tmp_path, "exit 2\n"), True, 2)
    assert await _run(script, timeout=0.5) is ua.Verdict.REJECT

async def test_pending_file_sends_auth_pending_then_waits(tmp_path: Path) -> None:
    pending: list[list[str]] = []
    script = ScriptAuth(_script(tmp_path, (
        "printf '20\\ncrtext\\nCR_TEXT:R,E:code\\n' > \"$auth_pending_file\"\n"
        '(sleep 0.3; echo 1 > "$auth_control_file") &\nexit 2\n')), True, 2)
    assert await _run(script, pending=pending) is ua.Verdict.ACCEPT
    assert pending == [["AUTH_PENDING,timeout 20", "INFO_PRE,CR_TEXT:R,E:code"]]

async def test_control_files_are_removed_after_the_decision(tmp_path: Path) -> None:
    out = tmp_path / "files"
    script = ScriptAuth(_script(tmp_path, (
        f'echo "$auth_control_file $auth_pending_file $auth_failed_reason_file" > {out}\n')),
        True, 2)
    assert await _run(script) is ua.Verdict.ACCEPT
    assert not any(Path(p).exists() for p in out.read_text().split())

async def test_broker_announces_the_client_and_takes_one_answer() -> None:
    broker = ClientAuthBroker()
    sent: list[list[str]] = []
    broker.notify = sent.append
    cid = broker.new_cid()
    answers: list[ManagementAnswer | None] = []

    async def ask() -> None:
        answers.append(await broker.ask(cid, 0, {"username": "alice"},
                                        trio.current_time() + 5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(0.01)
        assert sent == [[f">CLIENT:CONNECT,{cid},0", ">CLIENT:ENV,username=alice",
                         ">CLIENT:ENV,END"]]
        assert not broker.answer(cid, 1, ManagementAnswer(True))  # wrong key id
        assert broker.answer(cid, 0, ManagementAnswer(False, "r", "go away"))
        assert not broker.answer(cid, 0, ManagementAnswer(True))  # already answered
    assert answers == [ManagementAnswer(False, "r", "go away")]

async def test_management_client_auth_commands(nursery: trio.Nursery, tmp_path: Path) -> None:
    setup = await start(nursery, tmp_path)
    broker = ClientAuthBroker()
    # the fixture's server has no broker: plug one in as the server's tools do
    server = setup.server
    assert server is not None
    server.client_auth = broker
    broker.notify = server.broadcast
    client = await setup.connect()
    await client.line()
    got: list[ManagementAnswer | None] = []

    async def ask(cid: int) -> None:
        got.append(await broker.ask(cid, 0, {"username": "u"}, trio.current_time() + 5))

    nursery.start_soon(ask, 0)
    assert await client.line() == ">CLIENT:CONNECT,0,0"
    assert await client.line() == ">CLIENT:ENV,username=u"
    assert await client.line() == ">CLIENT:ENV,END"
    await client.send("client-auth x 0")
    assert await client.line() == "ERROR: cannot parse CID: x"
    await client.send("client-auth 0 0")
    await client.send('push "route 198.19.5.0 255.255.255.0"')
    await client.send("END")
    assert await client.line() == "SUCCESS: client-auth command succeeded"
    nursery.start_soon(ask, 1)
    for _ in range(3):
        await client.line()
    await client.send('client-deny 1 0 "bad user" "go away now"')
    assert await client.line() == "SUCCESS: client-deny command succeeded"
    await client.send("client-auth-nt 7 0")
    assert await client.line() == "ERROR: client-auth command failed"  # as OpenVPN
    await client.send('client-deny 1 0 "unbalanced')
    assert await client.line() == "ERROR: client-deny: unbalanced quotes"
    await trio.sleep(0.01)
    assert got == [ManagementAnswer(True, config=('push "route 198.19.5.0 255.255.255.0"',)),
                   ManagementAnswer(False, "bad user", "go away now")]

async def test_client_auth_commands_need_management_client_auth(nursery: trio.Nursery,
                                                                tmp_path: Path) -> None:
    setup = await start(nursery, tmp_path)
    client = await setup.connect()
    await client.line()
    await client.send("client-auth-nt 0 0")
    assert await client.line() == ("ERROR: The 'client-auth-nt' command is not supported by "
                                   "the current daemon mode")
