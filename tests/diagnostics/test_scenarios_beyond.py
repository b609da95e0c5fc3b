"""Beyond the server, against a real openvpn 2.6 server with a LAN behind it.

Namespaces: the client (198.18.0.2) reaches the server (198.18.0.1); the server routes between
its tun (pool 198.18.8.0/24, a second server with redirect-gateway on 198.18.9.0/24) and a veth
to the "lan" namespace, which holds the far host 198.18.20.10 and a small DNS responder on
198.18.20.53. Healthy: the server forwards and MASQUERADEs the VPN subnets on its LAN side.
A fourth server (pool 198.18.11.0/24) pushes redirect-gateway def1, the route to the LAN and the
DNS server: the end-to-end healthy runs of 'trivpn doctor' (client and server side) use it.
Each test injects one fault for real (sysctl, nft, a removed address, no DNS server) and
restores it.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import client_lines, server_lines
from tests.interop.openvpn import OpenVpnProcess, PkiFiles, start_openvpn, write_pki
from tests.netns import Netns, NetnsLab
from trivpn.config import load_config
from trivpn.diagnostics import (
    checks_beyond,
    checks_mtu,
    checks_nat,
    checks_port,
    checks_tls,
    checks_tunnel,
)
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.probe_inner import Inner, echo_request, parse_inner
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import Tunnel, TunnelBroker
from trivpn.runtime.netns import enter_netns

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
SERVER_LAN, HOST, DNS = "198.18.20.1", "198.18.20.10", "198.18.20.53"
SERVER_LAN6, HOST6, DNS6 = "2001:2:0:20::1", "2001:2:0:20::10", "2001:2:0:20::53"
IPV6_PORT = 1196  # the server with server-ipv6, route-ipv6 and an IPv6 DNS server
FULL_PORT = 1197  # redirect-gateway def1, a route to the LAN and a DNS server in it
APPLY_DNS = ("script-security 2", "up /etc/openvpn/update-resolv-conf",
             "down /etc/openvpn/update-resolv-conf")
NETWORK_CHECKS: tuple[Check, ...] = (*checks_port.CHECKS, *checks_nat.CHECKS,
                                     *checks_tls.CHECKS, *checks_mtu.CHECKS,
                                     *checks_tunnel.CHECKS, *checks_beyond.CHECKS)
NO_ANSWER = Inner("none", "", "")
NAT = ("table ip doctornat {\n chain post {\n"
       "  type nat hook postrouting priority srcnat; policy accept;\n"
       "  ip saddr 198.18.8.0/22 oifname \"{ifname}\" masquerade\n }\n}\n"
       "table ip6 doctornat6 {\n chain post {\n"
       "  type nat hook postrouting priority srcnat; policy accept;\n"
       "  ip6 saddr 2001:2:0:8::/64 oifname \"{ifname}\" masquerade\n }\n}\n")


@dataclass
class Lab:
    lab: NetnsLab
    workdir: Path
    server: Netns
    client: Netns
    lan: Netns
    lan_if: str  # the server's interface towards the LAN
    host_if: str  # the lan namespace's interface
    pki: PkiFiles
    servers: list[OpenVpnProcess]

    def context(self, *, redirect: bool = False, targets: tuple[str, ...] = (),
                extra: tuple[str, ...] = (), port: int | None = None) -> DoctorContext:
        port = port or (1195 if redirect else 1194)
        path = self.workdir / f"client-{port}.conf"
        path.write_text("\n".join(client_lines("tls-crypt", port=port, extra=extra)) + "\n")
        options = load_config(path)
        return DoctorContext(path, options, "client", 10.0, netns=self.client.name,
                             targets=targets)

    def masquerade(self) -> None:
        self.server.nft(NAT.replace("{ifname}", self.lan_if))

    def no_masquerade(self) -> None:
        self.server.run(["nft", "delete", "table", "ip", "doctornat"])
        self.server.run(["nft", "delete", "table", "ip6", "doctornat6"])

    def log(self) -> str:
        return "\n".join(s.text()[-3000:] for s in self.servers)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("beyond")
    with NetnsLab() as netlab:
        server, client, lan = netlab.add("srv"), netlab.add("cli"), netlab.add("lan")
        netlab.veth(server, client, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
        link = netlab.veth(server, lan, f"{SERVER_LAN}/24", f"{DNS}/24")
        lan.add_address(link.b_ifname, f"{HOST}/24")  # secondary: removable alone
        server.ip("addr", "add", f"{SERVER_LAN6}/64", "dev", link.a_ifname, "nodad")
        for address in (DNS6, HOST6):
            lan.ip("addr", "add", f"{address}/64", "dev", link.b_ifname, "nodad")
        server.enable_forwarding()
        server.sysctl("net.ipv6.conf.all.forwarding", "1")
        pki = write_pki(workdir)
        pushes = ['push "route 198.18.20.0 255.255.255.0"', f'push "dhcp-option DNS {DNS}"']
        main = start_openvpn(server, workdir, "server", server_lines("tls-crypt", extra=pushes))
        redirect_lines = [line.replace("198.18.8.0", "198.18.9.0").replace("port 1194",
                                                                            "port 1195")
                          for line in server_lines("tls-crypt", extra=[
                              'push "redirect-gateway def1"', f'push "dhcp-option DNS {DNS}"'])]
        second = start_openvpn(server, workdir, "redirect", redirect_lines)
        v6_lines = [line.replace("198.18.8.0", "198.18.10.0").replace("port 1194",
                                                                       f"port {IPV6_PORT}")
                    for line in server_lines("tls-crypt", extra=[
                        "server-ipv6 2001:2:0:8::/64", 'push "route-ipv6 2001:2:0:20::/64"',
                        f'push "dhcp-option DNS6 {DNS6}"'])]
        third = start_openvpn(server, workdir, "ipv6", v6_lines)
        full_lines = [line.replace("198.18.8.0", "198.18.11.0").replace("port 1194",
                                                                         f"port {FULL_PORT}")
                      for line in server_lines("tls-crypt", extra=[
                          'push "redirect-gateway def1"', *pushes])]
        fourth = start_openvpn(server, workdir, "full", full_lines)
        made = Lab(netlab, workdir, server, client, lan, link.a_ifname, link.b_ifname, pki,
                   [main, second, third, fourth])
        for proc in made.servers:
            assert proc.wait_for("Initialization Sequence Completed"), proc.text()
        made.masquerade()
        yield made


@contextmanager
def dns_responder(ns: Netns, address: str, rcode: int = 3) -> Iterator[list[bytes]]:
    """A DNS server in ``ns`` on ``address``:53 answering every query with ``rcode``
    (NXDOMAIN unless told)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with enter_netns(ns.name):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    sock.settimeout(0.1)
    queries: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            queries.append(data)
            flags = struct.pack("!H", 0x8180 | rcode)  # response, RD, RA
            try:
                sock.sendto(data[:2] + flags + data[4:6] + b"\0\0\0\0\0\0" + data[12:],
                            peer)
            except OSError:
                continue  # no way back to the client (a test's fault)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield queries
    finally:
        stop.set()
        thread.join(2)
        sock.close()


