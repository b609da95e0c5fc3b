"""tls-exit and remap-usr1: a trivpn client beside a real openvpn 2.6 client, same config,
same server, in namespaces. Where OpenVPN turns a restart into an exit, trivpn exits too.

The openvpn client runs with ``ifconfig-noexec``/``route-noexec`` so both clients can share
the client namespace; both use the same certificate, so the server has ``duplicate-cn``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    Setup,
    client_lines,
    make_setup,
    popen_of,
    server_lines,
    start_client,
    start_server,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.netns import NetnsLab
from trivpn.config.directives import DIRECTIVES

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _openvpn_client(setup: Setup, extra: tuple[str, ...]) -> OpenVpnProcess:
    lines = ["client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
             "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
             "connect-retry 1", "ifconfig-noexec", "route-noexec", "verb 3", *extra]
    return start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", lines)


@pytest.mark.directive("tls-exit")
def test_tls_exit_makes_a_failed_handshake_end_the_client_like_openvpn(setup: Setup) -> None:
    start_server(setup, [*server_lines(), "duplicate-cn"])
    # the server's certificate does not carry this name: the handshake fails (a TLS error)
    extra = ("verify-x509-name not-the-server name", "tls-exit")
    ours = start_client(setup, client_lines(extra=extra))
    theirs = _openvpn_client(setup, extra)
    our_code = popen_of(setup.lab, ours.pid).wait(timeout=20)
    their_code = popen_of(setup.lab, theirs.pid).wait(timeout=20)
    assert "SIGTERM[soft,tls-error] received, process exiting" in theirs.text(), \
        theirs.text()[-3000:]
    assert (our_code, their_code) == (0, 0), ours.text()[-3000:]
    assert ours.wait_event("tls_exit", 1, restart_reason="handshake_failed") is not None
    assert ours.count("reconnecting") == 0


@pytest.mark.directive("tls-exit")
def test_without_tls_exit_a_failed_handshake_restarts(setup: Setup) -> None:
    start_server(setup, [*server_lines(), "duplicate-cn"])
    ours = start_client(setup, client_lines(extra=("verify-x509-name not-the-server name",)))
    assert ours.wait_event("reconnecting", 20, reason="handshake_failed") is not None, \
        ours.text()[-3000:]
    assert popen_of(setup.lab, ours.pid).poll() is None


@pytest.mark.directive("remap-usr1")
def test_remap_usr1_sigterm_turns_a_ping_restart_into_an_exit_like_openvpn(
        setup: Setup) -> None:
    # 'ping 1' instead of keepalive: the server pushes no ping-restart of its own
    lines = [line for line in server_lines() if not line.startswith("keepalive")]
    server = popen_of(setup.lab, start_server(setup, [*lines, "ping 1", "duplicate-cn"]).pid)
    extra = ("ping-restart 2", "remap-usr1 SIGTERM")
    ours = start_client(setup, client_lines(extra=extra))
    theirs = _openvpn_client(setup, extra)
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-4000:]
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-4000:]
    server.kill()
    server.wait(5)
    our_code = popen_of(setup.lab, ours.pid).wait(timeout=15)
    their_code = popen_of(setup.lab, theirs.pid).wait(timeout=15)
    assert "SIGTERM[soft,ping-restart] received, process exiting" in theirs.text(), \
        theirs.text()[-3000:]
    assert (our_code, their_code) == (0, 0), ours.text()[-3000:]
    assert ours.wait_event("remap_usr1", 1, restart_reason="ping_restart") is not None
    assert ours.count("reconnecting") == 0


def _env_dumper(path: Path, out: Path) -> Path:
    path.write_text(f'#!/bin/sh\nprintf "%s" "$exported_keying_material" > {out}\n')
    path.chmod(0o755)
    return path


def _wait_for_files(*paths: Path) -> None:
    for _ in range(50):
        if all(p.exists() for p in paths):
            return
        time.sleep(0.1)


@pytest.mark.directive("keying-material-exporter")
def test_keying_material_exporter_reaches_no_script_in_openvpn_nor_in_trivpn(
        setup: Setup) -> None:
    """OpenVPN 2.6 exports the material only to a TLS_FINAL plugin (the inert reason in
    directives.py): its client-connect script sees no exported_keying_material, and a trivpn
    client's up script sees none either."""
    ekm = "keying-material-exporter EXPORTER_TRIVPN_TEST 32"
    theirs, ours = setup.workdir / "server-ekm", setup.workdir / "client-ekm"
    server_script = _env_dumper(setup.workdir / "server.sh", theirs)
    client_script = _env_dumper(setup.workdir / "client.sh", ours)
    start_server(setup, [*server_lines(), "script-security 2", ekm,
                         f"client-connect {server_script}"])
    client = start_client(setup, client_lines(extra=("script-security 2", ekm,
                                                     f"up {client_script}")))
    assert client.wait_event("tun_configured", 20) is not None, client.text()[-4000:]
    _wait_for_files(ours, theirs)
    assert theirs.read_text() == ""  # the server's script ran, without the material
    assert ours.read_text() == ""
    assert "TLS_FINAL" in (DIRECTIVES["keying-material-exporter"].inert or "")



def _locked_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    raise AssertionError("no VmLck line")


