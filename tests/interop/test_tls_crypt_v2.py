"""tls-crypt-v2 against the real openvpn 2.6, both roles: keys made by one are used by the
other, the HMAC-cookie path with the client resending its wrapped key (P_CONTROL_WKC_V1), a
client whose key another server key wrapped is dropped and counted, and tls-crypt-v2-verify
refusing a client by its key's metadata."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop import clientkit
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.10.1"


def _trivpn_genkey(workdir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "trivpn", "pki", "genkey", *args], cwd=workdir,
                   check=True, capture_output=True)


def _openvpn(workdir: Path, *args: str) -> None:
    subprocess.run(["openvpn", *args], cwd=workdir, check=True, capture_output=True)


def _drop_reasons(server: TrivpnProcess) -> dict[str, int]:
    return {e["reason"]: e["total"] for e in server.events()
            if e.get("event") == "packet_dropped"}


def _wait(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.directive("tls-crypt-v2")
def test_trivpn_client_with_an_openvpn_made_key_connects_to_an_openvpn_server(
        lab: NetnsLab, tmp_path: Path) -> None:
    _openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "v2server.key")
    _openvpn(tmp_path, "--tls-crypt-v2", "v2server.key", "--genkey", "tls-crypt-v2-client",
             "v2client.key")
    s = clientkit.make_setup(lab, tmp_path)
    server = clientkit.start_server(s, clientkit.server_lines(
        extra=("tls-crypt-v2 v2server.key",)))
    client = clientkit.start_client(s, clientkit.client_lines(
        extra=("tls-crypt-v2 v2client.key",)))
    clientkit.wait_up(client)
    clientkit.ping_ok(s.client_ns, clientkit.VPN_SERVER)
    text = server.text()
    # the cookie path: openvpn unwraps the key from the v3 reset (stateless reply), from the
    # P_CONTROL_WKC_V1 proving the cookie, and in the new session from that same packet
    assert text.count("Control Channel: using tls-crypt-v2 key") == 3, text[-3000:]
    assert f"{clientkit.CLIENT_IP}:" in text.split("Control Channel: using tls-crypt-v2 key")[
        2].splitlines()[-1]


@pytest.mark.directive("tls-crypt-v2")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_openvpn_client_with_a_trivpn_made_key_connects_to_a_trivpn_server(
        lab: NetnsLab, tmp_path: Path, proto: str) -> None:
    _trivpn_genkey(tmp_path, "tls-crypt-v2-server", "v2server.key")
    _trivpn_genkey(tmp_path, "tls-crypt-v2-client", "v2client.key", "--server-key",
                   "v2server.key")
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.10.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", proto=proto,
        extra=["tls-crypt-v2 v2server.key"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(
        server_ip=SERVER_IP, proto=proto, extra=["tls-crypt-v2 v2client.key", "verb 4"]))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]


@pytest.mark.directive("tls-crypt-v2", "tls-crypt-v2-verify")
def test_trivpn_server_drops_foreign_keys_and_lets_verify_refuse_by_metadata(
        lab: NetnsLab, tmp_path: Path) -> None:
    _trivpn_genkey(tmp_path, "tls-crypt-v2-server", "v2server.key")
    _openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "other.key")
    for name, meta in (("good", b"team=ok"), ("bad", b"team=blocked")):
        _openvpn(tmp_path, "--tls-crypt-v2", "v2server.key", "--genkey",
                 "tls-crypt-v2-client", f"{name}.key", base64.b64encode(meta).decode())
    _openvpn(tmp_path, "--tls-crypt-v2", "other.key", "--genkey", "tls-crypt-v2-client",
             "foreign.key")
    verify = tmp_path / "verify.sh"
    verify.write_text('#!/bin/sh\n'
                      '[ "$script_type" = tls-crypt-v2-verify ] || exit 1\n'
                      '[ "$metadata_type" = 0 ] || exit 1\n'
                      'read -r line < "$metadata_file"\n'
                      'echo "$line" >> "${0%/*}/seen.txt"\n'
                      '[ "$line" = team=ok ]\n')
    verify.chmod(0o755)
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(3)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", extra=["tls-crypt-v2 v2server.key", "script-security 2",
                                  f"tls-crypt-v2-verify {verify}"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    clients = [start_openvpn(ns, tmp_path, name, client_lines(
        server_ip=f"198.18.{10 + i}.1", extra=[f"tls-crypt-v2 {name}.key"]))
        for i, (ns, name) in enumerate(zip(spokes, ("good", "bad", "foreign"), strict=True))]
    assert clients[0].wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert ping(spokes[0], SERVER_VPN_IP)
    assert _wait(lambda: "bad_client_key" in _drop_reasons(server), 10), \
        server.text()[-3000:]
    assert server.count("peer_connected") == 1, server.text()[-3000:]
    assert not clients[1].wait_for("Initialization Sequence Completed", timeout=1)
    assert not clients[2].wait_for("Initialization Sequence Completed", timeout=1)
    seen = (tmp_path / "seen.txt").read_text().split()
    assert "team=ok" in seen and "team=blocked" in seen
    verdicts = {e["accepted"] for e in server.events() if e.get("event") == "tls_crypt_v2_verify"}
    assert verdicts == {True, False}


@pytest.mark.directive("tls-crypt-v2-verify")
def test_openvpn_runs_verify_with_the_same_three_variables_trivpn_sets(
        lab: NetnsLab, tmp_path: Path) -> None:
    """What trivpn's tls-crypt-v2-verify mirrors, checked on the real openvpn server."""
    _openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "v2server.key")
    _openvpn(tmp_path, "--tls-crypt-v2", "v2server.key", "--genkey", "tls-crypt-v2-client",
             "v2client.key", base64.b64encode(b"team=ok").decode())
    dump = tmp_path / "dump.sh"
    dump.write_text('#!/bin/sh\nenv > "${0%/*}/env.txt"\ncat "$metadata_file" > '
                    '"${0%/*}/metadata.txt"\n')
    dump.chmod(0o755)
    s = clientkit.make_setup(lab, tmp_path)
    clientkit.start_server(s, clientkit.server_lines(extra=(
        "tls-crypt-v2 v2server.key", "script-security 2", f"tls-crypt-v2-verify {dump}")))
    client = clientkit.start_client(s, clientkit.client_lines(
        extra=("tls-crypt-v2 v2client.key",)))
    clientkit.wait_up(client)
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines()
               if "=" in line)
    assert env["script_type"] == "tls-crypt-v2-verify" and env["metadata_type"] == "0"
    assert env["metadata_file"].startswith("/tmp/")  # removed after the command ran
    assert not Path(env["metadata_file"]).exists()
    assert {k for k in env if k not in ("PWD", "SHLVL", "_")} == {
        "script_type", "metadata_type", "metadata_file"}
    assert (tmp_path / "metadata.txt").read_bytes() == b"team=ok"