async def _check(check_id: str, ctx: DoctorContext) -> CheckResult:
    check = next(c for c in checks_beyond.CHECKS if c.id == check_id)
    return await check.run(ctx)


async def test_healthy_lan_behind_the_server_passes_every_check(lab: Lab):
    ctx = lab.context(targets=(HOST,))
    with dns_responder(lab.lan, DNS) as queries:
        start = trio.current_time()
        async with TunnelBroker() as broker:
            report = await run_checks(NETWORK_CHECKS, replace(ctx, tunnel=broker))
        elapsed = trio.current_time() - start
    results = {r.id: r for r in report.checks}

    assert {i: r.status for i, r in results.items()} == {c.id: "ok" for c in NETWORK_CHECKS}, \
        {i: (r.summary, r.explanation) for i, r in results.items()}
    # tunnel.traffic, tunnel.dns_reachable, tunnel.beyond and mtu.path each lease the session
    assert broker.handshakes == 1 and broker.leases == 4
    assert elapsed < 15
    assert queries  # the query really went through the tunnel to the LAN
    dns = results["tunnel.dns_reachable"].evidence["servers"]
    assert dns == [{**dns[0], "address": DNS, "answered": True, "rcode": "NXDOMAIN"}]
    hosts = {h["address"]: h for h in results["tunnel.beyond"].evidence["hosts"]}
    assert hosts[HOST]["answered_by"] == "echo"
    assert hosts[HOST]["routed_by"] == "route 198.18.20.0/24"
    assert hosts[DNS]["answered_by"] == "tunnel.dns_reachable"


