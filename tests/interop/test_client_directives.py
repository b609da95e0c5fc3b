"""Client directives that act on the host or on what the client tells the server, each checked
on a running ``trivpn run`` client against a real openvpn 2.6 server (and, where OpenVPN's
behaviour is the claim, beside a real openvpn client with the same config)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    ping_ok,
    popen_of,
    server_lines,
    start_client,
    start_server,
    wait_until,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _skmem(setup: Setup, pid: int) -> dict[str, int]:
    """rb/tb (receive/send buffer sizes) of the UDP socket owned by ``pid``."""
    out = setup.client_ns.run(["ss", "-H", "-u", "-a", "-m", "-n", "-p"]).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if f"pid={pid}," in line:
            mem = " ".join(lines[i:i + 2]).split("skmem:(")[1].split(")")[0]
            fields = dict((f[:2], f[2:]) for f in mem.split(",") if f[:2] in ("rb", "tb"))
            return {k: int(v) for k, v in fields.items()}
    raise AssertionError(f"no socket of pid {pid} in:\n{out}")


@pytest.mark.directive("lport", "txqueuelen", "sndbuf", "rcvbuf", "writepid", "push-peer-info",
                       "setenv")
def test_client_binds_lport_sizes_queue_and_buffers_writes_pid_and_sends_peer_info(
        setup: Setup) -> None:
    ovpn = start_server(setup, [*server_lines(), "verb 4"])
    lines = [line for line in client_lines() if line != "nobind"]
    client = start_client(setup, [
        *lines, "lport 40002", "txqueuelen 321", "sndbuf 65536", "rcvbuf 98304",
        "writepid client.pid", "push-peer-info", "setenv UV_SITE lab7",
        "setenv IV_GUI_VER trivpn-test/1", "setenv OTHER not-sent"])
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    ping_ok(setup.client_ns, VPN_SERVER)

    link = client.wait_event("link_open", 1)
    assert link is not None and link["local"].endswith(":40002")
    info = json.loads(setup.client_ns.run(["ip", "-j", "link", "show", "dev",
                                           up["device"]]).stdout)
    assert info[0]["txqlen"] == 321
    mem = _skmem(setup, client.pid)
    assert (mem["tb"], mem["rb"]) == (2 * 65536, 2 * 98304)  # the kernel doubles, as for OpenVPN
    assert (setup.workdir / "client.pid").read_text() == f"{client.pid}\n"

    text = ovpn.text()
    for sent in ("peer info: UV_SITE=lab7", "peer info: IV_GUI_VER=trivpn-test/1",
                 "peer info: IV_SSL=OpenSSL", f"peer info: IV_PLAT_VER={os.uname().release}"):
        assert sent in text, text[-4000:]
    assert "OTHER" not in text

    popen_of(setup.lab, client.pid).send_signal(signal.SIGTERM)
    assert popen_of(setup.lab, client.pid).wait(10) == 0
    assert not (setup.workdir / "client.pid").exists()


@pytest.mark.directive("writepid")
def test_openvpn_also_writes_the_pid_with_a_newline_and_removes_it_at_exit(
        setup: Setup) -> None:
    start_server(setup, server_lines())
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", [
        *client_lines(), "ifconfig-noexec", "route-noexec", "writepid ovpn.pid"])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    assert (setup.workdir / "ovpn.pid").read_text() == f"{theirs.pid}\n"
    popen_of(setup.lab, theirs.pid).send_signal(signal.SIGTERM)
    popen_of(setup.lab, theirs.pid).wait(10)
    assert not (setup.workdir / "ovpn.pid").exists()


def _openvpn_client(setup: Setup, extra: list[str]) -> OpenVpnProcess:
    return start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", [
        *client_lines(), "ifconfig-noexec", "route-noexec", *extra])


@pytest.mark.directive("auth-nocache", "auth-retry", "auth-user-pass")
@pytest.mark.parametrize(("options", "rereads"), [
    (["auth-retry nointeract", "auth-nocache"], True),
    (["auth-retry nointeract"], False),  # the credentials read at start are used again
    (["auth-retry interact"], True),  # AUTH_FAILED: asked for again (here: the file)
])
def test_credentials_file_is_read_again_after_auth_failed_exactly_when_openvpn_does(
        setup: Setup, options: list[str], rereads: bool) -> None:
    # the server accepts the password "right" only
    script = setup.workdir / "verify.sh"
    script.write_text('#!/bin/sh\n[ "$(sed -n 2p "$1")" = right ]\n')
    script.chmod(0o755)
    start_server(setup, server_lines(extra=(
        "script-security 2", f"auth-user-pass-verify {script} via-file", "duplicate-cn")))
    for name in ("ours", "theirs"):
        (setup.workdir / f"{name}.txt").write_text("alice\nwrong\n")
    # connect-retry's maximum caps auth-retry nointeract's 10 s restart pause (to 2 s here)
    extra = [*options, "connect-retry 1 2"]
    ours = start_client(setup, [*client_lines(), "auth-user-pass ours.txt", *extra])
    theirs = _openvpn_client(setup, ["auth-user-pass theirs.txt", *extra])

    # auth-retry nointeract/interact: AUTH_FAILED means try again, not exit
    retry = ours.wait_event("reconnecting", 20, reason="auth_failed")
    assert retry is not None, ours.text()[-3000:]
    assert theirs.wait_for("Restart pause", 20), theirs.text()[-3000:]
    if "auth-retry nointeract" in options:
        assert theirs.wait_for("Restart pause, 2 second(s)", 1), theirs.text()[-3000:]
        assert retry["delay"] == 2.0
    for name in ("ours", "theirs"):
        (setup.workdir / f"{name}.txt").write_text("alice\nright\n")
    def up() -> tuple[bool, bool]:
        return (ours.count("tun_configured") > 0,
                "Initialization Sequence Completed" in theirs.text())

    wait_until(lambda: all(up()), 6)  # retries come every 2 s
    assert up() == (rereads, rereads), (ours.text()[-3000:], theirs.text()[-3000:])
    assert popen_of(setup.lab, ours.pid).poll() is None
    assert "right" not in ours.text() and "wrong" not in ours.text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_daemon(pid: int) -> None:
    """We started it (by its pid file): SIGTERM, then SIGKILL if it lingers."""
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not _alive(pid), 10):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.directive("daemon")
def test_daemon_returns_at_once_and_keeps_running_in_its_own_session_like_openvpn(
        setup: Setup) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))  # both use client1's cert
    conf = setup.workdir / "daemon.conf"
    conf.write_text("\n".join([*client_lines(), "daemon", "writepid daemon.pid"]) + "\n")
    log = setup.workdir / "daemon.log"
    theirs_conf = setup.workdir / "ovpn-daemon.conf"
    theirs_conf.write_text("\n".join([*client_lines(), "ifconfig-noexec", "route-noexec",
                                      "daemon", "writepid ovpn-daemon.pid",
                                      "log ovpn-daemon.log"]) + "\n")
    pids: list[int] = []
    pid_files = (setup.workdir / "daemon.pid", setup.workdir / "ovpn-daemon.pid")
    try:
        for cmd, pid_file in (
                ([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                  "--log-file", str(log)], setup.workdir / "daemon.pid"),
                (["openvpn", "--cd", str(setup.workdir), "--config", theirs_conf.name],
                 setup.workdir / "ovpn-daemon.pid")):
            started = time.monotonic()
            done = setup.client_ns.run(cmd, timeout=15)  # returns once the child is off
            assert done.returncode == 0 and time.monotonic() - started < 10
            assert wait_until(pid_file.exists, 5)
            pid = int(pid_file.read_text())
            pids.append(pid)
            assert _alive(pid) and os.getsid(pid) == pid  # a session leader of its own
        ours = TrivpnProcess(log, pids[0])
        assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
        ping_ok(setup.client_ns, VPN_SERVER)
    finally:
        for pid_file in pid_files:  # whatever got started, even if the test failed early
            if pid_file.exists() and pid_file.read_text().strip().isdigit():
                pids.append(int(pid_file.read_text()))
        for pid in set(pids):
            _stop_daemon(pid)
    assert not (setup.workdir / "daemon.pid").exists()


@pytest.mark.directive("float")
@pytest.mark.parametrize("use_float", [True, False])
def test_float_follows_a_server_that_answers_from_another_address(
        setup: Setup, use_float: bool) -> None:
    # the server's answers leave from 198.18.0.5 although the client talks to 198.18.0.1
    setup.server_ns.ip("addr", "add", "198.18.0.5/32", "dev", "lo")
    setup.server_ns.nft("table ip float_test {\n chain post {\n"
                        "  type filter hook postrouting priority 300;\n"
                        "  udp sport 1194 ip saddr set 198.18.0.5\n }\n}\n")
    start_server(setup, [*(line for line in server_lines() if not line.startswith("local ")),
                         "duplicate-cn"])
    extra = ["float"] if use_float else []
    client = start_client(setup, [*client_lines(), *extra])
    theirs = _openvpn_client(setup, extra)
    if use_float:
        assert client.wait_event("tun_configured", 20) is not None, client.text()[-3000:]
        floated = client.wait_event("peer_floated", 1)
        assert floated is not None and floated["peer"] == "198.18.0.5:1194", floated
        assert floated["previous"] == f"{SERVER_IP}:1194"
        ping_ok(setup.client_ns, VPN_SERVER)
        assert theirs.wait_for("Initialization Sequence Completed", 10), theirs.text()[-3000:]
    else:  # answers from the other address are dropped, by openvpn and by trivpn
        assert theirs.wait_for("Incoming packet rejected from [AF_INET]198.18.0.5:1194", 10), \
            theirs.text()[-3000:]
        assert client.wait_event("tun_configured", 3) is None, client.text()[-3000:]
        assert client.count("peer_floated") == 0
        assert "Initialization Sequence Completed" not in theirs.text()
