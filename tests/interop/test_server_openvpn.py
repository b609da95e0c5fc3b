"""Real ``openvpn`` 2.6 clients against the ``trivpn run`` server.

Namespaces: ``srv`` (198.18.0.1) runs the trivpn server, ``cli`` (198.18.0.2) the openvpn
client. A covering matrix over transport (UDP/TCP), cipher (AES-256-GCM/CHACHA20-POLY1305),
control wrapping (tls-auth/tls-crypt) and topology (net30/subnet): the tunnel comes up, ping
crosses both ways, and 10 MB of TCP cross intact in both directions' worth of checks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import (
    SERVER_VPN_IP,
    client_lines,
    ping,
    server_lines,
    transfer,
)
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
TEN_MB = 10 * 1024 * 1024




@pytest.fixture(scope="session")
def dh_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1024-bit DH parameters, generated once per test session."""
    path = tmp_path_factory.mktemp("dh") / "dh1024.pem"
    subprocess.run(["openssl", "dhparam", "-out", str(path), "1024"], check=True,
                   capture_output=True, timeout=120)
    return path


@pytest.mark.directive("server", "dev", "proto", "local", "port", "topology", "data-ciphers",
                       "tls-auth", "tls-crypt")
@pytest.mark.parametrize("case", [
    ("udp", "subnet", "AES-256-GCM", "tls-auth"),
    ("udp", "net30", "CHACHA20-POLY1305", "tls-crypt"),
    ("tcp-server", "net30", "AES-256-GCM", "tls-crypt"),
    ("tcp-server", "subnet", "CHACHA20-POLY1305", "tls-auth"),
], ids="-".join)
def test_openvpn_client_tunnel_carries_ping_and_10mb_intact(
        lab: NetnsLab, tmp_path: Path, case: tuple[str, str, str, str]):
    proto, topology, cipher, wrap = case
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, proto=proto, topology=topology, cipher=cipher, wrap=wrap))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(
        server_ip=SERVER_IP, proto=proto, wrap=wrap))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5, cn="client1")
    assert connected is not None and connected["cipher"] == cipher, server.text()
    vpn_ip = connected["vpn_ip"]
    assert f"Data Channel: cipher '{cipher}'" in client.text()

    assert ping(cli, SERVER_VPN_IP), (client.text()[-2000:], server.text()[-2000:])
    assert ping(srv, vpn_ip), server.text()[-2000:]
    sent, received = transfer(srv, SERVER_VPN_IP, cli, TEN_MB)
    assert sent == received and received.endswith(f" {TEN_MB}"), server.text()[-3000:]


def test_seed_style_server_conf_runs_unchanged_with_dh_file(
        lab: NetnsLab, tmp_path: Path, dh_file: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    (tmp_path / "dh1024.pem").write_bytes(dh_file.read_bytes())
    server = start_trivpn(srv, tmp_path, "server", [
        "port 1194", "proto udp", "dev tun", "ca ca.crt", "cert server.crt", "key server.key",
        "dh dh1024.pem", "server 198.18.8.0 255.255.255.0", "keepalive 10 120",
        "user nobody", "group nogroup", "persist-key", "persist-tun", "verb 3"])
    assert server.wait_event("privileges_dropped", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5)
    assert connected is not None, server.text()
    assert connected["vpn_ip"] == "198.18.8.6"  # net30, the 2.6 default: first /30 block
    assert ping(cli, SERVER_VPN_IP), server.text()[-2000:]
    assert ping(srv, "198.18.8.6"), server.text()[-2000:]


LAN_NET, LAN_GW, LAN_HOST = "198.18.30.0", "198.18.30.1", "198.18.30.2"


def test_traffic_forwarded_between_openvpn_client_and_a_lan_behind_the_server_is_intact(
        lab: NetnsLab, tmp_path: Path):
    # Packets from the client reach the server's TUN as coalesced super-packets; forwarded
    # out of the LAN veth, whose offloads are off, the kernel must cut them again and compute
    # each segment's checksum from the pseudo-header sum trivpn left, and the LAN host's kernel
    # verifies those. The other way, packets from the LAN cross the tunnel one by one.
    srv, cli, lan = lab.add("srv"), lab.add("cli"), lab.add("lan")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    veth = lab.veth(srv, lan, f"{LAN_GW}/24", f"{LAN_HOST}/24")
    srv.run(["ethtool", "-K", veth.a_ifname, "tx", "off", "tso", "off", "gso", "off", "sg", "off"])
    srv.enable_forwarding()
    lan.add_route("198.18.8.0/24", via=LAN_GW)
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, wrap="tls-crypt",
        extra=[f'push "route {LAN_NET} 255.255.255.0"']))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(
        server_ip=SERVER_IP, wrap="tls-crypt"))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5, cn="client1")
    assert connected is not None, server.text()
    assert ping(cli, LAN_HOST), (client.text()[-2000:], server.text()[-2000:])

    sent, received = transfer(lan, LAN_HOST, cli, TEN_MB)
    assert sent == received and received.endswith(f" {TEN_MB}"), server.text()[-3000:]
    sent, received = transfer(cli, connected["vpn_ip"], lan, TEN_MB, port=5202)
    assert sent == received and received.endswith(f" {TEN_MB}"), server.text()[-3000:]
