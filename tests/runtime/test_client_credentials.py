"""Credentials end to end in memory: a real Client against sans-IO server sessions that check
the username/password they receive (AUTH_FAILED, CRV1 challenges, auth-tokens), on trio's
MockClock. The console is a recording double (the terminal and systemd-ask-password consoles
have their own tests in test_credentials.py)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import Lab, SessionPeer
from trivpn.protocol.session import Session
from trivpn.runtime.credentials import Prompt

Verdict = tuple[bool, str | None]  # accept?, AUTH_FAILED reason / pushed extra


class ScriptedConsole:
    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[Prompt] = []

    async def ask(self, prompts: Sequence[Prompt]) -> list[str]:
        self.asked += prompts
        return [self.answers.pop(0) for _ in prompts]


class CheckingPeer(SessionPeer):
    """Accepts or rejects each client by what its key method carried."""

    def __init__(self, verify: Callable[[str | None, str | None], Verdict]) -> None:
        super().__init__()
        self.verify = verify
        self.seen: list[tuple[str | None, str | None]] = []

    def admit(self, session: Session, peer_id: int) -> None:
        km = session._keys[0].remote_km
        assert km is not None
        self.seen.append((km.username, km.password))
        ok, extra = self.verify(km.username, km.password)
        now = trio.current_time()
        if ok:
            session.accept(now, (*self.push, *((extra,) if extra else ())), peer_id=peer_id)
        else:
            session.reject(now, extra)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _run_until(lab: Lab, done: Callable[[], bool], seconds: float = 120) -> None:
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(done, seconds)
        if lab.exit_code is None:
            await lab.stop()
        nursery.cancel_scope.cancel()


@pytest.mark.directive("auth-retry")
async def test_dynamic_challenge_is_asked_and_answered_with_crv1_on_reconnect(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "up.txt").write_text("alice\nfirst-factor\n")

    def verify(user: str | None, password: str | None) -> Verdict:
        if password == "CRV1::sid77::424242" and user == "alice":
            return True, None
        return False, f"CRV1:R,E:sid77:{_b64('alice')}:Enter your PIN"

    peer = CheckingPeer(verify)
    lab = Lab.create(tmp_path, "auth-user-pass up.txt\nauth-retry interact\n", peer=peer)
    console = ScriptedConsole(["424242"])
    lab.client.credentials._console = console
    await _run_until(lab, lab.tunnel_up)
    assert peer.seen == [("alice", "first-factor"), ("alice", "CRV1::sid77::424242")]
    assert console.asked == [Prompt("CHALLENGE: Enter your PIN", True)]


async def test_dynamic_challenge_with_auth_retry_none_exits_and_says_how_to_answer_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "up.txt").write_text("alice\nfirst-factor\n")
    peer = CheckingPeer(lambda u, p: (False, f"CRV1:R:sid:{_b64('alice')}:PIN"))
    lab = Lab.create(tmp_path, "auth-user-pass up.txt\n", peer=peer)
    await _run_until(lab, lambda: lab.exit_code is not None)
    assert lab.exit_code == 1
    failed = [e for e in lab.log.events() if e["event"] == "auth_failed"]
    assert len(failed) == 1 and "auth-retry interact" in str(failed[0]["hint"])


@pytest.mark.directive("auth-user-pass", "auth-retry")
async def test_wrong_password_with_auth_retry_none_exits_1(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "up.txt").write_text("bob\nwrong\n")
    peer = CheckingPeer(lambda u, p: (False, None))
    lab = Lab.create(tmp_path, "auth-user-pass up.txt\n", peer=peer)
    await _run_until(lab, lambda: lab.exit_code is not None)
    assert lab.exit_code == 1
    assert [e["action"] for e in lab.log.events() if e["event"] == "auth_failed"] == ["exit"]
    assert "wrong" not in repr(lab.log.events())


@pytest.mark.directive("static-challenge")
async def test_static_challenge_response_is_sent_as_scrv1(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    (tmp_path / "up.txt").write_text("alice\npw\n")
    peer = CheckingPeer(lambda u, p: (True, None))
    lab = Lab.create(tmp_path, 'auth-user-pass up.txt\nstatic-challenge "Your OTP" 0\n',
                     peer=peer)
    console = ScriptedConsole(["777"])
    lab.client.credentials._console = console
    await _run_until(lab, lab.tunnel_up)
    assert peer.seen == [("alice", f"SCRV1:{_b64('pw')}:{_b64('777')}")]
    assert console.asked == [Prompt("CHALLENGE: Your OTP", False)]


@pytest.mark.directive("auth-user-pass")
async def test_bare_auth_user_pass_asks_username_then_password_without_echo(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    peer = CheckingPeer(lambda u, p: (True, None))
    lab = Lab.create(tmp_path, "auth-user-pass\n", peer=peer)
    console = ScriptedConsole(["carol", "hunter2"])
    lab.client.credentials._console = console
    await _run_until(lab, lab.tunnel_up)
    assert peer.seen == [("carol", "hunter2")]
    assert console.asked == [Prompt("Enter Auth Username:", True),
                             Prompt("Enter Auth Password:", False)]


@pytest.mark.directive("auth-user-pass")
async def test_inline_auth_user_pass_block_is_sent(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    peer = CheckingPeer(lambda u, p: (True, None))
    lab = Lab.create(tmp_path, "<auth-user-pass>\ndave\ninline-pw\n</auth-user-pass>\n",
                     peer=peer)
    await _run_until(lab, lab.tunnel_up)
    assert peer.seen == [("dave", "inline-pw")]


@pytest.mark.directive("auth-token", "auth-nocache")
async def test_pushed_auth_token_is_used_on_reconnect_and_dropped_after_auth_failed(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    # auth-nocache: the password is forgotten once sent; the token carries the reconnect
    (tmp_path / "up.txt").write_text("alice\nreal\n")
    tokens_valid = [True]

    def verify(user: str | None, password: str | None) -> Verdict:
        if password == "real" or (password == "TOKEN1" and tokens_valid[0]):
            return True, "auth-token TOKEN1"
        return False, "SESSION:token expired"

    peer = CheckingPeer(verify)
    lab = Lab.create(tmp_path, "auth-user-pass up.txt\nauth-nocache\n", peer=peer)
    console = ScriptedConsole([])
    lab.client.credentials._console = console
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert lab.client.auth_token is None  # held by the running session
        peer.silent = True  # ping-restart → reconnect
        await lab.wait_for(lambda: lab.log.count("ping_restart") == 1, 200)
        peer.silent = False
        await lab.wait_for(lambda: lab.log.count("tun_configured") == 2, 60)
        assert peer.seen[1] == ("alice", "TOKEN1")
        tokens_valid[0] = False  # the server forgot it: AUTH_FAILED, then the real password
        peer.silent = True
        await lab.wait_for(lambda: lab.log.count("ping_restart") == 2, 200)
        peer.silent = False
        await lab.wait_for(lambda: lab.log.count("tun_configured") == 3, 60)
        await lab.stop()
        nursery.cancel_scope.cancel()
    assert peer.seen[2:] == [("alice", "TOKEN1"), ("alice", "real")]
    assert "TOKEN1" not in repr(lab.log.events()) and "real'" not in repr(lab.log.events())
    assert console.asked == []
