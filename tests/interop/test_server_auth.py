"""User authentication on a ``trivpn run`` server, with real openvpn 2.6 clients:
auth-user-pass-verify (via-file, via-env, deferred), username-as-common-name,
verify-client-cert none|optional, auth-user-pass-optional; and what a real openvpn server does
with a client that sends no password (checked against the binary)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.interop import test_openvpn_claims as claims
from tests.interop.clientkit import wait_until
from tests.interop.openvpn import (
    OpenVpnProcess,
    as_config,
    openvpn_output,
    start_openvpn,
    write_pki,
)
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

# via-file: $1 holds the username and the password, one per line. alice/s3cret is accepted;
# "slow" is deferred: the script exits 2 and a background job writes 1 later; every call is
# counted in calls.log (one line per call, the username)
VIA_FILE_SCRIPT = """#!/bin/sh
{ read -r user; read -r pass; } < "$1"
echo "$user $script_type $common_name" >> "$(dirname "$0")/calls.log"
if [ "$user" = slow ]; then
    ( sleep 1.5; echo 1 > "$auth_control_file" ) >/dev/null 2>&1 &
    exit 2
fi
if [ "$user" = pending ]; then
    printf '30\ncrtext\nCR_TEXT:R,E:Enter your code\n' > "$auth_pending_file"
    ( sleep 1.5; echo 1 > "$auth_control_file" ) >/dev/null 2>&1 &
    exit 2
