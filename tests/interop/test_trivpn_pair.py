"""A trivpn client against a trivpn server (both ``trivpn run`` subprocesses).

Namespaces: ``srv`` (198.18.0.1) and ``cli`` (198.18.0.2). A covering matrix over transport,
cipher, control wrapping and topology: the tunnel comes up, ping crosses both ways and 10 MB of
TCP cross intact (SHA-256 compared). Also renegotiation every few seconds under traffic.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines, transfer
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
TEN_MB = 10 * 1024 * 1024




def _pair(lab: NetnsLab, tmp_path: Path, server: list[str],
          client: list[str]) -> tuple[Netns, Netns, TrivpnProcess, TrivpnProcess, str]:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server_proc = start_trivpn(srv, tmp_path, "server", server)
    assert server_proc.wait_event("link_open", timeout=10), server_proc.text()
    client_proc = start_trivpn(cli, tmp_path, "client", client)
    assert client_proc.wait_event("tun_configured", timeout=20), \
        (client_proc.text()[-3000:], server_proc.text()[-3000:])
    connected = server_proc.wait_event("peer_connected", timeout=5, cn="client1")
    assert connected is not None, server_proc.text()[-3000:]
    return srv, cli, server_proc, client_proc, connected["vpn_ip"]


@pytest.mark.directive("client", "server", "proto", "topology", "data-ciphers", "tls-auth",
                       "tls-crypt")
@pytest.mark.parametrize(("proto", "topology", "cipher", "wrap"), [
    ("udp", "subnet", "AES-256-GCM", "tls-crypt"),
    ("udp", "net30", "CHACHA20-POLY1305", "tls-auth"),
    ("tcp-server", "subnet", "CHACHA20-POLY1305", "tls-crypt"),
    ("tcp-server", "net30", "AES-256-GCM", "tls-auth"),
])
def test_trivpn_client_and_server_carry_ping_and_10mb_intact(
        lab: NetnsLab, tmp_path: Path, proto: str, topology: str, cipher: str, wrap: str):
    srv, cli, server, client, vpn_ip = _pair(
        lab, tmp_path,
        server_lines(link_ip=SERVER_IP, proto=proto, topology=topology, cipher=cipher,
                     wrap=wrap),
        client_lines(server_ip=SERVER_IP, proto=proto, wrap=wrap))
    key_complete = client.wait_event("key_method_complete", timeout=5)
    assert key_complete is not None and key_complete.get("cipher") == cipher, client.text()
    assert ping(cli, SERVER_VPN_IP), (client.text()[-2000:], server.text()[-2000:])
    assert ping(srv, vpn_ip), server.text()[-2000:]
    sent, received = transfer(srv, SERVER_VPN_IP, cli, TEN_MB)
    assert sent == received and received.endswith(f" {TEN_MB}"), server.text()[-3000:]


def test_renegotiation_every_few_seconds_keeps_the_tunnel_up_under_traffic(
        lab: NetnsLab, tmp_path: Path):
    srv, cli, server, client, _ = _pair(
        lab, tmp_path,
        server_lines(link_ip=SERVER_IP, wrap="tls-crypt"),
        client_lines(server_ip=SERVER_IP, wrap="tls-crypt", extra=["reneg-sec 2"]))
    deadline = time.monotonic() + 8.0
    rounds = 0
    while time.monotonic() < deadline:  # traffic keeps flowing across the renegotiations
        sent, received = transfer(srv, SERVER_VPN_IP, cli, 1024 * 1024, port=5300 + rounds)
        assert sent == received, (client.text()[-3000:], server.text()[-3000:])
        assert ping(cli, SERVER_VPN_IP, count=1), client.text()[-3000:]
        rounds += 1
    assert client.count("renegotiated") >= 2, client.text()[-3000:]
    assert client.count("reconnecting") == 0