async def test_redirect_gateway_probes_the_pushed_dns_server_beyond_the_server(lab: Lab):
    ctx = lab.context(redirect=True)
    with dns_responder(lab.lan, DNS):
        result = await _check("tunnel.beyond", ctx)

    assert result.status == "ok", (result.summary, result.explanation)
    [host] = result.evidence["hosts"]
    assert host == {**host, "address": DNS, "routed_by": "redirect-gateway", "answered": True}
    assert result.evidence["redirect_gateway"] == ["def1"]


async def test_server_without_ip_forward_is_named_with_the_sysctl_fix(lab: Lab):
    lab.server.sysctl("net.ipv4.ip_forward", "0")
    try:
        with dns_responder(lab.lan, DNS):
            ctx = lab.context(targets=(HOST,))
            beyond = await _check("tunnel.beyond", ctx)
            dns = await _check("tunnel.dns_reachable", ctx)
    finally:
        lab.server.enable_forwarding()

    assert beyond.status == "fail", beyond.summary
    assert beyond.evidence["state"] == "server_not_forwarding"
    host = beyond.evidence["hosts"][0]
    assert host["ttl1_time_exceeded_from"] is None
    assert "does not forward" in beyond.summary
    assert "net.ipv4.ip_forward" in beyond.explanation
    assert "sysctl -w net.ipv4.ip_forward=1" in beyond.fix
    assert "/etc/sysctl.d/" in beyond.fix
    assert dns.status == "fail"
    assert dns.evidence["servers"][0]["answered"] is False


async def test_forwarding_without_masquerade_or_route_back_names_both(lab: Lab):
    lab.no_masquerade()
    try:
        with dns_responder(lab.lan, DNS) as queries:
            beyond = await _check("tunnel.beyond", lab.context(targets=(HOST,)))
    finally:
        lab.masquerade()

    assert beyond.status == "fail", beyond.summary
    assert beyond.evidence["state"] == "no_return_path"
    host = next(h for h in beyond.evidence["hosts"] if h["address"] == HOST)
    assert host["ttl1_time_exceeded_from"] == "198.18.8.1"  # the server forwards
    assert queries  # the DNS query reached the LAN: only the way back is missing
    assert "MASQUERADE" in beyond.explanation and "route back" in beyond.explanation
    assert "tcpdump" in beyond.explanation  # what tells the causes apart
    assert "masquerade" in beyond.fix and "198.18.8.0/24" in beyond.fix
    assert "ip route add 198.18.8.0/24 via" in beyond.fix


async def test_far_host_without_its_address_is_reported_down_by_the_server(lab: Lab):
    lab.lan.ip("addr", "del", f"{HOST}/24", "dev", lab.host_if)
    lab.server.ip("neigh", "flush", "dev", lab.lan_if)
    try:
        with dns_responder(lab.lan, DNS):
            beyond = await _check("tunnel.beyond", lab.context(targets=(HOST,)))
    finally:
        lab.lan.add_address(lab.host_if, f"{HOST}/24")

    assert beyond.status == "warn", beyond.summary
    assert beyond.evidence["state"] == "host_down"
    host = next(h for h in beyond.evidence["hosts"] if h["address"] == HOST)
    # Linux answers from the address on the LAN where ARP failed: the server's LAN address.
    assert host["icmp"][0] == {"type": "unreachable", "code": "host_unreachable",
                               "from": SERVER_LAN}
    assert f"the router {SERVER_LAN}" in beyond.summary
    assert "ARP" in beyond.explanation and "VPN itself works" in beyond.explanation
    assert "ip_forward" not in beyond.fix and "masquerade" not in beyond.fix