fi
if [ "$user" = alice ] && [ "$pass" = s3cret ]; then exit 0; fi
echo "wrong password for $user" > "$auth_failed_reason_file"
exit 1
"""

VIA_ENV_SCRIPT = """#!/bin/sh
echo "$username" >> "$(dirname "$0")/calls.log"
[ "$username" = alice ] && [ "$password" = s3cret ] && exit 0
exit 1
"""


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "check.sh"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _creds(tmp_path: Path, name: str, user: str, password: str) -> str:
    path = tmp_path / f"{name}.pass"
    path.write_text(f"{user}\n{password}\n")
    path.chmod(0o600)
    return path.name


def _setup(lab: NetnsLab, tmp_path: Path, extra: list[str], clients: int = 1
           ) -> tuple[TrivpnProcess, list[Netns]]:
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(clients)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=extra))
    assert server.wait_event("link_open", timeout=10), server.text()
    return server, spokes


def _client(ns: Netns, tmp_path: Path, name: str, i: int, extra: list[str],
            *, cert: bool = True) -> OpenVpnProcess:
    lines = client_lines(server_ip=f"198.18.{10 + i}.1", extra=extra)
    if not cert:
        lines = [ln for ln in lines if not ln.startswith(("cert ", "key "))]
    return start_openvpn(ns, tmp_path, name, lines)


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _connected(server: TrivpnProcess) -> list[dict[str, object]]:
    return [e for e in server.events() if e.get("event") == "peer_connected"]


@pytest.mark.directive("auth-user-pass-verify")
def test_via_file_script_admits_the_right_password_and_refuses_a_wrong_one(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (good_ns, bad_ns) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file", "duplicate-cn"],
        clients=2)
    good = _client(good_ns, tmp_path, "good", 0,
                   [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    bad = _client(bad_ns, tmp_path, "bad", 1,
                  [f"auth-user-pass {_creds(tmp_path, 'bad', 'alice', 'guess')}"])
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert ping(good_ns, SERVER_VPN_IP)
    # the reason the script wrote to auth_failed_reason_file reaches the client
    assert bad.wait_for("AUTH_FAILED,wrong password for alice", timeout=20), bad.text()[-2000:]
    assert "Initialization Sequence Completed" not in bad.text()
    assert "alice user-pass-verify client1" in _calls(tmp_path)
    failed = server.wait_event("auth_user_pass_failed", 5)
    assert failed is not None and failed["username"] == "alice"
    assert "guess" not in server.text() and "s3cret" not in server.text()  # never logged
    assert not list(tmp_path.glob("openvpn_up_*"))  # the credentials file is gone
    assert len(_connected(server)) == 1


@pytest.mark.directive("auth-user-pass-verify", "script-security")
def test_via_env_script_gets_the_password_only_with_script_security_3(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_ENV_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 3", f"auth-user-pass-verify {script} via-env"])
    client = _client(ns, tmp_path, "good", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert _calls(tmp_path) == ["alice"]


@pytest.mark.directive("auth-user-pass-verify")
def test_via_env_with_script_security_2_hides_the_password_from_the_script(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_ENV_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-env"])
    client = _client(ns, tmp_path, "good", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("AUTH_FAILED", timeout=20), client.text()[-2000:]
    assert _calls(tmp_path) == ["alice"]  # the script ran, without $password
    assert server.wait_event("auth_user_pass_failed", 5, why="script_exit_1") is not None


@pytest.mark.directive("auth-user-pass-verify")
def test_deferred_authentication_does_not_hold_up_another_client(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (slow_ns, fast_ns) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file", "duplicate-cn"],
        clients=2)
    slow = _client(slow_ns, tmp_path, "slow", 0,
                   [f"auth-user-pass {_creds(tmp_path, 'slow', 'slow', 'x')}"])
    assert wait_until(lambda: "slow user-pass-verify client1" in _calls(tmp_path), 20), \
        server.text()[-3000:]
    fast = _client(fast_ns, tmp_path, "fast", 1,
                   [f"auth-user-pass {_creds(tmp_path, 'fast', 'alice', 's3cret')}"])
    assert fast.wait_for("Initialization Sequence Completed", timeout=20)
    assert slow.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert wait_until(lambda: len(_connected(server)) == 2, 5)
    # the fast client was admitted while the slow one's decision was still pending
    first = _connected(server)[0]
    assert str(first["peer"]).startswith("198.18.11.2"), _connected(server)
    assert server.wait_event("auth_user_pass_ok", 1, how="deferred_accepted") is not None


@pytest.mark.directive("auth-user-pass-verify")
def test_pending_authentication_sends_auth_pending_to_a_client_that_offers_the_method(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file"])
    client = _client(ns, tmp_path, "pending", 0, [
        f"auth-user-pass {_creds(tmp_path, 'pending', 'pending', 'x')}",
        "setenv IV_SSO crtext"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    text = client.text()
    # the client took the timeout from AUTH_PENDING,timeout 30
    assert "AUTH_PENDING received, extending handshake timeout from 60s to 30s" in text
    assert server.wait_event("auth_pending", 1) is not None


@pytest.mark.directive("auth-user-pass-verify")
def test_pending_authentication_refuses_a_client_without_the_method(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file"])
    client = _client(ns, tmp_path, "pending", 0, [
        f"auth-user-pass {_creds(tmp_path, 'pending', 'pending', 'x')}"])
    assert client.wait_for("AUTH_FAILED,Authentication failed, required pending auth method "
                           "'crtext' not supported", timeout=20), client.text()[-2000:]
    assert server.wait_event("auth_user_pass_failed", 5,
                             why="pending_method_unsupported") is not None


@pytest.mark.directive("verify-client-cert", "username-as-common-name")
def test_a_client_without_certificate_connects_by_password_under_its_username(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file",
        "verify-client-cert none", "username-as-common-name"])
    client = _client(ns, tmp_path, "nocert", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'nocert', 'alice', 's3cret')}"],
                     cert=False)
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:] + client.text()[-2000:]
    assert ping(ns, SERVER_VPN_IP)
    assert _connected(server)[0]["cn"] == "alice"
    assert _calls(tmp_path) == ["alice user-pass-verify "]  # no common_name at all


@pytest.mark.directive("verify-client-cert")
def test_verify_client_cert_optional_still_checks_a_presented_certificate(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file",
        "verify-client-cert optional"])
    client = _client(ns, tmp_path, "cert", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'cert', 'alice', 's3cret')}"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert _connected(server)[0]["cn"] == "client1"  # the certificate's name


@pytest.mark.directive("auth-user-pass-verify")
def test_a_client_without_password_gets_no_answer_as_from_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file"])
    client = _client(ns, tmp_path, "nopass", 0, [])
    assert server.wait_event("auth_credentials_missing", 20) is not None, server.text()[-3000:]
    time.sleep(1.0)
    assert "AUTH_FAILED" not in client.text()
    assert "Initialization Sequence Completed" not in client.text()
    assert _calls(tmp_path) == []  # the script is not even asked


@pytest.mark.directive("auth-user-pass-optional")
def test_auth_user_pass_optional_asks_the_script_about_a_client_without_password(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT.replace(
        'if [ "$user" = alice ]', 'if [ -z "$user" ]; then exit 0; fi\nif [ "$user" = alice ]'))
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file",
        "auth-user-pass-optional"])
    client = _client(ns, tmp_path, "nopass", 0, [])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert _calls(tmp_path) == [" user-pass-verify client1"]


def test_openvpn_server_gives_a_client_without_password_no_auth_failed(
        lab: NetnsLab, tmp_path: Path) -> None:
    """The claim in docs/server-auth.md and serverpeers.py: a real openvpn 2.6 server answers
    a client that sends no username/password with a TLS error, not AUTH_FAILED."""
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-file"]))
    assert server.wait_for("Initialization Sequence Completed", timeout=10), server.text()
    client = _client(ns, tmp_path, "nopass", 0, [])
    assert server.wait_for("Auth Username/Password was not provided by peer", 20), \
        server.text()[-3000:]
    time.sleep(1.0)
    assert "AUTH_FAILED" not in client.text()
    assert _calls(tmp_path) == []


def _stop(lab: NetnsLab, pid: int) -> None:
    proc = next(p for p in lab.processes if p.pid == pid)
    proc.terminate()
    proc.wait(10)


@pytest.mark.directive("auth-gen-token", "auth-gen-token-secret")
def test_auth_token_replaces_the_password_on_reconnect_and_survives_a_server_restart(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    # the secret in OpenVPN's own format: made by the real binary
    srv.run(["openvpn", "--genkey", "auth-token", str(tmp_path / "token.key")])
    lines = server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-file",
        "auth-gen-token 3600", "auth-gen-token-secret token.key"])
    server = start_trivpn(srv, tmp_path, "server", lines)
    assert server.wait_event("link_open", timeout=10), server.text()
    client = _client(ns, tmp_path, "good", 0, [
        f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert _calls(tmp_path) == ["alice user-pass-verify client1"]
    # a soft restart: the client reconnects with the pushed token instead of the password
    os.kill(client.pid, signal.SIGUSR1)
    assert server.wait_event("auth_user_pass_ok", 20, how="auth_token") is not None, \
        server.text()[-3000:]
    assert wait_until(lambda: client.text().count("Initialization Sequence Completed") == 2, 20)
    # a new server process with the same secret accepts the token too
    _stop(lab, server.pid)
    server2 = start_trivpn(srv, tmp_path, "server2", lines)
    assert server2.wait_event("link_open", timeout=10), server2.text()
    os.kill(client.pid, signal.SIGUSR1)
    assert server2.wait_event("auth_user_pass_ok", 20, how="auth_token") is not None, \
        server2.text()[-3000:]
    assert wait_until(lambda: client.text().count("Initialization Sequence Completed") == 3, 20)
    assert _calls(tmp_path) == ["alice user-pass-verify client1"]  # the script ran once
    assert "SESS_ID_AT_" not in server.text() + server2.text()  # tokens are not logged


@pytest.mark.directive("auth-gen-token")
def test_a_token_from_another_secret_is_refused_and_the_client_falls_back_to_its_password(
        lab: NetnsLab, tmp_path: Path) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    lines = server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-file", "auth-gen-token"])
    server = start_trivpn(srv, tmp_path, "server", lines)  # no secret: a key per run
    assert server.wait_event("link_open", timeout=10), server.text()
    client = _client(ns, tmp_path, "good", 0, [
        f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    _stop(lab, server.pid)
    server2 = start_trivpn(srv, tmp_path, "server2", lines)
    assert server2.wait_event("link_open", timeout=10), server2.text()
    os.kill(client.pid, signal.SIGUSR1)
    assert server2.wait_event("auth_user_pass_failed", 20, why="auth_token_invalid") \
        is not None, server2.text()[-3000:]
    # OpenVPN's client forgets the token on AUTH_FAILED and comes back with its password
    assert wait_until(lambda: client.text().count("Initialization Sequence Completed") == 2, 20), \
        client.text()[-2000:]
    assert _calls(tmp_path) == ["alice user-pass-verify client1"] * 2


class _Management:
    """A management client on the server's loopback (the socket made inside its namespace)."""

    def __init__(self, ns: Netns, port: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            with ns.enter():
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect(("127.0.0.1", port))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.settimeout(20)
        self.sock = sock
        self.buffer = b""

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "management connection closed"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        return raw.decode()

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{ln}\n" for ln in lines).encode())

    def next_client(self) -> tuple[str, str, dict[str, str]]:
        """The next ``>CLIENT:CONNECT,cid,kid`` and its environment."""
        while not (line := self.line()).startswith(">CLIENT:CONNECT,"):
            pass
        _, cid, kid = line.split(",")
        env: dict[str, str] = {}
        while (line := self.line()) != ">CLIENT:ENV,END":
            key, _, value = line.removeprefix(">CLIENT:ENV,").partition("=")
            env[key] = value
        return cid, kid, env

    def answer_until(self, prefix: str) -> str:
        while not (line := self.line()).startswith(prefix):
            pass
        return line


@pytest.mark.directive("management-client-auth")
def test_management_client_auth_admits_with_pushes_and_denies_with_a_reason(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv = lab.add("srv")
    spokes = [lab.add("c"), lab.add("c")]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        "management 127.0.0.1 7505", "management-client-auth", "duplicate-cn"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    mgmt = _Management(srv, 7505)
    assert mgmt.line().startswith(">INFO:")
    good = _client(spokes[0], tmp_path, "good", 0,
                   [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    cid, kid, env = mgmt.next_client()
    assert (env["username"], env["password"], env["common_name"]) == (
        "alice", "s3cret", "client1")
    assert env["untrusted_ip"] == "198.18.10.2" and env["IV_VER"].startswith("2.6")
    mgmt.send(f"client-auth {cid} {kid}", 'push "route 198.19.5.0 255.255.255.0"', "END")
    assert mgmt.answer_until("SUCCESS:") == "SUCCESS: client-auth command succeeded"
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert "route 198.19.5.0 255.255.255.0" in good.text()  # the pushed line arrived
    bad = _client(spokes[1], tmp_path, "bad", 1,
                  [f"auth-user-pass {_creds(tmp_path, 'bad', 'mallory', 'x')}"])
    cid, kid, env = mgmt.next_client()
    assert env["username"] == "mallory"
    mgmt.send(f'client-deny {cid} {kid} "unknown user" "go away"')
    assert mgmt.answer_until("SUCCESS:") == "SUCCESS: client-deny command succeeded"
    assert bad.wait_for("AUTH_FAILED,go away", timeout=20), bad.text()[-2000:]
    mgmt.send(f"client-auth-nt {cid} {kid}")  # already decided
    assert mgmt.answer_until("ERROR:") == "ERROR: client-auth command failed"  # as OpenVPN


def test_openvpn_server_script_semantics_match_trivpns(lab: NetnsLab, tmp_path: Path) -> None:
    """The claims in docs/server-auth.md about OpenVPN's scripts, checked against a real openvpn
    2.6 server with the same script: exit 0 admits, a reason file gives AUTH_FAILED,<reason>,
    exit 2 + a later '1' in auth_control_file admits; via-file's file and the env names; a
    pending file gives AUTH_PENDING,timeout N + INFO_PRE to a client offering the method in
    IV_SSO and AUTH_FAILED,<...not supported> to one that does not."""
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(5)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-file", "duplicate-cn"]))
    assert server.wait_for("Initialization Sequence Completed", timeout=10), server.text()
    good = _client(spokes[0], tmp_path, "good", 0,
                   [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    bad = _client(spokes[1], tmp_path, "bad", 1,
                  [f"auth-user-pass {_creds(tmp_path, 'bad', 'alice', 'guess')}"])
    slow = _client(spokes[2], tmp_path, "slow", 2,
                   [f"auth-user-pass {_creds(tmp_path, 'slow', 'slow', 'x')}"])
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert bad.wait_for("AUTH_FAILED,wrong password for alice", timeout=20), bad.text()[-2000:]
    assert slow.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert "alice user-pass-verify client1" in _calls(tmp_path)
    pending = _client(spokes[3], tmp_path, "pending", 3, [
        f"auth-user-pass {_creds(tmp_path, 'pending', 'pending', 'x')}",
        "setenv IV_SSO crtext"])
    refused = _client(spokes[4], tmp_path, "refused", 4, [
        f"auth-user-pass {_creds(tmp_path, 'refused', 'pending', 'x')}"])
    assert pending.wait_for("Initialization Sequence Completed", timeout=20)
    text = pending.text()
    # the client took the timeout from AUTH_PENDING,timeout 30
    assert "AUTH_PENDING received, extending handshake timeout from 60s to 30s" in text
    assert refused.wait_for("AUTH_FAILED,Authentication failed, required pending auth method "
                            "'crtext' not supported", timeout=20), refused.text()[-2000:]


def test_openvpn_server_hides_the_password_from_via_env_below_script_security_3(
        lab: NetnsLab, tmp_path: Path) -> None:
    """docs/server-auth.md: via-env passes $password only with script-security 3."""
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    script = _script(tmp_path, VIA_ENV_SCRIPT)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-env"]))
    assert server.wait_for("Initialization Sequence Completed", timeout=10), server.text()
    client = _client(ns, tmp_path, "good", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("AUTH_FAILED", timeout=20), client.text()[-2000:]
    assert _calls(tmp_path) == ["alice"]


PAM_CHECK = """#!/bin/sh
# pam_exec expose_authtok: the password on stdin (NUL-terminated), the user in $PAM_USER
pw=$(tr -d '\\000')
echo "pam $PAM_USER $PAM_SERVICE" >> "$(dirname "$0")/calls.log"
[ "$PAM_USER" = alice ] && [ "$pw" = s3cret ]
"""


@pytest.fixture
def pam_service(tmp_path: Path) -> Iterator[str]:
    """A PAM service of its own under /etc/pam.d (system libpam reads no other place), made
    of pam_exec with a checking script and pam_permit: no host account is involved; removed
    afterwards."""
    require_root()
    check = tmp_path / "pam-check.sh"
    check.write_text(PAM_CHECK)
    check.chmod(0o755)
    name = f"trivpn-test-{os.getpid()}-{secrets.token_hex(4)}"
    path = Path("/etc/pam.d") / name
    path.write_text(f"auth required pam_exec.so expose_authtok quiet {check}\n"
                    "account required pam_permit.so\n")
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.directive("plugin")
def test_pam_plugin_line_checks_passwords_through_pam(
        lab: NetnsLab, tmp_path: Path, pam_service: str) -> None:
    server, (good_ns, bad_ns) = _setup(lab, tmp_path, [
        "plugin /usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-auth-pam.so "
        + pam_service, "duplicate-cn"], clients=2)
    good = _client(good_ns, tmp_path, "good", 0,
                   [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    bad = _client(bad_ns, tmp_path, "bad", 1,
                  [f"auth-user-pass {_creds(tmp_path, 'bad', 'alice', 'guess')}"])
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert bad.wait_for("AUTH_FAILED", timeout=20), bad.text()[-2000:]
    assert "Initialization Sequence Completed" not in bad.text()
    assert _calls(tmp_path).count(f"pam alice {pam_service}") == 2
    assert server.wait_event("auth_user_pass_ok", 1, how="pam") is not None


@pytest.mark.directive("auth-user-pass-verify", "auth-gen-token")
@pytest.mark.parametrize("token", [False, True])
def test_renegotiation_checks_the_credentials_again_or_the_token(
        lab: NetnsLab, tmp_path: Path, token: bool) -> None:
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server, (ns,) = _setup(lab, tmp_path, [
        "script-security 2", f"auth-user-pass-verify {script} via-file", "reneg-sec 3",
        # renewal at least twice hand-window, as OpenVPN requires (not reneg-sec 3's 3 s)
        *(["auth-gen-token 0 120"] if token else [])])
    client = _client(ns, tmp_path, "good", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    reauth = server.wait_event("auth_user_pass_ok", 15, key_id=1)
    assert reauth is not None, server.text()[-3000:]
    if token:  # the client sent the token, not its password: the script is not asked again
        assert reauth["how"] == "auth_token"
        assert server.wait_event("auth_user_pass_ok", 15, key_id=2, how="auth_token")
        assert _calls(tmp_path) == ["alice user-pass-verify client1"]
    else:  # OpenVPN runs the script at every key
        assert reauth["how"] == "script_accepted"
        assert _calls(tmp_path) == ["alice user-pass-verify client1"] * 2
    assert ping(ns, SERVER_VPN_IP)
    assert "AUTH_FAILED" not in client.text()


@pytest.mark.directive("username-as-common-name", "auth-user-pass-optional",
                       "auth-user-pass-verify")
@pytest.mark.parametrize(("role", "line", "theirs", "ours"), [
    ("server", "username-as-common-name",
     "--username-as-common-name must be used with --management-client-auth, an "
     "--auth-user-pass-verify script, or plugin", "must be used with"),
    ("server", "auth-user-pass-optional",
     "--auth-user-pass-optional must be used with --management-client-auth, an "
     "--auth-user-pass-verify script, or plugin", "must be used with"),
    ("client", "username-as-common-name", "--username-as-common-name requires --mode server",
     "requires 'mode server'"),
    ("client", "auth-user-pass-verify /bin/true via-env",
     "--auth-user-pass-verify requires --mode server", "requires 'mode server'"),
])
def test_server_auth_refusals_match_openvpn(lab: NetnsLab, openvpn_binary: None,
                                            tmp_path: Path, role: str, line: str, theirs: str,
                                            ours: str) -> None:
    write_pki(tmp_path)
    base = claims.SERVER if role == "server" else claims.CLIENT
    out = openvpn_output(lab, tmp_path, [*base, *(f"--{line}".split())])
    assert f"Options error: {theirs}" in out, out[-3000:]
    conf = tmp_path / "t.conf"
    conf.write_text(as_config(base) + line + "\n")
    with pytest.raises(ConfigError, match=ours):
        load_config(conf)


def test_openvpn_refuses_the_client_when_script_security_forbids_the_script(
        lab: NetnsLab, tmp_path: Path) -> None:
    """trivpn/runtime/serverauth.py: with script-security 1 OpenVPN does not run the script
    ("External program may not be called unless '--script-security 2' or higher") and refuses
    the client; trivpn does the same."""
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        f"auth-user-pass-verify {script} via-file"]))
    assert server.wait_for("Initialization Sequence Completed", timeout=10), server.text()
    client = _client(ns, tmp_path, "good", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'good', 'alice', 's3cret')}"])
    assert client.wait_for("AUTH_FAILED", timeout=20), client.text()[-2000:]
    assert ("External program may not be called unless '--script-security 2' or higher"
            in server.text())
    assert _calls(tmp_path) == []


def test_openvpn_server_gives_no_common_name_for_a_client_without_certificate(
        lab: NetnsLab, tmp_path: Path) -> None:
    """trivpn/protocol/userauth.py script_common_name(): the script of a real openvpn server
    gets no common_name for a client without certificate (verify-client-cert none)."""
    srv = lab.add("srv")
    ns = lab.add("c")
    lab.veth(srv, ns, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    script = _script(tmp_path, VIA_FILE_SCRIPT)
    server = start_openvpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0", extra=[
        "script-security 2", f"auth-user-pass-verify {script} via-file",
        "verify-client-cert none", "username-as-common-name"]))
    assert server.wait_for("Initialization Sequence Completed", timeout=10), server.text()
    client = _client(ns, tmp_path, "nocert", 0,
                     [f"auth-user-pass {_creds(tmp_path, 'nocert', 'alice', 's3cret')}"],
                     cert=False)
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert _calls(tmp_path) == ["alice user-pass-verify "]  # no common_name at all
