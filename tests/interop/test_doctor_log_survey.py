"""``trivpn doctor --log`` on the error lines users meet most, each made for real by the
``openvpn`` 2.6 binary: the fault is created (a SHA-1-signed certificate, a pushed option the
client does not know, a route that already exists...), openvpn writes its log, and
``doctor --log`` must name the cause with the right explanation and fix.

Lines that cannot be produced here are covered by tests/diagnostics/test_logscan_survey.py with
the place in OpenVPN's source that prints them.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.interop.tunnelkit import Tunnel, client_config, make_tunnel
from tests.netns import NetnsLab
from trivpn.pki.crl import build_crl, crl_pem

pytestmark = pytest.mark.integration


def doctor_log(log: Path) -> dict[str, dict[str, Any]]:
    """``trivpn doctor --log LOG --json``: the results by id."""
    done = subprocess.run([sys.executable, "-m", "trivpn", "doctor", "--log", str(log),
                           "--json"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode in (0, 1), done.stderr
    return {c["id"]: c for c in json.loads(done.stdout)["checks"]}


def wait_for(proc: OpenVpnProcess, needle: str, timeout: float = 10.0) -> None:
    assert proc.wait_for(needle, timeout), proc.text()


# --- startup failures: no network needed --------------------------------------------------


def run_openvpn_once(workdir: Path, *args: str, stdin: Any = subprocess.DEVNULL) -> Path:
    """Run openvpn with ``args`` until it exits (each case fails at start-up, before sending
    anything); its whole output is the log."""
    log = workdir / "openvpn.log"
    with log.open("w") as out:
        subprocess.run(["openvpn", "--cd", str(workdir), *args], stdin=stdin, stdout=out,
                       stderr=subprocess.STDOUT, timeout=15, check=False,
                       start_new_session=True)  # no controlling terminal
    return log


def openssl(workdir: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True,
                   timeout=30)


@pytest.fixture
def weak_pki(tmp_path: Path, openvpn_binary: None) -> Path:
    """A CA, a client certificate signed with SHA-1 and one with a 1024-bit RSA key."""
    openssl(tmp_path, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-subj", "/CN=weak test CA", "-days", "30", "-sha256")
    for name, bits, digest in (("sha1", "2048", "-sha1"), ("small", "1024", "-sha256")):
        openssl(tmp_path, "req", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(tmp_path, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey",
                "ca.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "30", digest)
    return tmp_path


def client_args(cert: str, *extra: str) -> list[str]:
    # 127.0.0.1 port 1: nothing is ever sent, every case stops before connecting
    return ["--client", "--dev", "null", "--proto", "udp", "--remote", "127.0.0.1", "1",
            "--nobind", "--ca", "ca.crt", "--cert", f"{cert}.crt", "--key", f"{cert}.key",
            "--verb", "3", *extra]


def test_a_sha1_signed_certificate_is_ca_md_too_weak(weak_pki: Path) -> None:
    log = run_openvpn_once(weak_pki, *client_args("sha1"))
    assert "ca md too weak" in log.read_text()
    result = doctor_log(log)["log.weak_certificate"]
    assert result["status"] == "fail"
    assert "signature digest is too weak" in result["summary"]
    assert "SHA-1" in result["explanation"] and "SHA-256" in result["fix"]


def test_a_1024_bit_key_under_tls_cert_profile_preferred_is_ee_key_too_small(
        weak_pki: Path) -> None:
    log = run_openvpn_once(weak_pki, *client_args("small", "--tls-cert-profile", "preferred"))
    assert "ee key too small" in log.read_text()
    result = doctor_log(log)["log.weak_certificate"]
    assert "key is too small" in result["summary"]
    assert "2048" in result["fix"]


def test_an_option_removed_in_2_6_is_an_unknown_option_with_its_line(
        weak_pki: Path) -> None:
    conf = weak_pki / "old.conf"
    conf.write_text("client\ndev null\nremote 127.0.0.1 1\nca ca.crt\nkeysize 256\n")
    log = run_openvpn_once(weak_pki, "--config", "old.conf")
    assert "Unrecognized option" in log.read_text()
    result = doctor_log(log)["log.unknown_option"]
    assert result["summary"] == "unknown option 'keysize' in old.conf line 5 (1 line, first " \
                                "at line 1)"
    assert "removed in 2.6" in result["explanation"]
    assert "line 5 of old.conf" in result["fix"]


def test_a_prompt_without_a_terminal_says_to_use_a_credentials_file(weak_pki: Path) -> None:
    log = run_openvpn_once(weak_pki, *client_args("sha1", "--tls-cert-profile", "insecure",
                                                  "--auth-user-pass"))
    assert "neither stdin nor stderr are a tty" in log.read_text()
    result = doctor_log(log)["log.no_tty"]
    assert "Enter Auth Username:" in result["summary"]
    assert "'auth-user-pass FILE'" in result["fix"]


# --- faults between a real server and a real client ---------------------------------------


@pytest.fixture
def tunnel(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Iterator[Tunnel]:
    yield make_tunnel(lab, tmp_path)


def start_client(t: Tunnel, *extra: str, name: str = "client") -> OpenVpnProcess:
    lines = [line for line in client_config(*extra) if not line.startswith("management ")]
    return start_openvpn(t.client_ns, t.workdir, name, lines)


def test_tls_versions_that_do_not_overlap_are_named(tunnel: Tunnel) -> None:
    server = tunnel.start_server("tls-version-max 1.2")
    start_client(tunnel, "tls-version-min 1.3")
    wait_for(server, "unsupported protocol")
    result = doctor_log(server.log)["log.tls_version_mismatch"]
    assert "no TLS version in common" in result["summary"]
    assert "tls-version-max" in result["fix"]


def test_a_pushed_option_the_client_does_not_know_names_pull_filter(tunnel: Tunnel) -> None:
    tunnel.start_server('push "keysize 256"')
    client = start_client(tunnel)
    wait_for(client, "[PUSH-OPTIONS]")
    result = doctor_log(client.log)["log.unknown_option"]
    assert result["summary"].startswith("the server pushed an option this client does not "
                                        "know: keysize")
    assert "pull-filter ignore \"keysize\"" in result["fix"]


def test_lzo_on_the_server_only_is_a_compression_mismatch(tunnel: Tunnel) -> None:
    server = tunnel.start_server("comp-lzo yes", "allow-compression yes")
    client = start_client(tunnel)
    wait_for(client, "Initialization Sequence Completed")
    tunnel.client_ns.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.8.1"],
                         check=False, timeout=10)
    wait_for(server, "Bad LZO decompression header byte", 5)
    result = doctor_log(server.log)["log.lzo_mismatch"]
    assert "no traffic" in result["explanation"]
    assert "comp-lzo" in result["fix"]


def test_a_client_sending_from_an_address_without_iroute_is_a_bad_source_address(
        tunnel: Tunnel) -> None:
    server = tunnel.start_server("verb 4")  # OpenVPN logs these drops from verb 4
    client = start_client(tunnel)
    wait_for(client, "Initialization Sequence Completed")
    tunnel.client_ns.ip("addr", "add", "198.18.9.5/32", "dev", "tun0")
    tunnel.client_ns.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "198.18.9.5",
                          "198.18.8.1"], check=False, timeout=10)
    wait_for(server, "MULTI: bad source address from client [198.18.9.5]", 5)
    result = doctor_log(server.log)["log.bad_source_address"]
    assert "iroute" in result["fix"] and "client-config-dir" in result["fix"]


def test_a_pushed_route_that_already_exists_is_named(tunnel: Tunnel) -> None:
    # the same route in the client's config and in the push: the second add finds the
    # first (the kernel refuses an identical route: same network, gateway and metric)
    tunnel.start_server('push "route 198.18.50.0 255.255.255.0"')
    client = start_client(tunnel, "route 198.18.50.0 255.255.255.0")
    wait_for(client, "Initialization Sequence Completed")
    result = doctor_log(client.log)["log.route_exists"]
    assert "given twice" in result["explanation"]
    assert "ip route" in result["fix"]


def test_a_client_without_credentials_on_a_server_that_requires_them(tunnel: Tunnel) -> None:
    server = tunnel.start_server("script-security 2", "auth-user-pass-verify /bin/true via-file")
    start_client(tunnel)
    wait_for(server, "was not provided by peer")
    result = doctor_log(server.log)["log.no_credentials"]
    assert "'auth-user-pass'" in result["fix"]


def test_a_tcp_server_that_goes_away_is_a_connection_reset(tunnel: Tunnel) -> None:
    tunnel.start_server("proto tcp-server")
    lines = [line.replace("proto udp", "proto tcp-client") for line in client_config()
             if not line.startswith("management ")]
    client = start_openvpn(tunnel.client_ns, tunnel.workdir, "client", lines)
    wait_for(client, "Initialization Sequence Completed")
    tunnel.kill_server()
    wait_for(client, "Connection reset, restarting", 5)
    result = doctor_log(client.log)["log.connection_reset"]
    assert "middlebox" in result["fix"]


def test_an_expired_crl_rejects_every_client(tunnel: Tunnel) -> None:
    now = datetime.datetime.now(datetime.UTC)
    crl = build_crl(tunnel.pki.ca, [], last_update=now - datetime.timedelta(days=200),
                    next_update=now - datetime.timedelta(days=20))
    (tunnel.workdir / "crl.pem").write_bytes(crl_pem(crl))
    server = tunnel.start_server("crl-verify crl.pem")
    start_client(tunnel)
    wait_for(server, "CRL has expired")
    result = doctor_log(server.log)["log.cert_verify_failed"]
    assert "CRL has expired" in result["summary"]
    assert "gen-crl" in result["fix"] and "nextupdate" in result["fix"]


def test_ccd_exclusive_without_a_file_for_the_client_is_not_a_password_problem(
        tunnel: Tunnel) -> None:
    (tunnel.workdir / "ccd").mkdir()
    server = tunnel.start_server("client-config-dir ccd", "ccd-exclusive")
    client = start_client(tunnel)
    wait_for(server, "client-config-dir authentication failed")
    result = doctor_log(server.log)["log.ccd_exclusive"]
    assert result["summary"].startswith("the server refused 'client1'")
    assert "'client1'" in result["fix"] and "ccd-exclusive" in result["fix"]
    wait_for(client, "AUTH_FAILED")  # what the client sees of it
