"""IPv6 inside and outside the tunnel, against the real ``openvpn`` 2.6, both roles.

Namespaces ``srv`` and ``cli`` joined by a veth carrying 198.18.0.1/.2 and 2001:2:0:ff::1/::2
(nodad: usable at once). Tunnels: 198.18.8.0/24 with ``server-ipv6 2001:2:0:8::/64``, so the
server is 2001:2:0:8::1 and the first client 2001:2:0:8::1000 (helper.c, pool.c). Addresses
only from 198.18.0.0/15 and 2001:2::/48; every load is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import stop_process
from tests.interop.openvpn import OpenVpnProcess, openvpn_output, start_openvpn, write_pki
from tests.interop.serverkit import ping, transfer
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, load_config
from trivpn.netlab import in_lab_space

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
SERVER_IP6, CLIENT_IP6 = "2001:2:0:ff::1", "2001:2:0:ff::2"
NET6 = "2001:2:0:8::/64"
SERVER_VPN6, CLIENT_VPN6 = "2001:2:0:8::1", "2001:2:0:8::1000"
REDIRECT6 = ["::/3", "2000::/4", "3000::/4", "fc00::/7"]
ONE_MB = 1024 * 1024


def _add6(ns: Netns, ifname: str, cidr: str) -> None:
    assert in_lab_space(cidr), cidr
    ns.ip("addr", "add", cidr, "dev", ifname, "nodad")


def _setup(lab: NetnsLab, workdir: Path, *, default6: bool = False) -> tuple[Netns, Netns]:
    """``default6``: the client reaches the server's IPv6 address through a default route
    only (no on-link /64), so that redirect-gateway ipv6's 2000::/4 would cover it."""
    srv, cli = lab.add("srv"), lab.add("cli")
    veth = lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    _add6(srv, veth.a_ifname, f"{SERVER_IP6}/64")
    if default6:
        assert in_lab_space(f"{CLIENT_IP6}/64")
        cli.ip("addr", "add", f"{CLIENT_IP6}/64", "dev", veth.b_ifname, "nodad",
               "noprefixroute")
        cli.ip("-6", "route", "add", "default", "dev", veth.b_ifname)
    else:
        _add6(cli, veth.b_ifname, f"{CLIENT_IP6}/64")
    write_pki(workdir)
    return srv, cli


def _server(*, proto: str = "udp", local: str | None = SERVER_IP,
            extra: tuple[str, ...] = ()) -> list[str]:
    return ["dev tun", f"proto {proto}", *([f"local {local}"] if local else []), "port 1194",
            "ca ca.crt", "cert server.crt", "key server.key", "dh none",
            "server 198.18.8.0 255.255.255.0", f"server-ipv6 {NET6}", "topology subnet",
            "keepalive 2 20", "remote-cert-tls client", "verb 3", *extra]


def _client(*, remote: str = SERVER_IP, proto: str = "udp",
            extra: tuple[str, ...] = ()) -> list[str]:
    return ["client", "dev tun", f"proto {proto}", f"remote {remote} 1194", "nobind",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            "connect-retry 1", "verb 3", *extra]


def _routes6(ns: Netns) -> list[str]:
    out = ns.run(["ip", "-6", "route", "show"]).stdout
    return [line.split()[0] for line in out.splitlines() if line]


def _openvpn_up(proc: OpenVpnProcess, other: str) -> None:
    assert proc.wait_for("Initialization Sequence Completed", 20), (proc.text()[-3000:], other)


def _both_ways(srv: Netns, cli: Netns, server6: str, client6: str, why: str) -> None:
    assert ping(cli, server6), why
    assert ping(srv, client6), why
    for receiver, receiver_ip, sender in ((srv, server6, cli), (cli, client6, srv)):
        sent, received = transfer(receiver, receiver_ip, sender, ONE_MB, timeout=30)
        assert sent == received and received.endswith(f" {ONE_MB}"), why


@pytest.mark.directive("server-ipv6", "push", "redirect-gateway")
def test_openvpn_client_of_a_trivpn_server_gets_an_ipv6_address_ping6_and_tcp_both_ways(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server", _server(
        extra=('push "redirect-gateway ipv6 !ipv4"', "ifconfig-pool-persist ipp.txt 1",
               "status status.txt 1", "status-version 2")))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", _client())
    _openvpn_up(client, server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5)
    assert connected is not None and connected["vpn_ip6"] == CLIENT_VPN6, server.text()
    # what the real client was told and did with it
    assert f"ifconfig-ipv6 {CLIENT_VPN6}/64 {SERVER_VPN6}" in client.text()
    assert set(REDIRECT6) <= set(_routes6(cli)), _routes6(cli)
    _both_ways(srv, cli, SERVER_VPN6, CLIENT_VPN6, server.text()[-3000:])
    assert _persisted(tmp_path / "ipp.txt") == PERSIST_LINE  # as openvpn writes it (below)
    assert _status_ipv6(tmp_path / "status.txt") == STATUS_IPV6  # as openvpn's (below)