@pytest.mark.directive("mlock")
def test_mlock_locks_the_client_in_ram_when_openvpn_can_and_fails_when_it_cannot(
        setup: Setup) -> None:
    """Where the locked-memory limit can be raised to 100 MB (CAP_SYS_RESOURCE), both lock
    their memory; where it cannot (a container without it), both stop at start, status 1."""
    start_server(setup, [*server_lines(), "duplicate-cn"])
    theirs = _openvpn_client(setup, ("mlock",))
    ours = start_client(setup, client_lines(extra=("mlock",)))
    # one of the two ends comes, and whichever comes first decides the branch (waiting for the
    # first alone took its whole 20 s where setrlimit fails)
    assert theirs.wait_for_any("Initialization Sequence Completed", "Exiting due to fatal error",
                               timeout=20), theirs.text()[-3000:]
    if "mlockall call succeeded" in theirs.text():
        assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-4000:]
        assert ours.wait_event("mlockall_succeeded", 1) is not None
        assert _locked_kb(ours.pid) > 10_000  # the interpreter, trio, the TLS library...
    else:
        assert "ERROR: setrlimit() failed" in theirs.text(), theirs.text()[-3000:]
        assert popen_of(setup.lab, ours.pid).wait(timeout=20) == 1
        assert ours.wait_event("mlock_failed", 1) is not None, ours.text()[-3000:]


@pytest.mark.directive("dev-node")
def test_dev_node_opens_the_named_clone_device_like_openvpn(setup: Setup) -> None:
    """A second node of the TUN clone device (char 10:200) works as /dev/net/tun does."""
    node = setup.workdir / "tun-clone"
    subprocess.run(["mknod", str(node), "c", "10", "200"], check=True)
    start_server(setup, [*server_lines(), "duplicate-cn"])
    ours = start_client(setup, client_lines(extra=(f"dev-node {node}",)))
    theirs = _openvpn_client(setup, (f"dev-node {node}",))
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-4000:]
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-4000:]


@pytest.mark.directive("dev-node")
def test_dev_node_that_does_not_exist_stops_both(setup: Setup) -> None:
    missing = setup.workdir / "no-such-node"
    start_server(setup, [*server_lines(), "duplicate-cn"])
    ours = start_client(setup, client_lines(extra=(f"dev-node {missing}",)))
    theirs = _openvpn_client(setup, (f"dev-node {missing}",))
    assert theirs.wait_for(f"ERROR: Cannot open TUN/TAP dev {missing}", 20), \
        theirs.text()[-3000:]
    assert popen_of(setup.lab, ours.pid).wait(timeout=20) == 1
    failed = ours.wait_event("tun_setup_failed", 1)
    assert failed is not None and str(missing) in str(failed), ours.text()[-3000:]


@pytest.mark.directive("preresolve", "ip-remote-hint")
@pytest.mark.parametrize("extra", [
    ("remote no-such-host.invalid 1194", "preresolve"),
    ("ip-remote-hint no-such-host.invalid",),
])
def test_preresolve_stops_both_at_start_when_a_name_does_not_resolve(
        setup: Setup, extra: tuple[str, ...]) -> None:
    """The first remote is a working address: without preresolve the client would connect
    to it. With it (or ip-remote-hint, its older name), every name is looked up first and
    one that cannot be resolved (resolv-retry 0) is fatal."""
    start_server(setup, [*server_lines(), "duplicate-cn"])
    lines = (*extra, "resolv-retry 0")
    ours = start_client(setup, client_lines(extra=lines))
    theirs = _openvpn_client(setup, lines)
    assert theirs.wait_for("Exiting due to fatal error", 20), theirs.text()[-3000:]
    assert "RESOLVE: Cannot resolve host address: no-such-host.invalid" in theirs.text()
    assert popen_of(setup.lab, ours.pid).wait(timeout=20) == 1, ours.text()[-3000:]
    assert ours.wait_event("preresolve_failed", 1, host="no-such-host.invalid") is not None
    assert ours.count("tun_configured") == 0


@pytest.mark.directive("preresolve")
def test_preresolve_with_names_that_resolve_connects(setup: Setup) -> None:
    start_server(setup, server_lines())
    ours = start_client(setup, client_lines(extra=("preresolve",)))
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]


@pytest.mark.directive("management-log-cache")
@pytest.mark.parametrize("cache", [3, None])
def test_management_log_cache_bounds_the_log_history(setup: Setup, cache: int | None) -> None:
    start_server(setup, server_lines())
    sock_path = setup.workdir / "client.sock"
    extra = [f"management {sock_path} unix"]
    if cache is not None:
        extra.append(f"management-log-cache {cache}")
    client = start_client(setup, client_lines(extra=tuple(extra)))
    assert client.wait_event("tun_configured", 20) is not None, client.text()[-3000:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(sock_path))
    with sock, sock.makefile("rwb") as f:
        assert f.readline().startswith(b">INFO:OpenVPN Management Interface")
        f.write(b"log all\n")
        f.flush()
        lines = []
        while (line := f.readline().decode().rstrip("\r\n")) != "END":
            lines.append(line)
    if cache is not None:
        assert len(lines) == cache, lines
    else:  # the default, 250, keeps everything of this short run
        assert len(lines) > 3, lines


@pytest.mark.directive("echo")
def test_echo_msg_lines_are_logged_like_openvpn_and_other_echoes_are_not(
        setup: Setup) -> None:
    extra = ("echo msg hello from the config", "echo secret-token 1234")
    conf = setup.workdir / "echo.conf"
    conf.write_text("\n".join(client_lines(extra=extra)) + "\n")
    # OpenVPN prints it while reading the config, before any log file is open: on stdout
    theirs = setup.client_ns.run(["timeout", "2", "openvpn", "--cd", str(setup.workdir),
                                  "--config", conf.name], check=False, timeout=10)
    assert "ECHO:msg hello from the config" in theirs.stdout, theirs.stdout[-3000:]
    assert "secret-token" not in theirs.stdout + theirs.stderr
    ours = start_client(setup, client_lines(extra=extra))
    assert ours.wait_event("echo", 10, message="msg hello from the config") is not None
    assert "secret-token" not in ours.text()
    assert ours.count("echo") == 1
