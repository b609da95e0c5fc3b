"""trivpn through real proxies: Debian's tinyproxy (HTTP CONNECT with basic auth) and dante
(SOCKS5, TCP CONNECT and UDP ASSOCIATE), to real openvpn 2.6 servers that the client can
reach only through the proxy.

Topology (one lab for the module):

    cli 198.18.0.2 ── 198.18.0.1 proxy 198.18.1.1 ── 198.18.1.2 srv

The proxy namespace does not forward packets, the client has no route to 198.18.1.0/24:
every byte to the servers goes through tinyproxy or danted. ``srv`` runs an openvpn server
over UDP (VPN 198.18.8.0/24) and one over TCP (198.18.9.0/24), and a trivpn server over TCP
on port 1195 (198.18.10.0/24). The proxies accept clients from 198.18.0.0/24 only and connect
only to 198.18.1.0/24.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.clientkit import ping
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

CLIENT_IP, PROXY_IN, PROXY_OUT, SERVER_IP = "198.18.0.2", "198.18.0.1", "198.18.1.1", "198.18.1.2"
HTTP_PORT, SOCKS_PORT = 8888, 1080
VPN = {"udp": ("198.18.8.0", "198.18.8.1"), "tcp": ("198.18.9.0", "198.18.9.1"),
       "trivpn": ("198.18.10.0", "198.18.10.1")}
USER, PASSWORD = "tunnel", "through-the-proxy"


@dataclass
class ProxyLab:
    lab: NetnsLab
    workdir: Path
    cli: Netns
    proxy: Netns
    srv: Netns
    http_log: Path
    socks_log: Path
    runs: int = 0

    def client(self, lines: list[str]) -> TrivpnProcess:
        self.runs += 1
        return start_trivpn(self.cli, self.workdir, f"client{self.runs}", [
            "client", "dev tun", "nobind", "ca ca.crt", "cert client.crt", "key client.key",
            "remote-cert-tls server", "connect-retry 1", "verb 3", *lines])

    def stop(self, proc: TrivpnProcess) -> None:
        for p in self.lab.processes:
            if p.pid == proc.pid and p.poll() is None:
                p.terminate()
                p.wait(10)


def _server(ns: Netns, workdir: Path, proto: str) -> OpenVpnProcess:
    net, _ = VPN[proto]
    lines = ["mode server", "tls-server", "dev tun", "port 1194", f"local {SERVER_IP}",
             "proto tcp-server" if proto == "tcp" else "proto udp",
             "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
             f"server {net} 255.255.255.0", "keepalive 1 10", "remote-cert-tls client",
             "verb 4"]
    return start_openvpn(ns, workdir, f"server-{proto}", lines)


def _tinyproxy(ns: Netns, workdir: Path) -> Path:
    log = workdir / "tinyproxy.log"
    conf = workdir / "tinyproxy.conf"
    conf.write_text("\n".join([
        "User nobody", "Group nogroup", f"Port {HTTP_PORT}", f"Listen {PROXY_IN}",
        f"Bind {PROXY_OUT}", "Timeout 30", "LogLevel Info", f"LogFile \"{log}\"",
        "MaxClients 20", f"Allow {CLIENT_IP}", f"BasicAuth {USER} {PASSWORD}",
        "ConnectPort 1194", "ConnectPort 1195", "DisableViaHeader Yes", ""]))
    log.touch()
    log.chmod(0o666)
    out = (workdir / "tinyproxy.out").open("wb")
    ns.spawn(["tinyproxy", "-d", "-c", str(conf)], stdout=out)
    return log


def _danted(ns: Netns, workdir: Path) -> Path:
    log = workdir / "danted.log"
    conf = workdir / "danted.conf"
    conf.write_text(f"""logoutput: {log}
