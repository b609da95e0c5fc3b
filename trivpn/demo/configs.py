"""The demo's files: a throwaway PKI and a server/client config pair in the classic style.

The configs are what OpenVPN's sample ``server.conf``/``client.conf`` look like with the
comments trimmed, so a newcomer recognises them, and they work unchanged with ``openvpn``.
Paths inside them are relative to the directory they are written to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from trivpn.pki.certs import create_ca, issue_cert
from trivpn.pki.statickeys import generate_static_key, write_static_key
from trivpn.pki.store import PkiStore

SERVER_NAME = "server"
CLIENT_NAME = "client1"
PORT = 1194


@dataclass(frozen=True, slots=True)
class DemoAddresses:
    """Link addresses on the veth and the tunnel network (all inside 198.18.0.0/15)."""

    server_link: str = "198.18.0.1/24"
    client_link: str = "198.18.0.2/24"
    tunnel: str = "198.18.8.0/24"

    @property
    def server_ip(self) -> str:
        return str(ipaddress.ip_interface(self.server_link).ip)

    @property
    def server_tunnel_ip(self) -> str:
        """The server's own address in the tunnel: the first host of the network."""
        return str(next(ipaddress.ip_network(self.tunnel).hosts()))


@dataclass(frozen=True, slots=True)
class DemoFiles:
    """Where everything was written inside the demo's directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def server_conf(self) -> Path:
        return self.root / "server.conf"

    @property
    def client_conf(self) -> Path:
        return self.root / "client.conf"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def client_log(self) -> Path:
        return self.root / "client.log"

    @property
    def server_output(self) -> Path:
        """The server process's stdout/stderr (anything not in its JSON log)."""
        return self.root / "server.out"

    @property
    def client_output(self) -> Path:
        return self.root / "client.out"


def write_pki(files: DemoFiles) -> PkiStore:
    """A new CA, the server and client certificates and the tls-crypt key under ``pki/``."""
    store = PkiStore(files.pki)
    ca = create_ca("trivpn demo CA")
    store.save_ca(ca)
    store.save_issued(SERVER_NAME, issue_cert(ca, "server", SERVER_NAME))
    store.save_issued(CLIENT_NAME, issue_cert(ca, "client", CLIENT_NAME))
    write_static_key(files.pki / "tc.key", generate_static_key())
    return store


def server_config(addresses: DemoAddresses) -> str:
    net = ipaddress.ip_network(addresses.tunnel)
    return "\n".join([
        "# server.conf, written by 'trivpn demo': OpenVPN's classic sample server config",
        f"port {PORT}",
        "proto udp",
        "dev tun",
        "ca pki/ca.crt",
        f"cert pki/issued/{SERVER_NAME}.crt",
        f"key pki/private/{SERVER_NAME}.key",
        "dh none",
        "topology subnet",
        f"server {net.network_address} {net.netmask}",
        "keepalive 10 120",
        "tls-crypt pki/tc.key",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
        "# 'trivpn doctor' connects with the client's certificate while the client is up",
        "duplicate-cn",
        "persist-key",
        "persist-tun",
        "verb 3",
        "explicit-exit-notify 1",
        "",
    ])


def client_config(addresses: DemoAddresses) -> str:
    return "\n".join([
        "# client.conf, written by 'trivpn demo': OpenVPN's classic sample client config",
        "client",
        "dev tun",
        "proto udp",
        f"remote {addresses.server_ip} {PORT}",
        "resolv-retry infinite",
        "nobind",
        "persist-key",
        "persist-tun",
        "ca pki/ca.crt",
        f"cert pki/issued/{CLIENT_NAME}.crt",
        f"key pki/private/{CLIENT_NAME}.key",
        "remote-cert-tls server",
        "tls-crypt pki/tc.key",
        "verb 3",
        "",
    ])


def write_configs(files: DemoFiles, addresses: DemoAddresses) -> None:
    files.server_conf.write_text(server_config(addresses), encoding="utf-8")
    files.client_conf.write_text(client_config(addresses), encoding="utf-8")
