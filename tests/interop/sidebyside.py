"""A real ``openvpn`` 2.6 server with a trivpn client and a real openvpn client side by side.

The server namespace reaches the trivpn client over one veth (198.18.0.1 ↔ 198.18.0.2) and the
openvpn client over another (198.18.1.1 ↔ 198.18.1.2); the server listens on both (no
``local``) and gives each client a fixed VPN address (``client-config-dir``: client1 →
198.18.8.10, client2 → 198.18.8.11), so a restarted server hands out the same addresses again.
Both clients run the same config; only the remote address and the certificate differ. Tests
then compare what each client did (routes, timings, log lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.interop.clientkit import client_lines, server_lines
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem

TRIVPN_SIDE = ("198.18.0.1", "198.18.0.2")
OPENVPN_SIDE = ("198.18.1.1", "198.18.1.2")
TRIVPN_VPN_IP, OPENVPN_VPN_IP = "198.18.8.10", "198.18.8.11"


@dataclass
class SideBySide:
    lab: NetnsLab
    workdir: Path
    server_ns: Netns
    trivpn_ns: Netns
    openvpn_ns: Netns

    def start_server(self, proto: str, name: str = "server",
                     extra: tuple[str, ...] = ()) -> OpenVpnProcess:
        """The server only sends pings (``ping 1``, nothing pushed: the clients' own
        keepalive/ping-restart detect an outage)."""
        lines = [line for line in server_lines(proto=proto)
                 if not line.startswith(("local ", "keepalive "))]
        server = start_openvpn(self.server_ns, self.workdir, name,
                               [*lines, "ping 1", "client-config-dir ccd", *extra])
        assert server.wait_for("Initialization Sequence Completed", 15), server.text()[-3000:]
        return server

    def start_trivpn(self, proto: str, extra: tuple[str, ...],
                     ports: tuple[int, ...] = (1194,)) -> TrivpnProcess:
        """``ports``: one ``remote`` line per port, in this order, all to the server."""
        return start_trivpn(self.trivpn_ns, self.workdir, "trivpn",
                            _client_config(proto, extra, ports))

    def start_openvpn(self, proto: str, extra: tuple[str, ...],
                      ports: tuple[int, ...] = (1194,)) -> OpenVpnProcess:
        lines = [line.replace(TRIVPN_SIDE[0], OPENVPN_SIDE[0]).replace("client.", "client2.")
                 for line in _client_config(proto, extra, ports)]
        return start_openvpn(self.openvpn_ns, self.workdir, "ovpnclient", lines)


def _client_config(proto: str, extra: tuple[str, ...], ports: tuple[int, ...]) -> list[str]:
    lines: list[str] = []
    for line in client_lines(proto=proto, extra=extra):
        if line.startswith("remote "):
            lines += [f"remote {TRIVPN_SIDE[0]} {port}" for port in ports]
        else:
            lines.append(line)
    return lines


def make_side_by_side(lab: NetnsLab, workdir: Path) -> SideBySide:
    server_ns, trivpn_ns, openvpn_ns = lab.add("srv"), lab.add("triv"), lab.add("ovpn")
    lab.veth(server_ns, trivpn_ns, f"{TRIVPN_SIDE[0]}/24", f"{TRIVPN_SIDE[1]}/24")
    lab.veth(server_ns, openvpn_ns, f"{OPENVPN_SIDE[0]}/24", f"{OPENVPN_SIDE[1]}/24")
    pki = write_pki(workdir)
    second = issue_cert(pki.ca, "client", "client2")
    (workdir / "client2.crt").write_bytes(certificate_pem(second.cert))
    key = workdir / "client2.key"
    key.write_bytes(private_key_pem(second.key))
    key.chmod(0o600)
    (workdir / "ccd").mkdir()
    (workdir / "ccd" / "client1").write_text(f"ifconfig-push {TRIVPN_VPN_IP} 255.255.255.0\n")
    (workdir / "ccd" / "client2").write_text(f"ifconfig-push {OPENVPN_VPN_IP} 255.255.255.0\n")
    return SideBySide(lab, workdir, server_ns, trivpn_ns, openvpn_ns)


Route = tuple[str, str, str, int]


def route_table(ns: Netns, server_ip: str) -> set[Route]:
    """The namespace's IPv4 routes as (destination, gateway, device kind, metric), with the
    VPN server's address written ``SERVER`` and devices as ``tun``/``veth``, so that the
    tables of the two client namespaces compare equal when the clients did the same."""
    out = set()
    for route in json.loads(ns.run(["ip", "-j", "-4", "route", "show"]).stdout):
        dst = "SERVER" if route["dst"] == server_ip else route["dst"]
        dev = "tun" if route.get("dev", "").startswith("tun") else "veth"
        if dev == "veth" and route.get("protocol") == "kernel":
            continue  # the veth's own subnet differs on purpose
        out.add((dst, route.get("gateway", ""), dev, int(route.get("metric", 0))))
    return out
