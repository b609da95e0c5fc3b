"""Debian's openvpn systemd units run trivpn in place of openvpn, unchanged but for the binary:
the ExecStart command lines of /lib/systemd/system/openvpn-client@.service and
openvpn-server@.service, against a real openvpn 2.6 peer in namespaces."""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    ping_ok,
    server_lines,
    start_server,
    wait_up,
)
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

UNITS = Path("/lib/systemd/system")
TRIVPN = [sys.executable, "-m", "trivpn"]
ROOT = Path(__file__).resolve().parents[2]


def exec_start(unit: str, instance: str, runtime_dir: Path) -> list[str]:
    """The unit's ExecStart with ``%i``/``%t`` expanded and openvpn replaced by trivpn."""
    path = UNITS / unit
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI requires Debian's {path} (the openvpn package)")
        pytest.skip(f"needs Debian's {path} (the openvpn package)")
    line = next(x for x in path.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", instance)
                       .replace("%t", str(runtime_dir)))
    assert argv[0] == "/usr/sbin/openvpn", argv
    return [*TRIVPN, *argv[1:]]


def spawn_in(ns: Netns, argv: list[str], cwd: Path, log: Path,
             notify_socket: Path | None = None) -> TrivpnProcess:
    """Start ``argv`` as systemd would: in WorkingDirectory ``cwd``, output to the journal
    (here a file: not a terminal, so JSON lines), ``$NOTIFY_SOCKET`` for Type=notify."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = str(notify_socket)
    with log.open("wb") as out:
        proc = ns.spawn(argv, stdout=out, cwd=cwd, env=env)
    return TrivpnProcess(log, proc.pid)


def test_openvpn_client_unit_command_line_brings_up_a_tunnel(lab: NetnsLab,
                                                             openvpn_binary: None,
                                                             tmp_path: Path) -> None:
    s: Setup = make_setup(lab, tmp_path)
    start_server(s, server_lines())
    # the unit gives --nobind on the command line; the config (client/NAME.conf) does not
    lines = [line for line in client_lines() if line != "nobind"]
    (tmp_path / "office.conf").write_text("\n".join(lines) + "\n")
    argv = exec_start("openvpn-client@.service", "office", tmp_path)
    assert argv[3:] == ["--suppress-timestamps", "--nobind", "--config", "office.conf"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end (Type=notify)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    try:
        client = spawn_in(s.client_ns, argv, tmp_path, tmp_path / "journal.log",
                          tmp_path / "notify.sock")
        ready = notify.recv(4096).decode()
        status = notify.recv(4096).decode()
    finally:
        notify.close()
    assert ready.split("\n")[0] == "READY=1" and f"MAINPID={client.pid}" in ready
    assert status == "STATUS=Initialization Sequence Completed"
    event = wait_up(client)
    assert event["device"].startswith("tun")
    ping_ok(s.client_ns, VPN_SERVER)
    starting = client.wait_event("trivpn_starting", 1)
    assert starting is not None and starting["config"] == str(tmp_path / "office.conf")
    opened = client.wait_event("link_open", 1)
    assert opened is not None, client.text()[-3000:]


def test_openvpn_server_unit_command_line_serves_a_real_openvpn_client(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    s: Setup = make_setup(lab, tmp_path)
    runtime = tmp_path / "run"
    (runtime / "openvpn-server").mkdir(parents=True)
    (tmp_path / "hq.conf").write_text("\n".join(server_lines()) + "\n")
    argv = exec_start("openvpn-server@.service", "hq", runtime)
    status = runtime / "openvpn-server" / "status-hq.log"
    assert argv[3:] == ["--status", str(status), "--status-version", "2",
                        "--suppress-timestamps", "--config", "hq.conf"]
    server = spawn_in(s.server_ns, argv, tmp_path, tmp_path / "journal.log")
    assert server.wait_event("link_open", 20) is not None, server.text()[-3000:]
    client = start_openvpn(s.client_ns, tmp_path, "client", client_lines())
    assert client.wait_for("Initialization Sequence Completed", 20), client.text()[-3000:]
    ping_ok(s.client_ns, VPN_SERVER)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (status.exists()
                                               and "CLIENT_LIST" in status.read_text()):
        time.sleep(0.1)
    text = status.read_text()
    assert text.startswith("TITLE,"), text  # --status-version 2 from the command line


def test_check_needs_no_network_at_all(lab: NetnsLab, tmp_path: Path) -> None:
    """`trivpn check` in a namespace whose only interface, loopback, is down: a remote host
    name and a redirect-gateway config still check out (nothing is resolved or sent)."""
    write_pki(tmp_path)
    (tmp_path / "c.conf").write_text(
        "client\ndev tun\nremote vpn.example.com 1194\nca ca.crt\ncert client.crt\n"
        "key client.key\nredirect-gateway def1\n")
    ns = lab.add("offline")
    ns.ip("link", "set", "lo", "down")
    done = ns.run([*TRIVPN, "check", str(tmp_path / "c.conf"), "--json"], check=False,
                  timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"address": "resolved at run time"' in done.stdout
    # the same namespace cannot resolve or reach anything: the check would have failed
    probe = ns.run([sys.executable, "-c", "import socket; socket.getaddrinfo("
                    "'vpn.example.com', 1194)"], check=False, timeout=30)
    assert probe.returncode != 0
