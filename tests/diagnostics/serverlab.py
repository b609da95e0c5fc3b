"""A server host for the server-side doctor tests: a namespace running a real openvpn 2.6
server, with an uplink namespace behind its default route (198.18.2.2) and one namespace per
client (client k on 198.18.<k>.0/24, the server at .1, the client at .2), each running a real
openvpn 2.6 client. The VPN pool is 198.18.8.0/24; a LAN 198.18.30.0/24 sits behind client1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.openvpn import OpenVpnProcess, PkiFiles, start_openvpn, write_pki
from tests.interop.serverkit import issue_client
from tests.netns import Netns, NetnsLab
from trivpn.config import load_config
from trivpn.diagnostics.model import DoctorContext

UPLINK_IF = "wan0"
POOL = "198.18.8.0"
LAN = "198.18.30.0"


def server_lines(*, extra: Sequence[str] = (), pool: Sequence[str] | None = None,
                 status_version: int = 2) -> list[str]:
    """An openvpn 2.6 server config writing ``status.txt`` every second and ``server.log``
    (verb 3: the level of OpenVPN's connect and duplicate-CN lines)."""
    addressing = list(pool) if pool is not None else [f"server {POOL} 255.255.255.0"]
    return ["mode server", "tls-server", "dev tun", "proto udp", "port 1194",
            "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
            *addressing, "keepalive 2 10", "remote-cert-tls client", "verb 3",
            "tls-crypt static.key", "status status.txt 1", f"status-version {status_version}",
            *extra]


def client_lines(index: int, cert: str = "client") -> list[str]:
    return ["client", "dev tun", "proto udp", f"remote 198.18.{index}.1 1194", "nobind",
            "ca ca.crt", f"cert {cert}.crt", f"key {cert}.key", "remote-cert-tls server",
            "tls-crypt static.key", "verb 3", "connect-retry 1"]


@dataclass
class ServerHost:
    lab: NetnsLab
    workdir: Path
    pki: PkiFiles
    server: Netns
    uplink: Netns
    clients: list[Netns] = field(default_factory=list)
    procs: list[OpenVpnProcess] = field(default_factory=list)

    def add_client_ns(self) -> Netns:
        index = len(self.clients) + 3  # 198.18.3.0/24 and up (.2 is the uplink)
        ns = self.lab.add(f"c{index}")
        self.lab.veth(self.server, ns, f"198.18.{index}.1/24", f"198.18.{index}.2/24")
        self.clients.append(ns)
        return ns

    def issue(self, name: str) -> str:
        return issue_client(self.pki, name)

    def start_server(self, lines: list[str], name: str = "server") -> OpenVpnProcess:
        (self.workdir / "server.log").unlink(missing_ok=True)
        conf = self.workdir / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        proc = start_openvpn(self.server, self.workdir, name, lines)
        self.procs.append(proc)
        assert proc.wait_for("Initialization Sequence Completed", 10), proc.text()
        return proc

    def start_client(self, ns: Netns, cert: str = "client",
                     name: str | None = None) -> OpenVpnProcess:
        index = self.clients.index(ns) + 3
        proc = start_openvpn(ns, self.workdir, name or f"client{index}",
                             client_lines(index, cert))
        self.procs.append(proc)
        return proc

    def context(self, name: str = "server", timeout: float = 5.0) -> DoctorContext:
        path = self.workdir / f"{name}.conf"
        options = load_config(path, read_files=False)  # as the doctor parses it
        return DoctorContext(path, options, options.role, timeout, {}, netns=self.server.name)

    def wait_status(self, needle: str, timeout: float = 10.0) -> str:
        """The status file once it contains ``needle``."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            path = self.workdir / "status.txt"
            text = path.read_text() if path.exists() else ""
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in status file:\n{text}")


@contextmanager
def server_host(tmp_path: Path) -> Iterator[ServerHost]:
    with NetnsLab() as lab:
        server, uplink = lab.add("srv"), lab.add("wan")
        lab.veth(server, uplink, "198.18.2.1/24", "198.18.2.2/24", a_ifname=UPLINK_IF)
        server.add_route("default", via="198.18.2.2")
        yield ServerHost(lab, tmp_path, write_pki(tmp_path), server, uplink)
