"""DNS end to end: a real ``openvpn`` 2.6 server pushes ``dhcp-option DNS`` and ``DOMAIN``; a
``trivpn run`` client applies them through resolvconf (Debian's openresolv, relocated into the
test directory: tests/runtime/resolvconfkit.py), removes them at exit, and after a
``kill -9`` removes them at its next start (docs/dns.md)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import client_lines, make_setup, server_lines, start_server
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab
from tests.runtime.resolvconfkit import Openresolv, openresolv

pytestmark = pytest.mark.integration

PUSHES = ('push "dhcp-option DNS 198.18.8.53"', 'push "dhcp-option DOMAIN example.test"')


def start_client(ns: Netns, workdir: Path, tool: Openresolv, name: str,
                 extra: tuple[str, ...] = ()) -> TrivpnProcess:
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(client_lines(extra=extra)) + "\n")
    log = workdir / f"{name}.log"
    env = {**os.environ, "PATH": f"{tool.program.parent}:{os.environ.get('PATH', '')}"}
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     "--log-file", str(log), "--dns-mode", "resolvconf",
                     "--dns-state-dir", str(workdir / "run")], env=env, cwd=workdir)
    return TrivpnProcess(log, proc.pid)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for the lab to reap it
            if stat.read().split()[2] == "Z":
                return True
        time.sleep(0.05)
    return False


@pytest.mark.directive("dhcp-option")
def test_pushed_dns_is_applied_through_resolvconf_and_removed_at_exit(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=PUSHES))
    tool = openresolv(tmp_path / "openresolv")
    client = start_client(setup.client_ns, tmp_path, tool, "client")
    applied = client.wait_event("dns_applied", 20)
    assert applied is not None, client.text()[-4000:]
    assert (applied["backend"], applied["servers"], applied["search_domains"]) == (
        "resolvconf", ["198.18.8.53"], ["example.test"])
    text = tool.resolv_conf.read_text()
    assert "nameserver 198.18.8.53\n" in text and "search example.test\n" in text
    assert json.loads((tmp_path / "run" / "dns-tun0.json").read_text())["pid"] == client.pid
    os.kill(client.pid, signal.SIGTERM)
    assert client.wait_event("exiting", 10) is not None, client.text()[-4000:]
    assert client.count("dns_reverted") == 1
    assert "198.18.8.53" not in tool.resolv_conf.read_text()
    assert not (tmp_path / "run" / "dns-tun0.json").exists()


@pytest.mark.directive("dhcp-option")
def test_dns_left_by_a_killed_client_is_removed_at_the_next_start(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=PUSHES))
    tool = openresolv(tmp_path / "openresolv")
    first = start_client(setup.client_ns, tmp_path, tool, "first")
    assert first.wait_event("dns_applied", 20) is not None, first.text()[-4000:]
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid)
    assert "198.18.8.53" in tool.resolv_conf.read_text()  # nothing undid it
    assert (tmp_path / "run" / "dns-tun0.json").exists()
    # the next start undoes the dead client's record before it connects
    second = start_client(setup.client_ns, tmp_path, tool, "second",
                          extra=("pull-filter ignore dhcp-option",))
    reverted = second.wait_event("dns_stale_reverted", 20)
    assert reverted is not None, second.text()[-4000:]
    assert (reverted["pid"], reverted["backend"]) == (first.pid, "resolvconf")
    assert second.wait_event("tun_configured", 20) is not None, second.text()[-4000:]
    assert "198.18.8.53" not in tool.resolv_conf.read_text()
    assert not (tmp_path / "run" / "dns-tun0.json").exists()
