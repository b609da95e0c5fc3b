"""Build doctor fault scenarios: a server namespace and a client namespace joined by a veth
(198.18.0.1 ↔ 198.18.0.2), a throwaway PKI, a real openvpn server or a small responder, and a
client config whose DoctorContext points the probes into the client namespace."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.openvpn import OpenVpnProcess, PkiFiles, start_openvpn, wrap_lines, write_pki
from tests.netns import Netns, NetnsLab
from trivpn.config import load_config
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.runtime.netns import enter_netns

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
SERVER_NET = "198.18.8.0"  # the VPN pool (subnet topology: gateway 198.18.8.1)


def server_lines(wrap: str = "tls-crypt", *, local: str | None = SERVER_IP,
                 extra: Sequence[str] = (), proto: str = "udp") -> list[str]:
    lines = ["mode server", "tls-server", "dev tun", f"proto {proto}", "port 1194",
             "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
             f"server {SERVER_NET} 255.255.255.0", "keepalive 2 10", "remote-cert-tls client",
             "verb 4", *wrap_lines(wrap, "server"), *extra]
    if local is not None:
        lines.insert(4, f"local {local}")
    return lines


def client_lines(wrap: str = "tls-crypt", *, remote: str = SERVER_IP, port: int = 1194,
                 proto: str = "udp", cert: str = "client.crt", key: str = "client.key",
                 ca: str = "ca.crt", tls_key: str = "static.key",
                 extra: Sequence[str] = ()) -> list[str]:
    lines = ["client", "dev tun", f"proto {proto}", f"remote {remote} {port}", "nobind",
             f"ca {ca}", f"cert {cert}", f"key {key}", "remote-cert-tls server"]
    if wrap == "tls-crypt":
        lines.append(f"tls-crypt {tls_key}")
    elif wrap == "tls-auth":
        lines.append(f"tls-auth {tls_key} 1")
    return lines + list(extra)


@dataclass
class Scenario:
    lab: NetnsLab
    workdir: Path
    server: Netns
    client: Netns
    pki: PkiFiles
    servers: list[OpenVpnProcess] = field(default_factory=list)

    def start_openvpn(self, lines: list[str], name: str = "server") -> OpenVpnProcess:
        proc = start_openvpn(self.server, self.workdir, name, lines)
        self.servers.append(proc)
        return proc

    def start_openvpn_in(self, ns: Netns, lines: list[str],
                         name: str = "server") -> OpenVpnProcess:
        proc = start_openvpn(ns, self.workdir, name, lines)
        self.servers.append(proc)
        return proc

    def client_config(self, lines: list[str], name: str = "client.conf") -> Path:
        path = self.workdir / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def context(self, config: Path, *, timeout: float = 10.0,
                results: Sequence[CheckResult] = ()) -> DoctorContext:
        options = load_config(config)
        return DoctorContext(config, options, options.role, timeout,
                             {r.id: r for r in results}, netns=self.client.name)

    def server_log(self) -> str:
        return "\n".join(s.text()[-3000:] for s in self.servers)


@contextmanager
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    with NetnsLab() as lab:
        server, client = lab.add("srv"), lab.add("cli")
        lab.veth(server, client, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
        yield Scenario(lab, tmp_path, server, client, write_pki(tmp_path))


@contextmanager
def udp_responder(ns: Netns, bind: tuple[str, int], reply: bytes | None = None,
                  ) -> Iterator[list[tuple[bytes, tuple[str, int]]]]:
    """A UDP socket in ``ns`` that answers every datagram with ``reply`` (or echoes it);
    yields the list of (datagram, source) it received."""
    with enter_netns(ns.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(bind)
    sock.settimeout(0.1)
    seen: list[tuple[bytes, tuple[str, int]]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append((data, addr))
            sock.sendto(reply if reply is not None else data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(2)
        sock.close()
