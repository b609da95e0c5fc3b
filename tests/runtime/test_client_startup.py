"""run_client's start-up checks: config problems exit 2 before anything is configured."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from trivpn.config import load_config
from trivpn.logging import configure_logging, get_logger
from trivpn.runtime.client import Client, run_client
from trivpn.sessionsetup import session_config


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


async def _run(tmp_path: Path, extra: str) -> tuple[int, list[dict[str, object]]]:
    write_pki(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text("client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert client.crt\n"
                    "key client.key\n" + extra)
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    code = await run_client(load_config(conf), get_logger())
    return code, _events(stream)


async def test_unknown_user_exits_2_with_a_clear_error(tmp_path: Path):
    code, events = await _run(tmp_path, "user no-such-user-trivpn\n")
    assert code == 2
    assert events[-1]["event"] == "config_error"
    assert "user 'no-such-user-trivpn' does not exist" in str(events[-1]["detail"])


@pytest.mark.directive("auth-user-pass")
async def test_credentials_file_without_password_and_no_way_to_ask_exits_1_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # OpenVPN asks for the missing password (misc.c get_user_pass_cr); here nothing can ask
    monkeypatch.setattr("trivpn.runtime.credentials.has_terminal", lambda device="": False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemd-ask-password
    (tmp_path / "creds").write_text("onlyuser\n")
    code, events = await _run(tmp_path, "auth-user-pass creds\nconnect-retry 1\n")
    assert code == 1
    assert events[-2]["event"] == "credentials_failed", events[-3:]
    assert "cannot ask 'Enter Auth Password:': there is no terminal" in str(
        events[-2]["detail"])


async def test_credentials_file_with_empty_username_exits_2(tmp_path: Path):
    (tmp_path / "creds").write_text("\nsecret\n")
    code, events = await _run(tmp_path, "auth-user-pass creds\n")
    assert code == 2
    assert "the username in" in str(events[-1]["detail"])


@pytest.mark.directive("remote", "remote-random")
async def test_remote_random_shuffles_the_remotes_the_client_cycles_through(tmp_path: Path):
    write_pki(tmp_path)
    remotes = "".join(f"remote 198.18.0.{i} 1194\n" for i in range(1, 21))
    orders = set()
    for random_flag in ("remote-random\n", "remote-random\n", ""):
        conf = tmp_path / "c.conf"
        conf.write_text("client\ndev tun\nca ca.crt\ncert client.crt\nkey client.key\n"
                        + remotes + random_flag)
        options = load_config(conf)
        client = Client(options, get_logger(), session_config(options, unix_time_offset=0.0),
                        None)
        order = tuple(r.host for r in client.schedule.remotes)
        assert sorted(order) == sorted(r.host for r in options.remotes)
        if not random_flag:
            assert order == tuple(r.host for r in options.remotes)
        else:
            orders.add(order)
    assert len(orders) == 2  # two shuffles of 20 remotes: equal with probability 1/20!
