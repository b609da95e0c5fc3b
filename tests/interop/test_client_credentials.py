"""Credentials against a real openvpn 2.6 server whose auth-user-pass-verify script accepts
one user and rejects another, issues a CRV1 dynamic challenge after a correct SCRV1 static
challenge answer, or whose auth-gen-token tokens the client must use; an encrypted key with
askpass. The management interface (hold, password queries) is driven over its unix socket, as
a GUI does."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
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
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SCRV1 = f"SCRV1:{_b64('right')}:{_b64('1234')}"
CHALLENGE = f"CRV1:R,E:sid1:{_b64('alice')}:Enter PIN"


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    setup = make_setup(lab, tmp_path)
    script = tmp_path / "verify.sh"
    script.write_text(f"""#!/bin/sh
u=$(sed -n 1p "$1"); p=$(sed -n 2p "$1")
echo "$u $p" >> {tmp_path}/verify.log
case "$u:$p" in
  alice:right) exit 0;;
  alice:{SCRV1}) printf '%s' '{CHALLENGE}' > "$auth_failed_reason_file"; exit 1;;
  alice:CRV1::sid1::4242) exit 0;;
esac
exit 1
""")
    script.chmod(0o755)
    return setup


def _server(setup: Setup, *extra: str) -> None:
    start_server(setup, server_lines(extra=(
        "script-security 2", f"auth-user-pass-verify {setup.workdir}/verify.sh via-file",
        "duplicate-cn", *extra)))


def _verified(setup: Setup) -> list[str]:
    log = setup.workdir / "verify.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.directive("auth-user-pass", "auth-retry")
def test_verify_script_accepts_alice_and_rejects_bob_who_exits_with_auth_failed(
        setup: Setup) -> None:
    _server(setup)
    (setup.workdir / "alice.txt").write_text("alice\nright\n")
    (setup.workdir / "bob.txt").write_text("bob\nright\n")
    alice = start_client(setup, [*client_lines(), "auth-user-pass alice.txt"], "alice")
    assert alice.wait_event("tun_configured", 20) is not None, alice.text()[-3000:]
    ping_ok(setup.client_ns, VPN_SERVER)
    bob = start_client(setup, [*client_lines(), "auth-user-pass bob.txt"], "bob")
    assert popen_of(setup.lab, bob.pid).wait(20) == 1
    failed = bob.wait_event("auth_failed", 1)
    assert failed is not None and failed["action"] == "exit"
    assert "right" not in alice.text() + bob.text()


@pytest.mark.directive("auth-retry")
def test_auth_retry_nointeract_retries_the_same_credentials(setup: Setup) -> None:
    _server(setup)
    (setup.workdir / "bob.txt").write_text("bob\nnope\n")
    bob = start_client(setup, [*client_lines(), "auth-user-pass bob.txt",
                               "auth-retry nointeract", "connect-retry 1 1"], "bob")
    assert wait_until(lambda: _verified(setup).count("bob nope") >= 2, 20), bob.text()[-3000:]
    assert popen_of(setup.lab, bob.pid).poll() is None


@pytest.mark.directive("auth-token", "auth-token-user")
def test_token_from_auth_gen_token_is_sent_when_renegotiating(setup: Setup) -> None:
    _server(setup, "auth-gen-token 0")
    (setup.workdir / "alice.txt").write_text("alice\nright\n")
    alice = start_client(setup, [*client_lines(), "auth-user-pass alice.txt", "auth-nocache",
                                 "reneg-sec 2"], "alice")
    assert alice.wait_event("tun_configured", 20) is not None, alice.text()[-3000:]
    assert alice.wait_event("auth_token_received", 1) is not None
    assert alice.wait_event("renegotiated", 10) is not None, alice.text()[-3000:]
    ping_ok(setup.client_ns, VPN_SERVER)
    # the script saw the password once; the renegotiation authenticated with the token
    # (OpenVPN: a valid auth-gen-token skips the script)
    # (without the token the server would run the script again with "right")
    assert _verified(setup) == ["alice right"]


class _Management:
    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(20)
        self.buffer = b""

    def expect(self, prefix: str) -> str:
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                assert chunk, f"management closed waiting for {prefix!r}"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = raw.decode()
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")


@pytest.mark.directive("management-hold", "management-query-passwords", "static-challenge",
                       "auth-retry")
def test_gui_flow_hold_static_then_dynamic_challenge_through_management(
        setup: Setup) -> None:
    _server(setup)
    mgmt = setup.workdir / "mgmt.sock"
    client = start_client(setup, [
        *client_lines(), f"management {mgmt} unix", "management-hold",
        "management-query-passwords", "auth-user-pass", "auth-retry interact",
        'static-challenge "Your OTP" 1'])
    gui = _Management(mgmt)
    gui.expect(">HOLD:Waiting for hold release:0")
    gui.send("hold release")
    gui.expect("SUCCESS: hold release succeeded")
    gui.expect(">PASSWORD:Need 'Auth' username/password SC:1,Your OTP")
    gui.send('username "Auth" alice')
    gui.expect("SUCCESS: 'Auth' username entered")
    gui.send(f'password "Auth" "{SCRV1}"')
    gui.expect("SUCCESS: 'Auth' password entered")
    failed = gui.expect(">PASSWORD:Verification Failed")
    assert failed == f">PASSWORD:Verification Failed: 'Auth' ['{CHALLENGE}']"
    gui.expect(">HOLD:Waiting for hold release:")  # each restart waits again
    gui.send("hold release")
    gui.expect(">PASSWORD:Need 'Auth' username/password")
    gui.send("username Auth alice")
    gui.send("password Auth CRV1::sid1::4242")
    assert client.wait_event("tun_configured", 20) is not None, client.text()[-3000:]
    assert _verified(setup) == [f"alice {SCRV1}", "alice CRV1::sid1::4242"]
    gui.sock.close()


@pytest.mark.directive("askpass")
def test_encrypted_private_key_with_askpass_file_connects(setup: Setup) -> None:
    _server(setup)
    subprocess.run(["openssl", "pkey", "-in", str(setup.workdir / "client.key"), "-aes256",
                    "-passout", "pass:kpw-1", "-out", str(setup.workdir / "enc.key")],
                   check=True)
    assert "ENCRYPTED" in (setup.workdir / "enc.key").read_text()
    (setup.workdir / "kp.txt").write_text("kpw-1\n")
    (setup.workdir / "alice.txt").write_text("alice\nright\n")
    lines = [line for line in client_lines() if line != "key client.key"]
    good = start_client(setup, [*lines, "key enc.key", "askpass kp.txt",
                                "auth-user-pass alice.txt"], "good")
    assert good.wait_event("tun_configured", 20) is not None, good.text()[-3000:]
    (setup.workdir / "bad.txt").write_text("wrong\n")
    bad = start_client(setup, [*lines, "key enc.key", "askpass bad.txt",
                               "auth-user-pass alice.txt"], "bad")
    assert popen_of(setup.lab, bad.pid).wait(20) == 2
    assert "wrong password" in bad.text()
    assert "kpw-1" not in good.text() + bad.text()
