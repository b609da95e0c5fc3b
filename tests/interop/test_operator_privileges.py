"""Operator files and sockets of a server that drops privileges, beside a real openvpn 2.6.

Both servers run with ``user nobody``/``group nogroup``, a management unix socket whose password
file is root-only (0600 in a 0700 directory, as under /etc), a status file and a log file.
What must hold, checked against what openvpn itself does:

- management is served after the drop (the password file was read and the socket bound while
  still root), and the socket is owned by root with openvpn's mode;
- the status and log files get openvpn's modes;
- a password file that cannot be read is a startup error (exit 1), never a silently missing
  management interface.
"""

from __future__ import annotations

import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import server_lines
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

PASSWORD = "s3cret-mgmt"
METRICS_PORT = 917


def run_trivpn(ns: Netns, workdir: Path, name: str, lines: list[str],
               args: tuple[str, ...] = ()) -> TrivpnProcess:
    """``trivpn run`` with the config's own ``log`` directive (no --log-file)."""
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     *args])
    return TrivpnProcess(workdir / f"{name}.log", proc.pid)


def wait_for_socket(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_socket():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # real uid
    raise AssertionError("no Uid line")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class Management:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.buffer = b""

    def read_until(self, end: bytes) -> str:
        while end not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, self.buffer
            self.buffer += chunk
        text, self.buffer = self.buffer.split(end, 1)
        return text.decode()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")


@pytest.mark.directive("management", "user", "group", "status", "log")
def test_management_status_and_log_after_dropping_to_nobody_match_openvpn(lab: NetnsLab,
                                                                          tmp_path: Path):
    tmp_path.chmod(0o700)  # nobody cannot even look inside
    write_pki(tmp_path)
    pwfile = tmp_path / "mgmt.pw"
    pwfile.write_text(PASSWORD + "\n")
    pwfile.chmod(0o600)
    common = ["user nobody", "group nogroup", "persist-tun", "persist-key"]

    ref = lab.add("ref")
    ovpn = start_openvpn(ref, tmp_path, "openvpn", server_lines(link_ip="127.0.0.1", extra=[
        *common, f"management {tmp_path / 'openvpn.sock'} unix mgmt.pw",
        f"status {tmp_path / 'openvpn-status.log'} 1"]))
    srv = lab.add("srv")
    trivpn = run_trivpn(srv, tmp_path, "trivpn", server_lines(link_ip="127.0.0.1", extra=[
        *common, f"management {tmp_path / 'trivpn.sock'} unix mgmt.pw",
        f"status {tmp_path / 'trivpn-status.log'} 1", f"log {tmp_path / 'trivpn.log'}"]),
        args=("--metrics-listen", f"127.0.0.1:{METRICS_PORT}"))

    assert trivpn.wait_event("privileges_dropped", timeout=15), trivpn.text()
    assert trivpn.wait_event("management_listening", timeout=5), trivpn.text()
    assert ovpn.wait_for("Initialization Sequence Completed", timeout=15), ovpn.text()
    wait_for_socket(tmp_path / "openvpn.sock")
    assert uid_of(trivpn.pid) == 65534

    ours, theirs = tmp_path / "trivpn.sock", tmp_path / "openvpn.sock"
    assert ours.lstat().st_uid == theirs.lstat().st_uid == 0
    assert mode(ours) == mode(theirs) == 0o777
    time.sleep(1.5)  # one status interval
    assert mode(tmp_path / "trivpn-status.log") == mode(tmp_path / "openvpn-status.log") == 0o600
    assert mode(tmp_path / "trivpn.log") == mode(tmp_path / "openvpn.log") == 0o600

    for path in (ours, theirs):  # both read the root-only password file before the drop
        m = login(path)
        m.send("status 2")
        assert m.read_until(b"END\r\n").startswith("TITLE,")
        m.send("quit")
    m = login(ours)
    m.send("pid")
    assert m.read_until(b"\r\n") == f"SUCCESS: pid={trivpn.pid}"
    # a port below 1024 only root can bind: bound before the drop, served after it
    with srv.enter():
        http = socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=5)
    with http:
        http.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http.recv(100).startswith(b"HTTP/1.1 200 OK")


def login(path: Path) -> Management:
    m = Management(path)
    assert m.read_until(b":") == "ENTER PASSWORD"
    m.send(PASSWORD)
    assert m.read_until(b"\r\n").endswith("SUCCESS: password is correct")
    assert m.read_until(b"\r\n").startswith(">INFO:OpenVPN Management Interface Version 5")
    return m


