"""The operator's lifecycle end to end: ``trivpn pki revoke`` against a running server with
``crl-verify`` and real ``openvpn`` 2.6 clients.

Namespaces: ``srv`` (198.18.0.1) runs ``trivpn run`` (or, for comparison, a real openvpn server)
with crl-verify, the management interface and the metrics endpoint on its own loopback; ``cli``
(198.18.0.2) runs openvpn clients alice and bob, with certificates from ``trivpn pki``.

- Revoking alice writes a new crl.pem; her session stays (as on a real openvpn server) until the
  management command ``kill alice`` drops it; her reconnect is refused by crl-verify, while bob
  stays connected. The metrics endpoint exports the certificate and CRL expiry.
- With ``trivpn run --drop-revoked`` the server drops her by itself when crl.pem changes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.interop.openvpn import start_openvpn
from tests.interop.serverkit import SERVER_VPN_IP, TUNNEL_MASK, TUNNEL_NET, ping
from tests.interop.test_operator_tools import (
    Management,
    connect_in,
    scrape,
    start_server_with_metrics,
)
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab
from trivpn.cli import main
from trivpn.pki.certs import load_certificate, load_certificates

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
MGMT_PORT = 7506


def _client_lines(name: str, files: Path) -> list[str]:
    return ["client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
            f"ca {files}/ca.crt", f"cert {files}/{name}.crt", f"key {files}/{name}.key",
            "remote-cert-tls server", "verb 3", "connect-retry 1"]


def _pki_and_laptops(tmp_path: Path) -> tuple[Path, Path, int]:
    """A trivpn PKI with server, alice and bob, its CRL, and copies of what each client
    holds (as on a real laptop: revoking moves the PKI's files away)."""
    pki = tmp_path / "pki"
    assert main(["pki", "init", str(pki)]) == 0
    assert main(["pki", "issue", "server", "server", "--dir", str(pki)]) == 0
    laptops = tmp_path / "laptops"
    laptops.mkdir()
    shutil.copy(pki / "ca.crt", laptops / "ca.crt")
    for name in ("alice", "bob"):
        assert main(["pki", "issue", "client", name, "--dir", str(pki)]) == 0
        shutil.copy(pki / "issued" / f"{name}.crt", laptops / f"{name}.crt")
        shutil.copy(pki / "private" / f"{name}.key", laptops / f"{name}.key")
    assert main(["pki", "crl", "--dir", str(pki)]) == 0
    alice = load_certificate((pki / "issued" / "alice.crt").read_text()).serial_number
    return pki, laptops, alice


def _server_lines(pki: Path) -> list[str]:
    return ["dev tun", "proto udp", f"local {SERVER_IP}", "port 1194", f"ca {pki}/ca.crt",
            f"cert {pki}/issued/server.crt", f"key {pki}/private/server.key", "dh none",
            f"server {TUNNEL_NET} {TUNNEL_MASK}", "topology subnet", "keepalive 2 20",
            "remote-cert-tls client", f"crl-verify {pki}/crl.pem",
            f"management 127.0.0.1 {MGMT_PORT}", "verb 3"]


def _revoke_alice(pki: Path) -> None:
    time.sleep(1.1)  # a new mtime second, whatever the file system's resolution
    assert main(["pki", "revoke", "alice", "--dir", str(pki), "--crl-days", "30"]) == 0


@pytest.mark.directive("crl-verify", "management")
def test_a_revoked_openvpn_client_is_dropped_on_kill_and_cannot_reconnect(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki, laptops, alice_serial = _pki_and_laptops(tmp_path)
    server = start_server_with_metrics(srv, tmp_path, _server_lines(pki))
    assert server.wait_event("metrics_listening", timeout=10), server.text()
    clients = {name: start_openvpn(cli, tmp_path, name, _client_lines(name, laptops))
               for name in ("alice", "bob")}
    for client in clients.values():
        assert client.wait_for("Initialization Sequence Completed", timeout=20), \
            server.text()[-3000:]

    # the expiry gauges: the server's own certificate, the CA, the CRL
    samples = scrape(srv)
    cert = load_certificate((pki / "issued" / "server.crt").read_text())
    ca = load_certificates((pki / "ca.crt").read_text())[0]
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert crl.next_update_utc is not None
    assert samples['trivpn_certificate_expiry_timestamp_seconds{certificate="cert"}'] == \
        cert.not_valid_after_utc.timestamp()
    assert samples['trivpn_certificate_expiry_timestamp_seconds{certificate="ca"}'] == \
        ca.not_valid_after_utc.timestamp()
    assert samples["trivpn_crl_next_update_timestamp_seconds"] == \
        crl.next_update_utc.timestamp()

    # revoke alice: a new CRL on disk; her session stays until the operator drops it
    _revoke_alice(pki)
    assert server.wait_event("peer_disconnected", cn="alice", timeout=3) is None
    m = Management(connect_in(srv, MGMT_PORT))
    assert m.line().startswith(">INFO:OpenVPN Management Interface")
    m.command("kill alice")
    assert m.line() == "SUCCESS: common name 'alice' found, 1 client(s) killed"
    m.command("quit")
    assert server.wait_event("peer_disconnected", cn="alice", reason="killed", timeout=5), \
        server.text()[-3000:]
    # her openvpn restarts and reconnects at once; crl-verify refuses the handshake
    rejected = server.wait_event("peer_cert_rejected", cn="alice", timeout=15)
    assert rejected is not None, server.text()[-3000:]
    assert (rejected["check"], rejected["serial"]) == ("crl_verify", str(alice_serial))
    time.sleep(3)
    assert sum(1 for e in server.events() if e.get("event") == "peer_connected"
               and e.get("cn") == "alice") == 1
    # bob is untouched, and the CRL gauge follows the new file
    assert ping(cli, SERVER_VPN_IP)
    new_crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert new_crl.next_update_utc is not None
    assert scrape(srv)["trivpn_crl_next_update_timestamp_seconds"] == \
        new_crl.next_update_utc.timestamp()
    assert server.wait_event("peer_disconnected", cn="bob", timeout=0.1) is None


@pytest.mark.directive("crl-verify")
def test_drop_revoked_disconnects_a_connected_client_when_the_crl_changes(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki, laptops, alice_serial = _pki_and_laptops(tmp_path)
    server = _start_trivpn_dropping_revoked(srv, tmp_path, _server_lines(pki))
    assert server.wait_event("link_open", timeout=10), server.text()
    clients = {name: start_openvpn(cli, tmp_path, name, _client_lines(name, laptops))
               for name in ("alice", "bob")}
    for client in clients.values():
        assert client.wait_for("Initialization Sequence Completed", timeout=20), \
            server.text()[-3000:]
    _revoke_alice(pki)
    dropped = server.wait_event("peer_revoked", cn="alice", timeout=5)
    assert dropped is not None, server.text()[-3000:]
    assert dropped["serial"] == str(alice_serial)
    assert server.wait_event("peer_disconnected", cn="alice", reason="revoked", timeout=5), \
        server.text()[-3000:]
    assert clients["alice"].wait_for("SIGUSR1", timeout=10), clients["alice"].text()[-2000:]
    rejected = server.wait_event("peer_cert_rejected", cn="alice", timeout=15)
    assert rejected is not None and rejected["check"] == "crl_verify", server.text()[-3000:]
    assert ping(cli, SERVER_VPN_IP)
    assert server.wait_event("peer_revoked", cn="bob", timeout=0.1) is None
    assert server.wait_event("peer_disconnected", cn="bob", timeout=0.1) is None


def _start_trivpn_dropping_revoked(ns: Netns, workdir: Path, lines: list[str]) -> TrivpnProcess:
    conf = workdir / "server.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "server.log"
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     "--log-file", str(log), "--drop-revoked"])
    return TrivpnProcess(log, proc.pid)


@pytest.mark.directive("crl-verify")
def test_a_real_openvpn_server_keeps_a_revoked_client_until_it_reconnects(
        lab: NetnsLab, tmp_path: Path):
    """What the docs say OpenVPN does, and that it takes trivpn's crl.pem."""
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki, laptops, _ = _pki_and_laptops(tmp_path)
    server = start_openvpn(srv, tmp_path, "server", _server_lines(pki))
    clients = {name: start_openvpn(cli, tmp_path, name, _client_lines(name, laptops))
               for name in ("alice", "bob")}
    for client in clients.values():
        assert client.wait_for("Initialization Sequence Completed", timeout=20), \
            server.text()[-3000:]
    _revoke_alice(pki)
    time.sleep(3)
    m = Management(connect_in(srv, MGMT_PORT))
    assert m.line().startswith(">INFO:OpenVPN Management Interface")
    m.command("status 2")
    assert any(line.startswith("CLIENT_LIST,alice,") for line in m.until_end())
    m.command("quit")
    assert "SIGUSR1" not in clients["alice"].text()
    os.kill(clients["alice"].pid, signal.SIGUSR1)  # her laptop reconnects
    assert server.wait_for("certificate revoked", timeout=15), server.text()[-3000:]
    time.sleep(2)
    assert clients["alice"].text().count("Initialization Sequence Completed") == 1
    assert ping(cli, SERVER_VPN_IP)
