"""The management flags a GUI or controller uses (management-query-remote, -query-proxy,
-signal, -forget-disconnect, -up-down, -client), trivpn and the real openvpn 2.6 client driven
by the same management script over a unix socket; both must see the same notifications and
end up on the same server.

Topology (one lab for the module):

    cli 198.18.2.2 ─────────────────────────── 198.18.2.1 srv
    cli 198.18.0.2 ── 198.18.0.1 proxy 198.18.1.1 ── 198.18.1.2 srv

``srv`` runs openvpn servers: UDP 198.18.2.1:1194 (VPN 198.18.8.0/24), UDP 198.18.2.1:1195
(198.18.9.0/24), UDP 198.18.2.1:1196 with a username/password script (198.18.11.0/24), and
TCP 198.18.1.2:1194 (198.18.10.0/24), reachable only through tinyproxy in ``proxy`` (which
does not forward packets). Nothing listens on 198.18.2.1:1199.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = pytest.mark.integration

DIRECT_SRV, DIRECT_CLI = "198.18.2.1", "198.18.2.2"
CLIENT_IP, PROXY_IN, PROXY_OUT, PROXIED_SRV = "198.18.0.2", "198.18.0.1", "198.18.1.1", "198.18.1.2"
HTTP_PORT = 8888
KINDS = ("trivpn", "openvpn")


@dataclass
class MgmtLab:
    lab: NetnsLab
    workdir: Path
    cli: Netns
    http_log: Path
    runs: int = 0

    def start(self, kind: str, lines: list[str]) -> tuple[int, Path]:
        """A client of ``kind`` with a management unix socket; its pid and socket path."""
        self.runs += 1
        name = f"{kind}{self.runs}"
        sock = self.workdir / f"{name}.sock"
        config = ["client", "dev tun", "nobind", "ca ca.crt", "cert client.crt",
                  "key client.key", "remote-cert-tls server", "connect-retry 1", "verb 3",
                  *[line.replace("SOCK", str(sock)) for line in lines]]
        if any(line.startswith("key ") for line in lines):
            config.remove("key client.key")
        if not any(line.startswith("management ") for line in config):
            config.append(f"management {sock} unix")
        if kind == "trivpn":
            return start_trivpn(self.cli, self.workdir, name, config).pid, sock
        return start_openvpn(self.cli, self.workdir, name, config).pid, sock

    def stop(self, pid: int) -> None:
        for p in self.lab.processes:
            if p.pid == pid and p.poll() is None:
                p.terminate()
                p.wait(10)

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        for p in self.lab.processes:
            if p.pid == pid:
                try:
                    return p.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None
        raise AssertionError(pid)


class Gui:
    """The test's management client: lines in, lines out, with a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(20)
        self.buffer = b""
        self.seen: list[str] = []

    @classmethod
    def connect(cls, path: Path, timeout: float = 15.0) -> Gui:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return cls(sock)
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, f"management closed; seen: {self.seen[-20:]}"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        text = raw.decode()
        self.seen.append(text)
        return text

    def expect(self, prefix: str, contains: str = "") -> str:
        while True:
            text = self.line()
            if text.startswith(prefix) and contains in text:
                return text

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def _server(ns: Netns, workdir: Path, name: str, proto: str, local: str, port: int, net: str,
            *extra: str) -> None:
    lines = ["mode server", "tls-server", "dev tun", f"port {port}", f"local {local}",
             "proto tcp-server" if proto == "tcp" else "proto udp",
             "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
             f"server {net} 255.255.255.0", "keepalive 1 10", "remote-cert-tls client",
             "duplicate-cn", "verb 4", *extra]
    server = start_openvpn(ns, workdir, name, lines)
    assert server.wait_for("Initialization Sequence Completed", 15), server.text()