@pytest.mark.directive("management")
def test_openvpn_serves_one_management_client_and_trivpn_several(lab: NetnsLab,
                                                                 tmp_path: Path):
    """What docs/events.md says about the difference, checked on both."""
    write_pki(tmp_path)
    ref, srv = lab.add("ref"), lab.add("srv")
    ovpn = start_openvpn(ref, tmp_path, "openvpn", server_lines(link_ip="127.0.0.1", extra=[
        f"management {tmp_path / 'openvpn.sock'} unix"]))
    trivpn = run_trivpn(srv, tmp_path, "trivpn", server_lines(link_ip="127.0.0.1", extra=[
        f"management {tmp_path / 'trivpn.sock'} unix", f"log {tmp_path / 'trivpn.log'}"]))
    assert trivpn.wait_event("management_listening", timeout=15), trivpn.text()
    assert ovpn.wait_for("Initialization Sequence Completed", timeout=15), ovpn.text()
    wait_for_socket(tmp_path / "openvpn.sock")

    first = Management(tmp_path / "openvpn.sock")
    assert first.read_until(b"\r\n").startswith(">INFO:")
    second = Management(tmp_path / "openvpn.sock")  # connects (backlog) but is not served
    second.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        second.sock.recv(100)
    first.send("quit")
    second.sock.settimeout(5.0)
    assert second.read_until(b"\r\n").startswith(">INFO:")

    clients = [Management(tmp_path / "trivpn.sock") for _ in range(2)]
    for c in clients:
        assert c.read_until(b"\r\n").startswith(">INFO:")


@pytest.mark.directive("management", "user", "group")
def test_an_unreadable_password_file_is_a_startup_error(lab: NetnsLab, tmp_path: Path):
    write_pki(tmp_path)
    srv = lab.add("srv")
    trivpn = run_trivpn(srv, tmp_path, "trivpn", server_lines(link_ip="127.0.0.1", extra=[
        "user nobody", "group nogroup", f"management {tmp_path / 'trivpn.sock'} unix missing.pw",
        f"log {tmp_path / 'trivpn.log'}"]))
    failed = trivpn.wait_event("setup_failed", timeout=15)
    assert failed is not None, trivpn.text()
    assert failed["what"] == "cannot read the management password file"
    assert failed["where"].endswith("missing.pw")
    proc = next(p for p in lab.processes if p.pid == trivpn.pid)
    assert proc.wait(timeout=10) == 1
    assert not trivpn.wait_event("privileges_dropped", timeout=0.1)


@pytest.mark.directive("log-append", "log")
def test_log_truncates_and_log_append_appends_like_openvpn(lab: NetnsLab, tmp_path: Path):
    write_pki(tmp_path)
    srv = lab.add("srv")
    for directive, keeps in (("log", False), ("log-append", True)):
        path = tmp_path / f"{directive}.log"
        path.write_text('{"event": "old_line"}\n')
        path.chmod(0o640)
        trivpn = run_trivpn(srv, tmp_path, directive, server_lines(
            link_ip="127.0.0.1", extra=[f"{directive} {path}"]))
        assert trivpn.wait_event("link_open", timeout=15), trivpn.text()
        assert (trivpn.count("old_line") == 1) is keeps
        assert mode(path) == 0o640  # an existing file keeps its mode, as with openvpn
        proc = next(p for p in lab.processes if p.pid == trivpn.pid)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.directive("management-client-user", "management-client-group")
@pytest.mark.parametrize(("directive", "allowed"), [("management-client-user nobody", False),
                                                    ("management-client-group nogroup", False),
                                                    ("management-client-user root", True)])
def test_management_client_user_and_group_like_openvpn(lab: NetnsLab, tmp_path: Path,
                                                       directive: str, allowed: bool):
    """The test process (root:root) connects to both servers' sockets."""
    write_pki(tmp_path)
    ref, srv = lab.add("ref"), lab.add("srv")
    ovpn = start_openvpn(ref, tmp_path, "openvpn", server_lines(link_ip="127.0.0.1", extra=[
        f"management {tmp_path / 'openvpn.sock'} unix", directive]))
    trivpn = run_trivpn(srv, tmp_path, "trivpn", server_lines(link_ip="127.0.0.1", extra=[
        f"management {tmp_path / 'trivpn.sock'} unix", directive,
        f"log {tmp_path / 'trivpn.log'}"]))
    assert trivpn.wait_event("management_listening", timeout=15), trivpn.text()
    assert ovpn.wait_for("Initialization Sequence Completed", timeout=15), ovpn.text()
    wait_for_socket(tmp_path / "openvpn.sock")
    for name in ("openvpn.sock", "trivpn.sock"):
        m = Management(tmp_path / name)
        if allowed:
            assert m.read_until(b"\r\n").startswith(">INFO:"), name
        else:
            assert m.sock.recv(100) == b"", name  # closed without a word
