"""preresolve / ip-remote-hint in memory: every remote looked up once, before the first
connection; the answers serve the reconnections."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import Lab


@pytest.mark.directive("preresolve")
@pytest.mark.parametrize("preresolve", [True, False])
async def test_preresolve_looks_every_remote_up_once_before_connecting(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, preresolve: bool) -> None:
    lab = Lab.create(tmp_path, ("preresolve\n" if preresolve else "")
                     + "connect-timeout 2\nconnect-retry 1\nconnect-retry-max 2\n"
                     "<connection>\nremote dead-a.example.test 1194\n</connection>\n"
                     "<connection>\nremote dead-b.example.test 1194\n</connection>\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 60)
        nursery.cancel_scope.cancel()
    first_two = ["dead-a.example.test", "dead-b.example.test"]
    if preresolve:  # both before the first connection, then never again
        assert lab.host.lookups == first_two
    else:  # one at each of the 4 attempts
        assert lab.host.lookups == first_two * 2


@pytest.mark.directive("ip-remote-hint")
async def test_ip_remote_hint_looks_its_name_up_in_advance_instead_of_the_remotes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab.create(tmp_path, "ip-remote-hint hint.example.test\nconnect-timeout 2\n"
                     "connect-retry 1\nconnect-retry-max 1\n"
                     "<connection>\nremote dead-a.example.test 1194\n</connection>\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery, serve=False)
        await lab.wait_for(lambda: lab.exit_code is not None, 60)
        nursery.cancel_scope.cancel()
    # OpenVPN init.c do_preresolve() resolves the hint; the connection still looks its
    # remote up (socket.c: the preresolved answer is only used for a remote of that name)
    assert lab.host.lookups == ["hint.example.test", "dead-a.example.test"]