@pytest.mark.directive("redirect-gateway")
def test_trivpn_client_of_an_openvpn_server_gets_the_same_ipv6_address_and_routes(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    server = start_openvpn(srv, tmp_path, "server", _server(
        extra=('push "redirect-gateway ipv6 !ipv4"', 'push "route-ipv6 2001:2:0:30::/64"',
               "ifconfig-pool-persist ipp-openvpn.txt 1", "status status-openvpn.txt 1",
               "status-version 2")))
    _openvpn_up(server, "")
    client = start_trivpn(cli, tmp_path, "client", _client())
    up = client.wait_event("tun_configured", timeout=20)
    assert up is not None, (client.text()[-3000:], server.text()[-3000:])
    assert any(a.startswith(f"{CLIENT_VPN6}/64") for a in up["addresses"]), up
    # the same four redirect routes the real openvpn client installs (test above)
    assert set([*REDIRECT6, "2001:2:0:30::/64"]) <= set(_routes6(cli)), _routes6(cli)
    _both_ways(srv, cli, SERVER_VPN6, CLIENT_VPN6, client.text()[-3000:])
    assert _persisted(tmp_path / "ipp-openvpn.txt") == PERSIST_LINE
    assert _status_ipv6(tmp_path / "status-openvpn.txt") == STATUS_IPV6


PERSIST_LINE = f"client1,198.18.8.2,{CLIENT_VPN6}"


def _persisted(path: Path, timeout: float = 5.0) -> str:
    """The persist file's line once written (both write it every second here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return text.strip()
        time.sleep(0.2)
    return ""


STATUS_IPV6 = ({"CLIENT_LIST": "client1", "Virtual Address": "198.18.8.2",
                "Virtual IPv6 Address": CLIENT_VPN6},
               ["ROUTING_TABLE,198.18.8.2,client1", f"ROUTING_TABLE,{CLIENT_VPN6},client1"])


def _status_ipv6(path: Path, timeout: float = 5.0) -> tuple[dict[str, str], list[str]]:
    """The client's CLIENT_LIST fields of interest and its ROUTING_TABLE rows (status 2)."""
    deadline = time.monotonic() + timeout
    got: tuple[dict[str, str], list[str]] = ({}, [])
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        header = next((ln.split(",") for ln in lines if ln.startswith("HEADER,CLIENT_LIST")),
                      None)
        row = next((ln.split(",") for ln in lines if ln.startswith("CLIENT_LIST,")), None)
        if header and row:
            fields = dict(zip(header[1:], row, strict=False))
            wanted = {k: fields.get(k, "") for k in ("CLIENT_LIST", "Virtual Address",
                                                     "Virtual IPv6 Address")}
            wanted["CLIENT_LIST"] = row[1]
            routes = sorted(",".join(ln.split(",")[:3]) for ln in lines
                            if ln.startswith("ROUTING_TABLE,"))
            got = (wanted, routes)
            if got == STATUS_IPV6:
                return got
        time.sleep(0.2)
    return got


def _listening(ns: Netns) -> list[str]:
    out = ns.run(["ss", "-ulnH", "sport", "= :1194"]).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


@pytest.mark.directive("proto", "local", "redirect-gateway")
@pytest.mark.parametrize(("sproto", "cproto"), [("udp6", "udp6"), ("tcp6-server", "tcp6-client")])
def test_ipv6_transport_both_roles(lab: NetnsLab, tmp_path: Path, sproto: str, cproto: str):
    # redirect-gateway ipv6 covers the server's own 2001:2:0:ff::1 (2000::/4): both clients
    # keep it outside the tunnel with a host route, or the tunnel would carry itself
    push = ('push "redirect-gateway ipv6"',)
    srv, cli = _setup(lab, tmp_path, default6=True)
    # openvpn client over IPv6 to a trivpn server bound to an IPv6 local address
    server = start_trivpn(srv, tmp_path, "server", _server(proto=sproto, local=SERVER_IP6,
                                                           extra=push))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", _client(remote=SERVER_IP6, proto=cproto))
    _openvpn_up(client, server.text()[-3000:])
    assert _wait_peer(server, f"[{CLIENT_IP6}]:"), server.text()
    assert ping(cli, "198.18.8.1") and ping(cli, SERVER_VPN6), server.text()[-2000:]
    assert "tun" not in _route_get6(cli, SERVER_IP6)
    assert "2000::/4" in _routes6(cli)
    lab.kill_processes()
    # a trivpn client over IPv6 to an openvpn server
    server2 = start_openvpn(srv, tmp_path, "server2", _server(proto=sproto, local=SERVER_IP6,
                                                              extra=push))
    _openvpn_up(server2, "")
    client2 = start_trivpn(cli, tmp_path, "client2", _client(remote=SERVER_IP6, proto=cproto))
    assert client2.wait_event("tun_configured", timeout=20), client2.text()[-3000:]
    assert CLIENT_IP6 in server2.text()
    assert ping(cli, "198.18.8.1") and ping(cli, SERVER_VPN6), client2.text()[-2000:]
    assert "tun" not in _route_get6(cli, SERVER_IP6), client2.text()[-2000:]
    assert "2000::/4" in _routes6(cli)


def _route_get6(ns: Netns, dst: str) -> str:
    return ns.run(["ip", "-6", "route", "get", dst]).stdout


@pytest.mark.parametrize(("proto", "bound"), [("udp", "0.0.0.0:1194"), ("udp6", "*:1194")])
def test_server_without_local_binds_where_openvpn_binds(lab: NetnsLab, tmp_path: Path,
                                                         proto: str, bound: str):
    # OpenVPN 2.6: 'proto udp' without 'local' is IPv4 only; 'proto udp6' is dual-stack
    srv, _ = _setup(lab, tmp_path)
    ovpn = start_openvpn(srv, tmp_path, "oserver", _server(proto=proto, local=None))
    _openvpn_up(ovpn, "")
    assert _listening(srv) == [bound]
    lab.kill_processes()
    server = start_trivpn(srv, tmp_path, "server", _server(proto=proto, local=None))
    assert server.wait_event("link_open", timeout=10), server.text()
    assert _listening(srv) == [bound]


@pytest.mark.directive("proto")
def test_udp6_server_without_local_takes_clients_over_ipv4_and_ipv6(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server", _server(proto="udp6", local=None))
    assert server.wait_event("link_open", timeout=10), server.text()
    v4 = start_openvpn(cli, tmp_path, "client4", _client(remote=SERVER_IP))
    _openvpn_up(v4, server.text()[-3000:])
    assert _wait_peer(server, f"{CLIENT_IP}:"), server.text()[-3000:]  # not ::ffff:...
    assert ping(cli, SERVER_VPN6), server.text()[-2000:]
    stop_process(lab, v4.pid)
    v6 = start_openvpn(cli, tmp_path, "client6", _client(remote=SERVER_IP6))
    _openvpn_up(v6, server.text()[-3000:])
    assert _wait_peer(server, f"[{CLIENT_IP6}]:"), server.text()[-3000:]
    assert ping(cli, SERVER_VPN6), server.text()[-2000:]


@pytest.mark.directive("server-ipv6")
def test_ipv6_packets_from_a_foreign_source_are_dropped_and_counted(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    foreign = "2001:2:0:8::bad"
    # what reaches the server's device from the foreign source: nothing may
    srv.nft(f"table inet spoof {{\n chain c {{\n  type filter hook input priority 0;\n"
            f"  ip6 saddr {foreign} counter\n }}\n}}\n")
    server = start_trivpn(srv, tmp_path, "server", _server())
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", _client())
    _openvpn_up(client, server.text()[-3000:])
    assert ping(cli, SERVER_VPN6), server.text()[-2000:]
    _add6(cli, _tun_name(cli), f"{foreign}/128")
    done = cli.run(["ping", "-c", "20", "-i", "0.05", "-W", "1", "-I", foreign, SERVER_VPN6],
                   check=False, timeout=20)
    assert done.returncode != 0  # nothing answers
    assert " packets 0 " in srv.run(["nft", "list", "table", "inet", "spoof"]).stdout
    # 20 spoofed pings, plus the client's link-local router solicitations and MLD reports
    # (fe80:: is not its pool address either: OpenVPN drops those too)
    assert _wait_total(server, "spoofed_source", 20), server.text()[-3000:]
    own = cli.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", CLIENT_VPN6, SERVER_VPN6],
                  check=False, timeout=10)
    assert own.returncode == 0, own.stdout  # the client's own address still works


def _wait_total(server: TrivpnProcess, reason: str, at_least: int,
                timeout: float = 12.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        totals = [e.get("total", 0) for e in server.events()
                  if e.get("event") == "packet_dropped" and e.get("reason") == reason]
        if totals and max(totals) >= at_least:
            return True
        time.sleep(0.2)
    return False


def _wait_peer(server: TrivpnProcess, prefix: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "peer_connected" and str(e.get("peer", "")).startswith(prefix)
               for e in server.events()):
            return True
        time.sleep(0.1)
    return False


def _tun_name(ns: Netns) -> str:
    out = ns.run(["ip", "-o", "link", "show", "type", "tun"]).stdout
    return out.split(":")[1].strip()



def _ping6_once(ns: Netns, dst: str) -> str:
    done = ns.run(["ping", "-c", "1", "-W", "2", dst], check=False, timeout=10)
    return done.stdout


@pytest.mark.directive("block-ipv6")
def test_block_ipv6_answers_no_route_from_the_tunnel_peer_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server", _server(
        extra=('push "redirect-gateway ipv6 !ipv4"',)))
    assert server.wait_event("link_open", timeout=10), server.text()
    far = "2001:2:0:99::1"  # behind the tunnel (redirect-gateway ipv6 routes it there)
    # had a packet crossed, the server's kernel would answer "Administratively prohibited"
    srv.ip("-6", "route", "add", "prohibit", "2001:2:0:99::/64")
    expected = f"From {SERVER_VPN6} icmp_seq=1 Destination unreachable: No route"
    ovpn = start_openvpn(cli, tmp_path, "oclient", _client(extra=("block-ipv6",)))
    _openvpn_up(ovpn, server.text()[-3000:])
    assert expected in _ping6_once(cli, far), ovpn.text()[-2000:]
    stop_process(lab, ovpn.pid)
    trivpn = start_trivpn(cli, tmp_path, "client", _client(extra=("block-ipv6",)))
    assert trivpn.wait_event("tun_configured", timeout=20), trivpn.text()[-3000:]
    out = ""
    deadline = time.monotonic() + 5
    while expected not in out and time.monotonic() < deadline:
        out = _ping6_once(cli, far)
    assert expected in out, (out, trivpn.text()[-2000:])
    assert ping(cli, "198.18.8.1")  # IPv4 still goes through


@pytest.mark.parametrize("line", ["iroute-ipv6 2001:2:0:40::/64",
                                  "ifconfig-ipv6-push 2001:2:0:8::2000/64 2001:2:0:8::1"])
def test_openvpn_takes_iroute_ipv6_and_ifconfig_ipv6_push_only_per_client(
        lab: NetnsLab, tmp_path: Path, line: str):
    # docs/ipv6.md says these two belong to per-client configuration files: in a server's
    # own config the real openvpn refuses them, and so does trivpn
    srv, _ = _setup(lab, tmp_path)
    conf = tmp_path / "bad.conf"
    conf.write_text("\n".join([*_server(), line]) + "\n")
    out = openvpn_output(lab, tmp_path, ["--config", conf.name], seconds=3, ns=srv)
    name = line.split(maxsplit=1)[0]
    assert f"option '{name}' cannot be used in this context" in out, out[-2000:]
    with pytest.raises(ConfigError):
        load_config(conf)


_MSS_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5301)); s.listen(1); s.settimeout(10); print("ready", flush=True)
c, _ = s.accept(); print(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG), flush=True)
"""


def _mss_seen(listener_ns: Netns, listen_ip: str, connector: Netns) -> int:
    """The MSS the listener's kernel uses for a connection from ``connector`` (its own MSS
    and the MSS option of the SYN it received, whichever is lower)."""
    proc = listener_ns.spawn([sys.executable, "-c", _MSS_LISTENER, listen_ip],
                             stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    connector.run([sys.executable, "-c", "import socket, sys; socket.create_connection("
                   "(sys.argv[1], 5301), timeout=5).close()", listen_ip], timeout=10)
    out, _ = proc.communicate(timeout=10)
    return int(out.strip())


@pytest.mark.directive("mssfix")
def test_ipv6_tcp_syns_through_the_server_are_clamped_as_openvpn_clamps_them(
        lab: NetnsLab, tmp_path: Path):
    # the openvpn client clamps nothing (mssfix 0): what the client's listener sees is the
    # server's clamp of the SYN the server side sends
    srv, cli = _setup(lab, tmp_path)
    seen = {}
    for name, start in (("openvpn", start_openvpn), ("trivpn", start_trivpn)):
        server = start(srv, tmp_path, f"{name}-server", _server())
        client = start_openvpn(cli, tmp_path, f"{name}-client", _client(extra=("mssfix 0",)))
        _openvpn_up(client, "")
        assert ping(cli, SERVER_VPN6)
        seen[name] = _mss_seen(cli, CLIENT_VPN6, srv)
        del server
        lab.kill_processes()
    assert seen["trivpn"] == seen["openvpn"] < 1440, seen  # 1440: an unclamped 1500 MTU
