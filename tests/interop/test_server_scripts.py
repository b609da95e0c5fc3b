"""Server scripts on the ``trivpn run`` server with real ``openvpn`` 2.6 clients: client-connect
(its dynamic config file, exit codes, the deferred form), client-disconnect (byte counts),
learn-address (add/delete), tls-verify and the server's up/down.

One lab for the module (namespaces, 198.18.0.0/15 only)::

    srv (trivpn server, 198.18.0.1; tunnel 198.18.8.0/24)
      |-- cli (198.18.0.2): openvpn clients, one after the other
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

PUSHED_IP = "198.18.8.77"

# Every script appends its arguments and environment to NAME.<common_name or "server">.log;
# client-connect acts on the client's common name.
DUMP = """#!/bin/sh
who="${{common_name:-server}}"
out="{dir}/$script_type.$who.log"
{{ for a in "$@"; do echo "ARG=$a"; done; env | sort; echo ====; }} >> "$out"
"""
CONNECT = DUMP + """
case "$common_name" in
  refused) exit 1 ;;
  pushed) echo 'ifconfig-push {pushed} 255.255.255.0' > "$1"
          echo 'push "route 198.18.50.0 255.255.255.0"' >> "$1" ;;
  deferred) echo 2 > "$client_connect_deferred_file"
            ( sleep 1; echo 'push "route 198.18.51.0 255.255.255.0"' > "$client_connect_config_file"
              echo 1 > "$client_connect_deferred_file" ) >/dev/null 2>&1 &
            ;;
  late) sleep 2 ;;
