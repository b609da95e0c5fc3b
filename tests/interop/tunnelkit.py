"""A real openvpn 2.6 server and a client namespace joined by a veth (198.18.0.1 ↔
198.18.0.2), for the tests of ``doctor --watch`` and ``doctor --log`` against real processes."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from tests.interop.openvpn import OpenVpnProcess, PkiFiles, start_openvpn, write_pki
from tests.netns import Netns, NetnsLab

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"


def server_config(*extra: str) -> list[str]:
    return ["mode server", "tls-server", "dev tun", "proto udp", f"local {SERVER_IP}",
            "port 1194", "ca ca.crt", "cert server.crt", "key server.key", "dh none",
            "topology subnet", "server 198.18.8.0 255.255.255.0", "keepalive 1 3",
            "remote-cert-tls client", "verb 3", *extra]


def client_config(*extra: str) -> list[str]:
    return ["client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            "connect-retry 1", "verb 3", "management mgmt.sock unix", *extra]


@dataclass
class Tunnel:
    lab: NetnsLab
    workdir: Path
    server_ns: Netns
    client_ns: Netns
    pki: PkiFiles
    server: OpenVpnProcess | None = None

    def start_server(self, *extra: str, name: str = "server") -> OpenVpnProcess:
        self.server = start_openvpn(self.server_ns, self.workdir, name, server_config(*extra))
        return self.server

    def kill_server(self) -> None:
        assert self.server is not None
        proc = next(p for p in self.lab.processes if p.pid == self.server.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)


def make_tunnel(lab: NetnsLab, workdir: Path) -> Tunnel:
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    return Tunnel(lab, workdir, server_ns, client_ns, write_pki(workdir))
