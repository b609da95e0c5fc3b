"""Small builders shared by the config tests."""

from __future__ import annotations

from pathlib import Path

from trivpn.config import Options, parse_config

FIXTURES = Path(__file__).parent / "fixtures"

# Minimal valid configs; tests append the directives they are about.
CLIENT_BASE = """client
dev tun
remote vpn.example.com 1194
ca ca.crt
cert client.crt
key client.key
remote-cert-tls server
"""

SERVER_BASE = """dev tun
ca ca.crt
cert server.crt
key server.key
dh none
server 198.18.8.0 255.255.255.0
topology subnet
"""


def client(extra: str = "") -> Options:
    return parse_config(CLIENT_BASE + extra, "client.conf")


def server(extra: str = "") -> Options:
    return parse_config(SERVER_BASE + extra, "server.conf")