esac
exit 0
"""
LEARN = """#!/bin/sh
echo "$*" >> "{dir}/learn.log"
exit 0
"""
VERIFY = DUMP + """
[ "$2" = "CN=evil" ] && exit 1
exit 0
"""


@dataclass
class Lab:
    workdir: Path
    srv: Netns
    cli: Netns
    server: TrivpnProcess
    started: int = 0

    def client(self, cn: str) -> OpenVpnProcess:
        self.started += 1  # a fresh log file for each run
        return start_openvpn(self.cli, self.workdir, f"client-{cn}-{self.started}", client_lines(
            server_ip="198.18.0.1", cert=cn,
            extra=["verb 4", "auth-retry none", "explicit-exit-notify 1"]))

    def records(self, script_type: str, who: str) -> list[tuple[list[str], dict[str, str]]]:
        path = self.workdir / f"{script_type}.{who}.log"
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
                    k, _, val = line.partition("=")
                    env[k] = val
            out.append((args, env))
        return out

    def learned(self) -> list[str]:
        path = self.workdir / "learn.log"
        return path.read_text().splitlines() if path.exists() else []


def _script(workdir: Path, name: str, text: str) -> str:
    path = workdir / name
    path.write_text(text.format(dir=workdir, pushed=PUSHED_IP))
    path.chmod(0o755)
    return str(path)


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _stop(client: OpenVpnProcess) -> None:
    os.kill(client.pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def scripts_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("srvscripts")
    pki = write_pki(workdir)
    for name in ("alice", "bob", "refused", "pushed", "evil", "deferred", "late", "quick"):
        issue_client(pki, name)
    dump = _script(workdir, "dump.sh", DUMP)
    with NetnsLab() as lab:
        srv, cli = lab.add("srv"), lab.add("cli")
        lab.veth(srv, cli, "198.18.0.1/24", "198.18.0.2/24")
        server = start_trivpn(srv, workdir, "server", server_lines(link_ip="198.18.0.1", extra=[
            "script-security 2", "duplicate-cn", "explicit-exit-notify 1",
            f"client-connect {_script(workdir, 'connect.sh', CONNECT)}",
            f"client-disconnect {dump}",
            f"learn-address {_script(workdir, 'learn.sh', LEARN)}",
            f"tls-verify {_script(workdir, 'verify.sh', VERIFY)}",
            f"up {dump}", f"down {dump}", f"route-up {dump}", "setenv FOO bar"]))
        assert server.wait_event("link_open", timeout=10), server.text()
        yield Lab(workdir, srv, cli, server)


@pytest.mark.directive("client-connect")
def test_client_connect_runs_with_the_clients_environment_and_a_config_file(scripts_lab: Lab):
    client = scripts_lab.client("alice")
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-2000:], scripts_lab.server.text()[-3000:])
    (args, env), = scripts_lab.records("client-connect", "alice")
    assert len(args) == 1 and args[0] == env["client_connect_config_file"]
    assert args[0].startswith("/tmp/openvpn_cc_") and not Path(args[0]).exists()
    assert env["script_type"] == "client-connect" and env["common_name"] == "alice"
    assert env["trusted_ip"] == "198.18.0.2" and env["untrusted_ip"] == "198.18.0.2"
    assert env["ifconfig_pool_remote_ip"].startswith("198.18.8.")
    assert env["ifconfig_pool_netmask"] == "255.255.255.0"
    assert env["ifconfig_local"] == SERVER_VPN_IP and env["FOO"] == "bar"
    assert env["IV_VER"].startswith("2.6") and env["X509_0_CN"] == "alice"
    assert abs(int(env["time_unix"]) - time.time()) < 60
    _stop(client)


@pytest.mark.directive("client-connect", "ifconfig-push", "push")
def test_client_connect_config_file_gives_address_and_route(scripts_lab: Lab):
    client = scripts_lab.client("pushed")
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-2000:], scripts_lab.server.text()[-3000:])
    text = client.text()
    assert f"ifconfig {PUSHED_IP} 255.255.255.0" in text
    assert "route 198.18.50.0 255.255.255.0" in text
    assert "198.18.50.0/24" in scripts_lab.cli.run(["ip", "-4", "route", "show"]).stdout
    assert ping(scripts_lab.srv, PUSHED_IP)
    _stop(client)


@pytest.mark.directive("client-connect")
def test_client_connect_exit_1_refuses_the_client_while_another_connects(scripts_lab: Lab):
    refused = scripts_lab.client("refused")
    other = scripts_lab.client("bob")
    assert refused.wait_for("AUTH_FAILED", timeout=20), refused.text()[-2000:]
    assert other.wait_for("Initialization Sequence Completed", timeout=20), other.text()[-2000:]
    event = scripts_lab.server.wait_event("client_connect_refused", timeout=5, cn="refused")
    assert event is not None and "exited with error status: 1" in event["reason"]
    # client-connect failed without an earlier handler succeeding: no client-disconnect
    time.sleep(0.5)
    assert scripts_lab.records("client-disconnect", "refused") == []
    _stop(other)


@pytest.mark.directive("client-connect")
def test_slow_client_connect_does_not_hold_up_another_client(scripts_lab: Lab):
    late = scripts_lab.client("late")  # its script sleeps 2 s
    time.sleep(0.3)
    quick = scripts_lab.client("quick")
    assert quick.wait_for("Initialization Sequence Completed", timeout=20), quick.text()[-2000:]
    assert "Initialization Sequence Completed" not in late.text()
    assert late.wait_for("Initialization Sequence Completed", timeout=20), late.text()[-2000:]
    _stop(late)
    _stop(quick)


@pytest.mark.directive("client-connect")
def test_deferred_client_connect_admits_when_the_result_file_says_1(scripts_lab: Lab):
    client = scripts_lab.client("deferred")
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-2000:], scripts_lab.server.text()[-3000:])
    assert "route 198.18.51.0 255.255.255.0" in client.text()
    _stop(client)


@pytest.mark.directive("client-disconnect")
def test_client_disconnect_gets_byte_counts_and_duration(scripts_lab: Lab):
    client = scripts_lab.client("alice")
    assert client.wait_for("Initialization Sequence Completed", timeout=20)
    assert ping(scripts_lab.cli, SERVER_VPN_IP)
    _stop(client)
    assert _wait(lambda: len(scripts_lab.records("client-disconnect", "alice")) >= 1), \
        scripts_lab.server.text()[-3000:]
    args, env = scripts_lab.records("client-disconnect", "alice")[-1]
    assert args == [] and env["script_type"] == "client-disconnect"
    assert int(env["bytes_received"]) > 1000 and int(env["bytes_sent"]) > 1000
    assert int(env["time_duration"]) >= 0 and env["common_name"] == "alice"
    assert "ifconfig_pool_remote_ip" in env and "time_unix" in env


@pytest.mark.directive("learn-address")
def test_learn_address_adds_at_connect_and_deletes_at_disconnect(scripts_lab: Lab):
    client = scripts_lab.client("bob")
    assert client.wait_for("Initialization Sequence Completed", timeout=20)
    connected = scripts_lab.server.wait_event("peer_connected", timeout=5, cn="bob")
    assert connected is not None
    address = connected["vpn_ip"]
    lines = scripts_lab.learned()
    assert f"add {address} bob" in lines
    added_at = len(lines) - 1 - lines[::-1].index(f"add {address} bob")
    _stop(client)
    assert _wait(lambda: f"delete {address}" in scripts_lab.learned()[added_at + 1:]), \
        scripts_lab.learned()


@pytest.mark.directive("tls-verify")
def test_server_tls_verify_refuses_a_common_name(scripts_lab: Lab):
    client = scripts_lab.client("evil")
    assert _wait(lambda: any(args == ["0", "CN=evil"]
                             for args, _ in scripts_lab.records("tls-verify", "evil")), 20)
    rejected = scripts_lab.server.wait_event("peer_cert_rejected", timeout=10, cn="evil")
    assert rejected is not None, scripts_lab.server.text()[-3000:]
    assert "Initialization Sequence Completed" not in client.text()
    assert scripts_lab.records("client-connect", "evil") == []
    _stop(client)
    # the CA at depth 1, before common_name is set
    assert any(args == ["1", "CN=interop CA"]
               for args, _ in scripts_lab.records("tls-verify", "server"))


@pytest.mark.directive("up", "route-up")
def test_server_up_runs_with_device_arguments(scripts_lab: Lab):
    (args, env), = scripts_lab.records("up", "server")
    assert args[1:] == ["1500", "0", SERVER_VPN_IP, "255.255.255.0", "init"]
    assert args[0] == env["dev"] and env["dev_type"] == "tun"
    assert env["script_type"] == "up" and env["local_port_1"] == "1194"
    (_, route_env), = scripts_lab.records("route-up", "server")
    assert route_env["redirect_gateway"] == "0"


@pytest.mark.directive("down")
def test_server_down_runs_at_exit_after_client_disconnect(scripts_lab: Lab):
    """Runs last in the module: stops the server."""
    client = scripts_lab.client("alice")
    assert client.wait_for("Initialization Sequence Completed", timeout=20)
    before = len(scripts_lab.records("client-disconnect", "alice"))
    os.kill(scripts_lab.server.pid, signal.SIGTERM)
    assert _wait(lambda: scripts_lab.records("down", "server") != []), \
        scripts_lab.server.text()[-3000:]
    (args, env), = scripts_lab.records("down", "server")
    assert args[1:] == ["1500", "0", SERVER_VPN_IP, "255.255.255.0", "init"]
    assert env["signal"] == "sigterm" and env["script_type"] == "down"
    assert len(scripts_lab.records("client-disconnect", "alice")) == before + 1
    _stop(client)