def _listening(ns: Netns, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in ns.run(["ss", "-Hltn"], check=False).stdout:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def mlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MgmtLab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("mgmtflags")
    workdir.chmod(0o755)
    with NetnsLab() as lab:
        cli, proxy, srv = lab.add("cli"), lab.add("proxy"), lab.add("srv")
        lab.veth(cli, srv, f"{DIRECT_CLI}/24", f"{DIRECT_SRV}/24")
        lab.veth(cli, proxy, f"{CLIENT_IP}/24", f"{PROXY_IN}/24")
        lab.veth(proxy, srv, f"{PROXY_OUT}/24", f"{PROXIED_SRV}/24")
        proxy.sysctl("net.ipv4.ip_forward", "0")
        write_pki(workdir)
        verify = workdir / "verify.sh"
        verify.write_text(f'#!/bin/sh\nsed -n 1,2p "$1" | tr "\\n" " " >> {workdir}/verify.log\n'
                          f'echo >> {workdir}/verify.log\nexit 0\n')
        verify.chmod(0o755)
        _server(srv, workdir, "server-a", "udp", DIRECT_SRV, 1194, "198.18.8.0")
        _server(srv, workdir, "server-b", "udp", DIRECT_SRV, 1195, "198.18.9.0")
        _server(srv, workdir, "server-auth", "udp", DIRECT_SRV, 1196, "198.18.11.0",
                "script-security 2", f"auth-user-pass-verify {verify} via-file")
        _server(srv, workdir, "server-tcp", "tcp", PROXIED_SRV, 1194, "198.18.10.0")
        http_log = workdir / "tinyproxy.log"
        conf = workdir / "tinyproxy.conf"
        conf.write_text("\n".join([
            "User nobody", "Group nogroup", f"Port {HTTP_PORT}", f"Listen {PROXY_IN}",
            f"Bind {PROXY_OUT}", "Timeout 30", "LogLevel Info", f'LogFile "{http_log}"',
            "MaxClients 20", f"Allow {CLIENT_IP}", "ConnectPort 1194",
            "DisableViaHeader Yes", ""]))
        http_log.touch()
        http_log.chmod(0o666)
        proxy.spawn(["tinyproxy", "-d", "-c", str(conf)],
                    stdout=(workdir / "tinyproxy.out").open("wb"))
        assert _listening(proxy, HTTP_PORT), http_log.read_text()
        yield MgmtLab(lab, workdir, cli, http_log)


def _connected(gui: Gui) -> str:
    """The CONNECTED state line (needs 'state on')."""
    return gui.expect(">STATE:", ",CONNECTED,SUCCESS,")


@pytest.mark.directive("management-query-remote")
@pytest.mark.parametrize("kind", KINDS)
def test_remote_mod_sends_the_client_to_the_server_the_gui_names(mlab: MgmtLab,
                                                                 kind: str) -> None:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1199", "proto udp",
                                  "management-query-remote"])
    try:
        gui = Gui.connect(sock)
        assert gui.expect(">REMOTE:") == f">REMOTE:{DIRECT_SRV},1199,udp"
        gui.send("state on")
        gui.send(f"remote MOD {DIRECT_SRV} 1195")
        gui.expect("SUCCESS: remote command succeeded")
        state = _connected(gui)
        assert state.split(",")[3].startswith("198.18.9."), state  # server-b's pool
        assert f",{DIRECT_SRV},1195," in state
        gui.close()
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-query-remote")
@pytest.mark.parametrize("kind", KINDS)
def test_remote_skip_moves_on_to_the_next_remote_and_accept_takes_it(mlab: MgmtLab,
                                                                     kind: str) -> None:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1199", f"remote {DIRECT_SRV} 1194",
                                  "proto udp", "management-query-remote"])
    try:
        gui = Gui.connect(sock)
        assert gui.expect(">REMOTE:") == f">REMOTE:{DIRECT_SRV},1199,udp"
        gui.send("state on")
        gui.send("remote SKIP")
        gui.expect("SUCCESS: remote command succeeded")
        assert gui.expect(">REMOTE:") == f">REMOTE:{DIRECT_SRV},1194,udp"
        gui.send("remote ACCEPT")
        assert f",{DIRECT_SRV},1194," in _connected(gui)
        # no question pending: 'remote' fails, 'proxy' is taken for the next question
        gui.send("remote ACCEPT")
        gui.expect("ERROR: remote command failed")
        gui.send("proxy NONE")
        gui.expect("SUCCESS: proxy command succeeded")
        gui.send("proxy BOGUS")
        gui.expect("ERROR: proxy command failed")
        gui.close()
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-query-remote")
@pytest.mark.parametrize("kind", KINDS)
def test_skipping_through_the_list_twice_exits(mlab: MgmtLab, kind: str) -> None:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1199", "proto udp",
                                  "management-query-remote"])
    try:
        gui = Gui.connect(sock)
        for _ in range(2):
            gui.expect(">REMOTE:")
            gui.send("remote SKIP")
        assert mlab.wait_exit(pid, 10) == 1
        log = sock.with_suffix(".log").read_text()
        assert ("No usable connection profiles are present" in log
                if kind == "openvpn" else "no_usable_remote" in log)
        gui.close()
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-query-proxy")
@pytest.mark.parametrize("kind", KINDS)
def test_proxy_http_answer_takes_the_client_through_tinyproxy(mlab: MgmtLab,
                                                              kind: str) -> None:
    unreachable = mlab.cli.run(["ping", "-c", "1", "-W", "1", PROXIED_SRV], check=False)
    assert unreachable.returncode != 0  # only the proxy leads there
    pid, sock = mlab.start(kind, [f"remote {PROXIED_SRV} 1194", "proto tcp-client",
                                  "management-query-proxy"])
    try:
        gui = Gui.connect(sock)
        assert gui.expect(">PROXY:") == f">PROXY:1,TCP,{PROXIED_SRV}"
        gui.send("state on")
        gui.send(f"proxy HTTP {PROXY_IN} {HTTP_PORT}")
        gui.expect("SUCCESS: proxy command succeeded")
        assert _connected(gui).split(",")[3].startswith("198.18.10.")  # server-tcp's pool
        gui.close()
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-query-proxy")
@pytest.mark.parametrize("kind", KINDS)
def test_proxy_http_is_refused_over_udp_and_none_keeps_the_direct_path(mlab: MgmtLab,
                                                                       kind: str) -> None:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1194", "proto udp",
                                  "management-query-proxy"])
    try:
        gui = Gui.connect(sock)
        assert gui.expect(">PROXY:") == f">PROXY:1,UDP,{DIRECT_SRV}"
        gui.send("state on")
        gui.send(f"proxy HTTP {PROXY_IN} {HTTP_PORT}")
        gui.expect("ERROR: proxy command failed")
        # both say why (trivpn's log event carries OpenVPN's words)
        assert "HTTP proxy support only works for TCP based connections" in \
            sock.with_suffix(".log").read_text()
        gui.send("proxy NONE")
        gui.expect("SUCCESS: proxy command succeeded")
        assert f",{DIRECT_SRV},1194," in _connected(gui)
        gui.close()
    finally:
        mlab.stop(pid)


