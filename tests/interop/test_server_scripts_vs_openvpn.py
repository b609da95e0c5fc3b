"""Server scripts side by side: a real openvpn 2.6 server and a ``trivpn run`` server with the
same config run the same dumping script (arguments and whole environment) for up, route-up,
tls-verify, client-connect, learn-address, client-disconnect and down, each with a real
openvpn client connecting, pinging and leaving; what trivpn passes must be what OpenVPN passes.

Lab (198.18.0.0/15 only): ``theirs`` (openvpn server, 198.18.0.1) and ``ours`` (trivpn server,
198.18.1.1), each with a client namespace (198.18.0.2, 198.18.1.2); tunnels 198.18.8.0/24.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.interop.clientkit import wait_until
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import (
    SERVER_VPN_IP,
    client_lines,
    ping,
    server_lines,
    start_side_server,
)
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

DUMP = """#!/bin/sh
out="{dir}/{who}.$script_type.log"
{{ for a in "$@"; do echo "ARG=$a"; done; env | sort; echo ====; }} >> "$out"
exit 0
"""
HOOKS = ("up", "route-up", "tls-verify", "client-connect", "learn-address",
         "client-disconnect", "down")
# values that differ by nature (process, files, shell, ports, clock, traffic)
VARIES = {"config", "daemon_pid", "daemon_start_time", "daemon_log_redirect", "PWD", "SHLVL",
          "_", "OLDPWD", "untrusted_port", "trusted_port", "time_unix", "time_ascii",
          "time_duration", "bytes_received", "bytes_sent", "client_connect_config_file",
          "client_connect_deferred_file"}
ARG_VARIES = {"client-connect"}  # its argument is a temporary file's name


def _records(workdir: Path, who: str, hook: str) -> list[tuple[list[str], dict[str, str]]]:
    path = workdir / f"{who}.{hook}.log"
    if not path.exists():
        return []
    out = []
    for block in path.read_text().split("====\n"):
        if not block.strip():
            continue
        args, env = [], {}
        for line in block.splitlines():
            if line.startswith("ARG="):
                args.append(line[4:])
            elif "=" in line:
                k, _, v = line.partition("=")
                env[k] = v
        out.append((args, env))
    return out


def _same_lab(value: str) -> str:
    """Our lab's link addresses written as theirs (198.18.1.x -> 198.18.0.x)."""
    return value.replace("198.18.1.", "198.18.0.")


@pytest.mark.directive("client-connect", "client-disconnect", "learn-address", "tls-verify",
                       "up", "down", "route-up", "setenv", "server-ipv6")
@pytest.mark.parametrize("extra", [[], ["server-ipv6 2001:2:0:8::/64"]], ids=["ipv4", "dual"])
def test_server_scripts_get_the_same_arguments_and_environment_as_from_openvpn(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, extra: list[str]) -> None:
    write_pki(tmp_path)
    for i, who in enumerate(("theirs", "ours")):
        dump = tmp_path / f"dump-{who}.sh"
        dump.write_text(DUMP.format(dir=tmp_path, who=who))
        dump.chmod(0o755)
        srv, cli = lab.add(f"s{who[0]}"), lab.add(f"c{who[0]}")
        lab.veth(srv, cli, f"198.18.{i}.1/24", f"198.18.{i}.2/24")
        config = server_lines(link_ip=f"198.18.{i}.1", extra=[
            "script-security 2", "setenv FOO bar", *extra,
            *(f"{hook} {dump}" for hook in HOOKS)])
        server = start_side_server(srv, tmp_path, who, config)
        client = start_openvpn(cli, tmp_path, f"client-{who}", client_lines(
            server_ip=f"198.18.{i}.1", extra=["explicit-exit-notify 1"]))
        assert client.wait_for("Initialization Sequence Completed", 20), client.text()[-3000:]
        assert ping(cli, SERVER_VPN_IP)
        os.kill(client.pid, signal.SIGTERM)
        assert wait_until(lambda: bool(_records(tmp_path, who, "client-disconnect"))), who  # noqa: B023
        os.kill(server.pid, signal.SIGTERM)
        assert wait_until(lambda: bool(_records(tmp_path, who, "down"))), who  # noqa: B023

    for hook in HOOKS:
        theirs, ours_runs = _records(tmp_path, "theirs", hook), _records(tmp_path, "ours", hook)
        if hook == "learn-address":  # OpenVPN's reaper deletes in its hash table's order
            theirs.sort(key=lambda r: (r[0][0] == "delete", r[0][1]))
            ours_runs.sort(key=lambda r: (r[0][0] == "delete", _same_lab(r[0][1])))
        assert len(ours_runs) == len(theirs) >= 1, (hook, len(theirs), len(ours_runs))
        for (their_args, their_env), (our_args, our_env) in zip(theirs, ours_runs, strict=True):
            if hook not in ARG_VARIES:
                assert [_same_lab(a) for a in our_args] == their_args, hook
            assert set(our_env) == set(their_env), (hook, set(our_env) ^ set(their_env))
            for key in set(their_env) - VARIES:
                assert _same_lab(our_env[key]) == their_env[key], (hook, key)
    (args, env), = _records(tmp_path, "ours", "client-connect")
    assert args == [env["client_connect_config_file"]]
    (_, env), = _records(tmp_path, "ours", "client-disconnect")
    assert int(env["bytes_received"]) > 1000 and int(env["bytes_sent"]) > 1000


