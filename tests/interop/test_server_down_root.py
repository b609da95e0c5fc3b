"""The down-root plugin line in a server config, side by side: a real openvpn 2.6 server with
OpenVPN's own openvpn-plugin-down-root.so and a ``trivpn run`` server with the same config
(``user nobody``, ``group nogroup``, ``up``/``down`` and the plugin running the same
recording script). What OpenVPN 2.6 does, checked here on the binary: ``up`` runs as root
(before user/group), at exit the plugin's command runs as root, alone (no device arguments,
the environment of the up call from before its script_type), then ``down`` as nobody.

Lab (198.18.0.0/15 only): two server namespaces, no client needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.interop.clientkit import wait_until
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

PLUGIN = "/usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-down-root.so"


@pytest.mark.directive("plugin", "user", "group", "up", "down")
def test_down_root_runs_its_command_as_root_at_server_exit_like_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    if not Path(PLUGIN).exists() or shutil.which("id") is None:
        pytest.fail(f"{PLUGIN} (Debian's openvpn package) is needed")
    write_pki(tmp_path)
    # a directory user nobody can reach (pytest's tmp_path is root's only)
    shared = Path(tempfile.mkdtemp(prefix="trivpn-down-root-", dir="/tmp"))
    try:
        shared.chmod(0o777)
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True,
                                check=True).stdout.strip()
        for i, who in enumerate(("theirs", "ours")):
            record = shared / f"{who}.sh"
            out = shared / f"{who}.out"
            record.write_text(f'#!/bin/sh\necho "$script_type $(id -u) $1 $signal" >> {out}\n')
            record.chmod(0o755)
            out.touch()
            out.chmod(0o666)  # both the root and the nobody runs append to it
            srv = lab.add(f"srv{who[0]}")
            lab.veth(srv, lab.add("peer"), f"198.18.8{i}.1/24", f"198.18.8{i}.2/24")
            lines = server_lines(link_ip=f"198.18.8{i}.1", extra=[
                "script-security 2", "user nobody", "group nogroup", "persist-key",
                "persist-tun", f"up {record}", f"down {record}", f'plugin {PLUGIN} "{record}"'])
            if who == "theirs":
                server = start_openvpn(srv, tmp_path, f"server-{who}", lines)
                assert server.wait_for("Initialization Sequence Completed", 15), server.text()
                pid = server.pid
            else:
                ours = start_trivpn(srv, tmp_path, f"server-{who}", lines)
                assert ours.wait_event("privileges_dropped", 15), ours.text()
                pid = ours.pid
            os.kill(pid, signal.SIGTERM)
            assert wait_until(lambda: len(out.read_text().splitlines()) == 3), \
                (who, out.read_text())  # noqa: B023
        theirs = (shared / "theirs.out").read_text().splitlines()
        ours_lines = (shared / "ours.out").read_text().splitlines()
        dev = theirs[0].split()[2]
        assert theirs == [f"up 0 {dev} ", " 0  ", f"down {nobody} {dev} sigterm"], theirs
        assert ours_lines == [line.replace(dev, ours_lines[0].split()[2]) for line in theirs]
    finally:
        shutil.rmtree(shared)