def _updown_env(gui: Gui, what: str) -> dict[str, str]:
    gui.expect(f">UPDOWN:{what}")
    env: dict[str, str] = {}
    while (text := gui.expect(">UPDOWN:ENV,")) != ">UPDOWN:ENV,END":
        name, _, value = text.removeprefix(">UPDOWN:ENV,").partition("=")
        env[name] = value
    return env


# per process (pid, start time, config path, openvpn runs with --log) or per client address
PER_PROCESS = {"daemon_pid", "daemon_start_time", "config", "daemon_log_redirect",
               "ifconfig_local"}
# trivpn's script environment also names the route gateways when nothing is routed; openvpn
# sets them with routes only (a scriptenv difference, not one of the management interface)
TRIVPN_EXTRA = {"route_vpn_gateway", "route_net_gateway"}


def _updown(mlab: MgmtLab, kind: str) -> tuple[dict[str, str], dict[str, str]]:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1194", "proto udp",
                                  "management-up-down", "management-hold"])
    try:
        gui = Gui.connect(sock)  # the hold: no notification is sent before the GUI is there
        gui.expect(">HOLD:Waiting for hold release")
        gui.send("hold release")
        up = _updown_env(gui, "UP")
        gui.send("signal SIGTERM")
        down = _updown_env(gui, "DOWN")
        gui.close()
        return up, down
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-up-down")
def test_updown_notifications_carry_the_same_environment_as_openvpn(mlab: MgmtLab) -> None:
    ours_up, ours_down = _updown(mlab, "trivpn")
    theirs_up, theirs_down = _updown(mlab, "openvpn")
    for ours, theirs in ((ours_up, theirs_up), (ours_down, theirs_down)):
        assert set(ours) - TRIVPN_EXTRA == set(theirs), (sorted(ours), sorted(theirs))
        assert {k: v for k, v in ours.items() if k in set(theirs) - PER_PROCESS} == {
            k: v for k, v in theirs.items() if k not in PER_PROCESS}
    assert {"dev", "ifconfig_local", "common_name", "trusted_ip", "redirect_gateway",
            "script_context"} <= set(theirs_up)
    assert ours_up["ifconfig_local"].startswith("198.18.8.")


@pytest.mark.directive("management-signal", "management-forget-disconnect")
@pytest.mark.parametrize("kind", KINDS)
def test_gui_disconnect_restarts_and_asks_for_the_password_again(mlab: MgmtLab,
                                                                 kind: str) -> None:
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1196", "proto udp", "auth-user-pass",
                                  "management-query-passwords", "management-signal",
                                  "management-forget-disconnect"])
    try:
        gui = Gui.connect(sock)
        gui.expect(">PASSWORD:Need 'Auth' username/password")
        gui.send("state on")
        gui.send(f"username Auth {kind}-one")
        gui.send("password Auth pw1")
        _connected(gui)
        gui.close()  # the GUI goes away: restart (SIGUSR1), passwords forgotten
        gui = Gui.connect(sock)
        gui.expect(">PASSWORD:Need 'Auth' username/password")
        gui.send("state on")
        gui.send(f"username Auth {kind}-two")
        gui.send("password Auth pw2")
        _connected(gui)
        gui.close()
        seen = (mlab.workdir / "verify.log").read_text()
        assert f"{kind}-one pw1" in seen and f"{kind}-two pw2" in seen
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-client")
@pytest.mark.parametrize("kind", KINDS)
def test_management_client_connects_out_and_exits_when_the_gui_hangs_up(mlab: MgmtLab,
                                                                        kind: str) -> None:
    path = mlab.workdir / f"gui-{kind}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(15)
    pid, _ = mlab.start(kind, [f"remote {DIRECT_SRV} 1194", "proto udp",
                               f"management {path} unix", "management-client"])
    try:
        conn, _ = listener.accept()
        gui = Gui(conn)
        gui.expect(">INFO:OpenVPN Management Interface Version")
        gui.send("state on")
        _connected(gui)
        gui.send("pid")
        assert gui.expect("SUCCESS: pid=") == f"SUCCESS: pid={pid}"
        gui.close()
        assert mlab.wait_exit(pid, 10) == 0
    finally:
        listener.close()
        mlab.stop(pid)