REFUSE = """#!/bin/sh
echo "$script_type $common_name" >> "{dir}/{who}.ran"
[ "$script_type" = client-connect ] && exit 1
exit 0
"""


@pytest.mark.directive("client-connect", "client-disconnect", "client-config-dir")
def test_a_client_refused_by_client_connect_after_its_ccd_file_gets_client_disconnect(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    """OpenVPN runs client-disconnect when a connect handler succeeded before the one that
    refused (multi.c: CAS_PENDING_DEFERRED_PARTIAL); with no ccd file, it does not."""
    write_pki(tmp_path)
    (tmp_path / "ccd").mkdir()
    (tmp_path / "ccd" / "client1").write_text('push "route 198.18.52.0 255.255.255.0"\n')
    for i, who in enumerate(("theirs", "ours")):
        script = tmp_path / f"refuse-{who}.sh"
        script.write_text(REFUSE.format(dir=tmp_path, who=who))
        script.chmod(0o755)
        srv, cli = lab.add(f"s{who[0]}"), lab.add(f"c{who[0]}")
        lab.veth(srv, cli, f"198.18.{i}.1/24", f"198.18.{i}.2/24")
        config = server_lines(link_ip=f"198.18.{i}.1", extra=[
            "script-security 2", "client-config-dir ccd", f"client-connect {script}",
            f"client-disconnect {script}"])
        start_side_server(srv, tmp_path, who, config)
        client = start_openvpn(cli, tmp_path, f"client-{who}", client_lines(
            server_ip=f"198.18.{i}.1", extra=["auth-retry none"]))
        assert client.wait_for("AUTH_FAILED", 20), client.text()[-3000:]
        ran = tmp_path / f"{who}.ran"
        assert wait_until(lambda: ran.exists() and len(ran.read_text().splitlines()) == 2), who  # noqa: B023
        assert ran.read_text() == "client-connect client1\nclient-disconnect client1\n", who


@pytest.mark.directive("client-connect", "script-security")
def test_below_script_security_2_client_connect_refuses_every_client_like_openvpn(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> None:
    write_pki(tmp_path)
    marker = tmp_path / "ran"
    script = tmp_path / "touch.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    for i, who in enumerate(("theirs", "ours")):
        srv, cli = lab.add(f"s{who[0]}"), lab.add(f"c{who[0]}")
        lab.veth(srv, cli, f"198.18.{i}.1/24", f"198.18.{i}.2/24")
        config = server_lines(link_ip=f"198.18.{i}.1", extra=[f"client-connect {script}"])
        server = start_side_server(srv, tmp_path, who, config)
        client = start_openvpn(cli, tmp_path, f"client-{who}", client_lines(
            server_ip=f"198.18.{i}.1", extra=["auth-retry none"]))
        assert client.wait_for("AUTH_FAILED", 20), (who, client.text()[-3000:])
    assert not marker.exists()
    assert isinstance(server, TrivpnProcess)  # the last side, ours
    refused = server.wait_event("script_refused", 1)
    assert refused is not None and "--script-security 2" in refused["detail"]