internal: {PROXY_IN} port = {SOCKS_PORT}
external: {PROXY_OUT}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 198.18.0.0/24 to: 0.0.0.0/0 }}
socks pass {{ from: 198.18.0.0/24 to: 198.18.1.0/24 command: connect udpassociate }}
socks pass {{ from: 198.18.1.0/24 to: 198.18.0.0/24 command: udpreply }}
socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}
""")
    out = (workdir / "danted.out").open("wb")
    ns.spawn(["danted", "-f", str(conf), "-p", str(workdir / "danted.pid")], stdout=out)
    return log


def _listening(ns: Netns, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in ns.run(["ss", "-Hltn"], check=False).stdout:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyLab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("proxies")
    workdir.chmod(0o755)
    with NetnsLab() as lab:
        cli, proxy, srv = lab.add("cli"), lab.add("proxy"), lab.add("srv")
        lab.veth(cli, proxy, f"{CLIENT_IP}/24", f"{PROXY_IN}/24")
        lab.veth(proxy, srv, f"{PROXY_OUT}/24", f"{SERVER_IP}/24")
        proxy.sysctl("net.ipv4.ip_forward", "0")
        write_pki(workdir)
        servers = [_server(srv, workdir, "udp"), _server(srv, workdir, "tcp")]
        trivpn_server = start_trivpn(srv, workdir, "server-trivpn", [
            "dev tun", "proto tcp-server", f"local {SERVER_IP}", "port 1195", "ca ca.crt",
            "cert server.crt", "key server.key", "dh none", "topology subnet",
            f"server {VPN['trivpn'][0]} 255.255.255.0", "keepalive 2 20",
            "remote-cert-tls client", "verb 3"])
        http_log, socks_log = _tinyproxy(proxy, workdir), _danted(proxy, workdir)
        for server in servers:
            assert server.wait_for("Initialization Sequence Completed", 15), server.text()
        assert trivpn_server.wait_event("link_open", 15), trivpn_server.text()[-3000:]
        assert _listening(proxy, HTTP_PORT), (http_log.read_text()
                                              + (workdir / "tinyproxy.out").read_text())
        assert _listening(proxy, SOCKS_PORT), (socks_log.read_text()
                                               + (workdir / "danted.out").read_text())
        yield ProxyLab(lab, workdir, cli, proxy, srv, http_log, socks_log)


def _up_and_pinging(p: ProxyLab, client: TrivpnProcess, proto: str) -> dict[str, object]:
    up = client.wait_event("tun_configured", 20)
    assert up is not None, client.text()[-4000:]
    done = ping(p.cli, VPN[proto][1])
    assert done.returncode == 0, done.stdout + done.stderr
    return up


def test_the_server_is_unreachable_without_the_proxy(proxies: ProxyLab) -> None:
    done = proxies.cli.run(["ping", "-c", "1", "-W", "1", SERVER_IP], check=False)
    assert done.returncode != 0


@pytest.mark.directive("http-proxy", "http-proxy-option")
def test_http_proxy_with_basic_auth_through_tinyproxy(proxies: ProxyLab) -> None:
    (proxies.workdir / "proxy-auth.txt").write_text(f"{USER}\n{PASSWORD}\n")
    client = proxies.client(["proto tcp-client", f"remote {SERVER_IP} 1194",
                             f"http-proxy {PROXY_IN} {HTTP_PORT} proxy-auth.txt basic",
                             "http-proxy-option AGENT trivpn-interop",
                             "http-proxy-option VERSION 1.1"])
    try:
        _up_and_pinging(proxies, client, "tcp")
        opened = client.wait_event("link_open", 1)
        assert opened is not None and "via http proxy" in str(opened["peer"])
        assert PASSWORD not in client.text()
    finally:
        proxies.stop(client)


@pytest.mark.directive("http-proxy", "http-proxy-user-pass")
def test_http_proxy_with_wrong_password_is_refused_with_407(proxies: ProxyLab) -> None:
    client = proxies.client(["proto tcp-client", f"remote {SERVER_IP} 1194",
                             f"http-proxy {PROXY_IN} {HTTP_PORT}",
                             "<http-proxy-user-pass>", USER, "wrong", "</http-proxy-user-pass>",
                             "connect-retry-max 1"])
    try:
        failed = client.wait_event("proxy_failed", 15)
        assert failed is not None, client.text()[-3000:]
        assert "407" in str(failed["detail"])
    finally:
        proxies.stop(client)


@pytest.mark.directive("socks-proxy")
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_socks_proxy_through_dante(proxies: ProxyLab, proto: str) -> None:
    client = proxies.client([f"proto {'tcp-client' if proto == 'tcp' else 'udp'}",
                             f"remote {SERVER_IP} 1194", f"socks-proxy {PROXY_IN} {SOCKS_PORT}"])
    try:
        _up_and_pinging(proxies, client, proto)
        opened = client.wait_event("link_open", 1)
        assert opened is not None and "via socks proxy" in str(opened["peer"])
    finally:
        proxies.stop(client)


@pytest.mark.directive("http-proxy")
def test_http_proxy_to_a_trivpn_server(proxies: ProxyLab) -> None:
    (proxies.workdir / "proxy-auth.txt").write_text(f"{USER}\n{PASSWORD}\n")
    client = proxies.client(["proto tcp-client", f"remote {SERVER_IP} 1195",
                             f"http-proxy {PROXY_IN} {HTTP_PORT} proxy-auth.txt"])
    try:
        _up_and_pinging(proxies, client, "trivpn")
    finally:
        proxies.stop(client)


def test_the_real_openvpn_client_goes_through_the_same_proxy_config(proxies: ProxyLab) -> None:
    # the same http-proxy lines with the real client: the lab's proxy setup is what OpenVPN
    # expects too (basic auth, CONNECT to the server's port)
    (proxies.workdir / "proxy-auth.txt").write_text(f"{USER}\n{PASSWORD}\n")
    ovpn = start_openvpn(proxies.cli, proxies.workdir, "ovpn-http", [
        "client", "dev tun", "nobind", "ca ca.crt", "cert client.crt", "key client.key",
        "remote-cert-tls server", "verb 4", "proto tcp-client", f"remote {SERVER_IP} 1194",
        f"http-proxy {PROXY_IN} {HTTP_PORT} proxy-auth.txt basic"])
    try:
        assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-3000:]
        assert "Attempting Basic Proxy-Authorization" in ovpn.text()
    finally:
        for p in proxies.lab.processes:
            if p.pid == ovpn.pid and p.poll() is None:
                p.terminate()
                p.wait(10)