def test_openvpn_26_does_not_know_tls_crypt_v2_max_age() -> None:
    """trivpn implements it as OpenVPN 2.7 does (tls_crypt.c); 2.6 refuses the option."""
    result = subprocess.run(["openvpn", "--tls-crypt-v2-max-age", "1", "--version"],
                            check=False, capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "Unrecognized option" in result.stdout + result.stderr


@pytest.mark.directive("tls-crypt-v2-verify")
def test_tcp_server_runs_verify_before_admitting_a_client(
        lab: NetnsLab, tmp_path: Path) -> None:
    _trivpn_genkey(tmp_path, "tls-crypt-v2-server", "v2server.key")
    for name, meta in (("good", "dGVhbT1vaw=="), ("bad", "dGVhbT1ubw==")):  # team=ok / team=no
        _trivpn_genkey(tmp_path, "tls-crypt-v2-client", f"{name}.key", "--server-key",
                       "v2server.key", "--metadata", meta)
    verify = tmp_path / "verify.sh"
    verify.write_text('#!/bin/sh\nread -r line < "$metadata_file"\n[ "$line" = team=ok ]\n')
    verify.chmod(0o755)
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(2)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", proto="tcp", extra=["tls-crypt-v2 v2server.key",
                                               "script-security 2",
                                               f"tls-crypt-v2-verify {verify}"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    good, bad = (start_openvpn(ns, tmp_path, name, client_lines(
        server_ip=f"198.18.{10 + i}.1", proto="tcp", extra=[f"tls-crypt-v2 {name}.key"]))
        for i, (ns, name) in enumerate(zip(spokes, ("good", "bad"), strict=True)))
    assert good.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert _wait(lambda: "tls_crypt_v2_verify_refused" in _drop_reasons(server), 15), \
        server.text()[-3000:]
    assert not bad.wait_for("Initialization Sequence Completed", timeout=1)
    assert server.count("peer_connected") == 1
