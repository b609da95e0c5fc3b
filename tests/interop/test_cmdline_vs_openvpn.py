"""What trivpn's command-line form and logging directives say OpenVPN does, checked against the
real openvpn 2.6 (config/cmdline.py, config/directives.py: suppress-timestamps and
machine-readable-output)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab
from trivpn.config import load_command_line

pytestmark = pytest.mark.integration

CLIENT = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.9", "1194",
          "--nobind", "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key"]


@pytest.fixture
def workdir(workdir: Path) -> Path:
    """The PKI dir, with a config file to include."""
    (workdir / "mtu.conf").write_text("tun-mtu 1400\n")
    return workdir


@pytest.mark.parametrize(("args", "mtu"), [
    (["--tun-mtu", "1300", "--config", "mtu.conf"], 1400),
    (["--config", "mtu.conf", "--tun-mtu", "1300"], 1300),
    (["--tun-mtu", "1300", "--tun-mtu", "1200"], 1200),
])
def test_later_arguments_and_config_files_override_earlier_ones_as_in_openvpn(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, args: list[str], mtu: int) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--verb", "4", *args], seconds=1)
    assert f"  tun_mtu = {mtu}\n" in out, out[-2000:]
    ours = load_command_line([*CLIENT, *args], cwd=workdir, read_files=False)
    assert ours.tun_mtu == mtu


@pytest.mark.directive("suppress-timestamps", "machine-readable-output")
@pytest.mark.parametrize(("flags", "prefix"), [
    ([], r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "),
    (["--suppress-timestamps"], r""),
    (["--machine-readable-output"], r"\d+\.\d{6} [0-9a-f]+ "),
    (["--suppress-timestamps", "--machine-readable-output"], r"\d+\.\d{6} [0-9a-f]+ "),
    (["--machine-readable-output", "--suppress-timestamps"], r"\d+\.\d{6} [0-9a-f]+ "),
])
def test_openvpn_machine_readable_output_wins_over_suppress_timestamps(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, flags: list[str],
        prefix: str) -> None:
    out = openvpn_output(lab, workdir, [*CLIENT, "--verb", "3", *flags], seconds=1)
    first = out.splitlines()[0]
    assert re.match(prefix + r"Note: ", first), first


def test_openvpn_under_systemd_notifies_ready_with_its_pid_and_does_not_fork_for_daemon(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    # what trivpn/runtime/sdnotify.py says OpenVPN 2.6 does (trivpn: tests/
    # test_cli_openvpn_form.py)
    ns = lab.add("ovpn")
    path = workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    notify.settimeout(10)
    try:
        proc = ns.spawn(["openvpn", "--cd", str(workdir), "--daemon", "ovpn-x", *CLIENT],
                        env=os.environ | {"NOTIFY_SOCKET": str(path)})
        messages = [notify.recv(4096).decode()]
        while not messages[-1].startswith("READY=1"):
            messages.append(notify.recv(4096).decode())
        assert proc.poll() is None  # the same process goes on: no fork
    finally:
        notify.close()
    assert messages[0] == "READY=0"  # its probe: "am I run by systemd?" (then no fork)
    assert messages[-1].split("\n") == [
        "READY=1", "STATUS=Pre-connection initialization successful", f"MAINPID={proc.pid}"]
