"""peer-fingerprint (PKI-less setups) against the real openvpn 2.6 in both roles: self-signed
certificates, no ``ca``, each side pinning the other's SHA-256 fingerprint; a wrong fingerprint
is refused."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop import clientkit
from tests.interop.openvpn import start_openvpn
from tests.interop.serverkit import SERVER_VPN_IP, ping
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def self_signed(directory: Path, name: str) -> str:
    """Write ``name``.crt / ``name``.key (self-signed, as the 2.6 man page's openssl example
    makes them); return the certificate's fingerprint ``AB:CD:...``."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return ":".join(f"{b:02X}" for b in digest)


def _server_lines(link_ip: str, pinned: list[str]) -> list[str]:
    return ["dev tun", "proto udp", f"local {link_ip}", "port 1194", "cert server.crt",
            "key server.key", "dh none", "server 198.18.8.0 255.255.255.0", "topology subnet",
            "keepalive 1 10", "verb 4", "<peer-fingerprint>", "# pinned clients", *pinned,
            "</peer-fingerprint>"]


def _client_lines(server_ip: str, pinned: str) -> list[str]:
    return ["client", "dev tun", "proto udp", f"remote {server_ip} 1194", "nobind",
            "cert client.crt", "key client.key", "connect-retry 1", "verb 3",
            f"peer-fingerprint {pinned}"]


@pytest.mark.directive("peer-fingerprint")
def test_trivpn_client_pins_an_openvpn_server_and_is_pinned_by_it(
        lab: NetnsLab, tmp_path: Path) -> None:
    s = clientkit.make_setup(lab, tmp_path)
    server_fp, client_fp = self_signed(tmp_path, "server"), self_signed(tmp_path, "client")
    other_fp = self_signed(tmp_path, "other")
    clientkit.start_server(s, _server_lines(clientkit.SERVER_IP, [other_fp, client_fp]))
    client = clientkit.start_client(s, _client_lines(clientkit.SERVER_IP, server_fp))
    clientkit.wait_up(client)
    clientkit.ping_ok(s.client_ns, clientkit.VPN_SERVER)


@pytest.mark.directive("peer-fingerprint")
def test_trivpn_client_refuses_a_server_with_another_fingerprint(
        lab: NetnsLab, tmp_path: Path) -> None:
    s = clientkit.make_setup(lab, tmp_path)
    client_fp = self_signed(tmp_path, "client")
    self_signed(tmp_path, "server")
    other_fp = self_signed(tmp_path, "other")
    clientkit.start_server(s, _server_lines(clientkit.SERVER_IP, [client_fp]))
    client = clientkit.start_client(s, _client_lines(clientkit.SERVER_IP, other_fp))
    rejected = client.wait_event("peer_cert_rejected", timeout=15)
    assert rejected is not None and rejected["check"] == "peer_fingerprint", client.text()
    assert client.count("tun_configured") == 0


@pytest.mark.directive("peer-fingerprint")
def test_openvpn_client_pins_a_trivpn_server_and_only_pinned_clients_connect(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv = lab.add("srv")
    spokes = [lab.add("c") for _ in range(2)]
    for i, ns in enumerate(spokes):
        lab.veth(srv, ns, f"198.18.{10 + i}.1/24", f"198.18.{10 + i}.2/24")
    server_fp, client_fp = self_signed(tmp_path, "server"), self_signed(tmp_path, "client")
    self_signed(tmp_path, "stranger")
    server = start_trivpn(srv, tmp_path, "server", _server_lines("0.0.0.0", [client_fp]))
    assert server.wait_event("link_open", timeout=10), server.text()
    good = start_openvpn(spokes[0], tmp_path, "good", _client_lines("198.18.10.1", server_fp))
    bad = start_openvpn(spokes[1], tmp_path, "bad", [
        *_client_lines("198.18.11.1", server_fp)[:5], "cert stranger.crt", "key stranger.key",
        *_client_lines("198.18.11.1", server_fp)[7:]])
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    assert ping(spokes[0], SERVER_VPN_IP)
    rejected = server.wait_event("peer_cert_rejected", timeout=15)
    assert rejected is not None and rejected["check"] == "peer_fingerprint", server.text()
    assert not bad.wait_for("Initialization Sequence Completed", timeout=1)
    assert server.count("peer_connected") == 1