@pytest.mark.directive("management-query-remote", "management-query-proxy", "management-signal",
                       "management-forget-disconnect", "management-up-down",
                       "management-client")
@pytest.mark.parametrize("directive", ["management-query-remote", "management-query-proxy",
                                       "management-signal", "management-forget-disconnect",
                                       "management-up-down", "management-client"])
def test_each_flag_without_management_is_refused_like_openvpn(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, directive: str) -> None:
    write_pki(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text("\n".join(["client", "dev tun", f"remote {DIRECT_SRV} 1194", "nobind",
                               "ca ca.crt", "cert client.crt", "key client.key",
                               directive]) + "\n")
    done = lab.add("ovpn").run(["timeout", "2", "openvpn", "--cd", str(tmp_path), "--config",
                                "c.conf"], check=False, timeout=10)
    text = ("--management is not specified, however one or more options which modify the "
            "behavior of --management were specified")
    assert text in done.stdout + done.stderr
    with pytest.raises(ConfigError, match=f"'{directive}' needs 'management'") as error:
        load_config(conf)
    assert text in str(error.value)


@pytest.mark.directive("management-client")
@pytest.mark.parametrize("kind", KINDS)
def test_management_client_with_nobody_listening_exits(mlab: MgmtLab, kind: str) -> None:
    path = mlab.workdir / f"nobody-{kind}.sock"
    pid, _ = mlab.start(kind, [f"remote {DIRECT_SRV} 1194", "proto udp",
                               f"management {path} unix", "management-client"])
    try:
        code = mlab.wait_exit(pid, 15)
        log = (mlab.workdir / f"{kind}{mlab.runs}.log").read_text()
        if kind == "openvpn":  # it logs the failure, then exits as after a SIGTERM: 0
            assert f"MANAGEMENT: connect to unix socket {path} failed" in log, log[-2000:]
            assert code == 0
        else:  # trivpn does not start, and says so with a failing status
            assert "setup_failed" in log and "cannot connect to the management client" in log
            assert code == 1
    finally:
        mlab.stop(pid)


@pytest.mark.directive("management-forget-disconnect")
@pytest.mark.parametrize("kind", KINDS)
def test_forgotten_key_password_is_read_again_at_the_restart(mlab: MgmtLab,
                                                             kind: str) -> None:
    key = mlab.workdir / "enc.key"
    if not key.exists():
        subprocess.run(["openssl", "pkey", "-in", str(mlab.workdir / "client.key"), "-aes256",
                        "-passout", "pass:kpw-1", "-out", str(key)], check=True)
    askpass = mlab.workdir / f"askpass-{kind}.txt"
    askpass.write_text("kpw-1\n")
    pid, sock = mlab.start(kind, [f"remote {DIRECT_SRV} 1194", "proto udp",
                                  "key enc.key", f"askpass {askpass.name}",
                                  "management-signal", "management-forget-disconnect"])
    try:
        gui = Gui.connect(sock)
        deadline = time.monotonic() + 20
        while True:  # poll 'state': the connection may be up before the GUI is there
            gui.send("state")
            if ",CONNECTED,SUCCESS," in gui.expect(""):
                break
            gui.expect("END")
            assert time.monotonic() < deadline
            time.sleep(0.2)
        askpass.write_text("wrong\n")  # read again only if the password was forgotten
        gui.close()
        # the restart reads the key again and does not reuse the forgotten password: both
        # fail (openvpn asks the console, which it cannot; trivpn reads askpass again)
        assert mlab.wait_exit(pid, 15) == 1
        log = sock.with_suffix(".log").read_text()
        assert ("SIGUSR1[soft,management-disconnect] received" in log
                and "Exiting due to fatal error" in log if kind == "openvpn"
                else "key_reload_failed" in log and "wrong password" in log), log[-2000:]
    finally:
        mlab.stop(pid)