async def test_far_host_dropping_everything_is_silent_while_the_return_path_works(lab: Lab):
    lab.lan.nft("table inet doctordrop {\n chain input {\n"
                "  type filter hook input priority 0; policy accept;\n"
                f"  ip daddr {HOST} drop\n }}\n}}\n")
    try:
        with dns_responder(lab.lan, DNS):
            beyond = await _check("tunnel.beyond", lab.context(targets=(HOST,)))
    finally:
        lab.lan.run(["nft", "delete", "table", "inet", "doctordrop"])

    assert beyond.status == "warn", beyond.summary
    assert beyond.evidence["state"] == "host_silent"
    assert f"{DNS} (pushed DNS server) answered" in beyond.explanation
    assert "down" in beyond.explanation and "drops ICMP echo" in beyond.explanation
    assert "masquerade" not in beyond.fix.lower()


async def test_pushed_dns_server_not_running_is_reported_with_port_unreachable(lab: Lab):
    dns = await _check("tunnel.dns_reachable", lab.context())

    assert dns.status == "fail", dns.summary
    assert dns.evidence["servers"][0]["icmp"] == "port_unreachable"
    assert dns.evidence["servers"][0]["icmp_from"] == DNS
    assert f"no DNS server answers at {DNS} port 53" == dns.summary
    assert "no DNS server listens" in dns.explanation and "reject" in dns.explanation
    beyond = await _check("tunnel.beyond", lab.context())
    assert beyond.status == "ok"  # the host is there: the path works, the service does not


async def _echo_answered(t: Tunnel, seq: int) -> bool:
    gateway = t.gateway
    assert t.local_ipv4 is not None and gateway is not None
    await t.send(echo_request(t.local_ipv4, gateway, 0x5151, seq))
    reply = await t.receive(lambda p: p if (parse_inner(p) or NO_ANSWER).kind == "echo_reply"
                            else None, trio.current_time() + 1.5)
    return reply is not None


async def test_a_second_session_with_the_same_certificate_drops_the_first(lab: Lab):
    # Why the doctor shares one session (docs/doctor.md): openvpn without duplicate-cn keeps
    # one session per common name (multi.c, multi_delete_dup()).
    ctx = lab.context()
    async with TunnelBroker() as first:
        async with first.lease(ctx) as t:
            assert await _echo_answered(t, 1)
        async with TunnelBroker() as second, second.lease(ctx) as t2:
            assert await _echo_answered(t2, 2)
        async with first.lease(ctx) as t:
            assert not await _echo_answered(t, 3)
    assert "will cause previous active sessions by this client to be dropped" in lab.log()


def _doctor_cli(netns: Netns, argv: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """Run 'trivpn doctor ARGV --json' as the CLI does, probing from ``netns``: (exit code,
    the JSON report)."""
    from trivpn.commands import doctor

    monkeypatch.setenv(doctor.NETNS_ENV, netns.name)
    parser = argparse.ArgumentParser()
    doctor.register(parser.add_subparsers())
    args = parser.parse_args(["doctor", *argv, "--json"])
    capsys.readouterr()
    code = args.handler(args)
    return code, json.loads(capsys.readouterr().out)


def test_doctor_cli_probes_each_target_through_one_tunnel_session(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    conf = lab.context().config_path
    assert conf is not None
    handshakes = lab.servers[0].text().count("Peer Connection Initiated")
    with dns_responder(lab.lan, DNS):
        code, report = _doctor_cli(lab.client, [str(conf), "--target", HOST, "--target",
                                                SERVER_LAN, "--check", "tunnel.beyond",
                                                "tunnel.traffic"], monkeypatch, capsys)

    by_id = {c["id"]: c for c in report["checks"]}
    assert code == 0, by_id
    assert by_id["tunnel.traffic"]["status"] == "ok"
    hosts = {h["address"]: h for h in by_id["tunnel.beyond"]["evidence"]["hosts"]}
    assert hosts[HOST]["origin"] == f"--target {HOST}" and hosts[HOST]["answered"]
    assert hosts[SERVER_LAN]["answered"]
    # tls.handshake's handshake is the shared session's: one per doctor run, not one per check
    assert lab.servers[0].text().count("Peer Connection Initiated") == handshakes + 1


async def test_forward_chain_dropping_everything_is_among_the_named_causes(lab: Lab):
    # Linux checks the TTL before the FORWARD hook: the TTL-1 probe still gets its answer.
    lab.server.nft("table inet doctorfwd {\n chain fchain {\n"
                   "  type filter hook forward priority 0; policy drop;\n }\n}\n")
    try:
        beyond = await _check("tunnel.beyond", lab.context(targets=(HOST,)))
    finally:
        lab.server.run(["nft", "delete", "table", "inet", "doctorfwd"])

    assert beyond.status == "fail", beyond.summary
    assert beyond.evidence["state"] == "no_return_path"
    assert beyond.evidence["hosts"][0]["ttl1_time_exceeded_from"] == "198.18.8.1"
    assert "FORWARD chain" in beyond.explanation and "iptables -L FORWARD" in beyond.fix


async def test_route_back_on_the_lan_instead_of_masquerade_passes(lab: Lab):
    lab.no_masquerade()
    lab.lan.add_route("198.18.8.0/23", via=SERVER_LAN)
    try:
        with dns_responder(lab.lan, DNS):
            beyond = await _check("tunnel.beyond", lab.context(targets=(HOST,)))
    finally:
        lab.lan.ip("route", "del", "198.18.8.0/23")
        lab.masquerade()

    assert beyond.status == "ok", (beyond.summary, beyond.explanation)
    assert all(h["answered"] for h in beyond.evidence["hosts"])


async def test_dns_server_refusing_the_vpn_subnet_warns(lab: Lab):
    with dns_responder(lab.lan, DNS, rcode=5):
        dns = await _check("tunnel.dns_reachable", lab.context())

    assert dns.status == "warn", dns.summary
    assert dns.evidence["servers"][0]["rcode"] == "REFUSED"
    assert "198.18.8.0/24" in dns.explanation and "allow-query" in dns.fix


async def test_ipv6_lan_behind_the_server_answers_through_the_tunnel(lab: Lab):
    ctx = lab.context(port=IPV6_PORT, targets=(HOST6,))
    with dns_responder(lab.lan, DNS6) as queries:
        async with TunnelBroker() as broker:
            report = await run_checks(NETWORK_CHECKS, replace(ctx, tunnel=broker))
    results = {r.id: r for r in report.checks}

    assert {i: r.status for i, r in results.items()} == {c.id: "ok" for c in NETWORK_CHECKS}, \
        {i: (r.summary, r.explanation) for i, r in results.items()}
    assert queries
    assert results["tunnel.dns_reachable"].evidence["servers"][0]["address"] == DNS6
    hosts = {h["address"]: h for h in results["tunnel.beyond"].evidence["hosts"]}
    assert hosts[HOST6]["answered_by"] == "echo"
    assert hosts[HOST6]["routed_by"] == "route 2001:2:0:20::/64"


async def test_server_without_ipv6_forwarding_is_named_with_the_ipv6_sysctl(lab: Lab):
    lab.server.sysctl("net.ipv6.conf.all.forwarding", "0")
    try:
        beyond = await _check("tunnel.beyond", lab.context(port=IPV6_PORT, targets=(HOST6,)))
    finally:
        lab.server.sysctl("net.ipv6.conf.all.forwarding", "1")

    assert beyond.status == "fail", beyond.summary
    assert beyond.evidence["state"] == "server_not_forwarding"
    assert "hop limit 1" in beyond.summary
    assert "sysctl -w net.ipv6.conf.all.forwarding=1" in beyond.fix


async def test_ipv6_forwarding_without_masquerade_names_the_ip6_rules(lab: Lab):
    lab.no_masquerade()
    try:
        beyond = await _check("tunnel.beyond", lab.context(port=IPV6_PORT, targets=(HOST6,)))
    finally:
        lab.masquerade()

    assert beyond.status == "fail", beyond.summary
    assert beyond.evidence["state"] == "no_return_path"
    assert "ip6 saddr 2001:2:0:8::/64" in beyond.fix and "ip6tables" in beyond.fix
    assert "ip -6 route add 2001:2:0:8::/64 via" in beyond.fix


async def test_server_without_lan_or_redirect_gateway_skips_and_never_warns(tmp_path: Path):
    from tests.diagnostics.scenariokit import scenario

    require_netns()
    require_openvpn()
    with scenario(tmp_path) as sc:
        proc = sc.start_openvpn(server_lines("tls-crypt"))
        assert proc.wait_for("Initialization Sequence Completed"), proc.text()
        ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
        async with TunnelBroker() as broker:
            report = await run_checks(NETWORK_CHECKS, replace(ctx, tunnel=broker))
    results = {r.id: r for r in report.checks}

    assert {i: r.status for i, r in results.items()} == {
        **{c.id: "ok" for c in NETWORK_CHECKS},
        "tunnel.dns_reachable": "skip", "tunnel.beyond": "skip"}, \
        {i: r.summary for i, r in results.items()}
    assert "no DNS server pushed" in results["tunnel.dns_reachable"].summary
    assert "--target" in results["tunnel.beyond"].summary


def test_healthy_doctor_cli_run_against_a_server_with_a_lan_gives_no_warning(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """'trivpn doctor client.conf': every registered client check, against openvpn 2.6 with
    redirect-gateway def1, a route to the LAN behind it and a DNS server in that LAN."""
    from trivpn.diagnostics.registry import all_checks

    # As a Debian openvpn profile applies the pushed DNS (this host has neither
    # systemd-resolved nor resolvconf for trivpn's native DNS: dns.tunnel_resolver would warn).
    conf = lab.context(port=FULL_PORT, extra=APPLY_DNS).config_path
    assert conf is not None
    server = lab.servers[3]
    handshakes = server.text().count("Peer Connection Initiated")
    with dns_responder(lab.lan, DNS) as queries:
        start = time.monotonic()
        code, report = _doctor_cli(lab.client, [str(conf)], monkeypatch, capsys)
        elapsed = time.monotonic() - start

    statuses = {c["id"]: c["status"] for c in report["checks"]}
    problems = {c["id"]: (c["summary"], c["explanation"]) for c in report["checks"]
                if c["status"] not in ("ok", "skip")}
    assert (code, report["verdict"], problems) == (0, "ok", {})
    # every registered client check of the default run (opt-in ones run only when named,
    # static-key ones only for 'secret' configs)
    assert set(statuses) == {c.id for c in all_checks() if "client" in c.roles
                             and not c.opt_in and not c.static_only}
    assert elapsed < 15, {c["id"]: c["duration_s"] for c in report["checks"]}
    by_id = {c["id"]: c for c in report["checks"]}
    for check_id in ("tls.handshake", "tunnel.traffic", "tunnel.dns_reachable",
                     "tunnel.beyond", "port.reachable"):
        assert statuses[check_id] == "ok", by_id[check_id]["summary"]
    hosts = {h["routed_by"] for h in by_id["tunnel.beyond"]["evidence"]["hosts"]}
    assert hosts == {"route 198.18.20.0/24"}, hosts
    assert queries  # the DNS query went through the tunnel into the LAN
    # one handshake for the whole run (tls.handshake's session is the one tunnel.* use)
    assert server.text().count("Peer Connection Initiated") == handshakes + 1


def test_healthy_doctor_cli_run_on_the_server_with_a_lan_gives_no_warning(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """'trivpn doctor server.conf' on the server host of the same lab: every server check."""
    from trivpn.diagnostics.registry import all_checks

    start = time.monotonic()
    code, report = _doctor_cli(lab.server, [str(lab.workdir / "full.conf")], monkeypatch,
                               capsys)
    elapsed = time.monotonic() - start

    statuses = {c["id"]: c["status"] for c in report["checks"]}
    problems = {c["id"]: (c["summary"], c["explanation"]) for c in report["checks"]
                if c["status"] not in ("ok", "skip")}
    assert (code, report["role"], report["verdict"], problems) == (0, "server", "ok", {})
    assert set(statuses) == {c.id for c in all_checks() if "server" in c.roles
                             and not c.opt_in}
    assert elapsed < 15
    for check_id in ("server.listen", "server.forwarding", "server.firewall"):
        assert statuses[check_id] == "ok", check_id
