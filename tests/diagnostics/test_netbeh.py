"""``netbeh.*`` (network behaviour) against real ``openvpn`` 2.6 servers in namespaces, with the
fault made for real: a NAT router whose conntrack forgets idle UDP flows after 3 s, UDP dropped
by nftables while TCP 443 answers, an nftables rule that resets TCP connections whose first
payload is an OpenVPN hard reset, and a remote name with a dead address.

Topology: client (198.18.1.2) — router (198.18.1.1 | 198.18.0.2, masquerade) — server
(198.18.0.1, more addresses per test)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import client_lines, server_lines
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.netns import Netns, NetnsLab
from trivpn.config import load_config
from trivpn.diagnostics import checks_dns, checks_netbeh, checks_port
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks

pytestmark = pytest.mark.integration

SERVER_IP, ROUTER_WAN = "198.18.0.1", "198.18.0.2"
ROUTER_LAN, CLIENT_IP = "198.18.1.1", "198.18.1.2"
DEAD_IP = "198.18.0.9"  # a second server address where every packet is dropped
CHECKS: tuple[Check, ...] = (*checks_dns.CHECKS, *checks_port.CHECKS, *checks_netbeh.CHECKS)


@dataclass
class Lab:
    lab: NetnsLab
    workdir: Path
    client: Netns
    router: Netns
    server: Netns
    wan_if: str

    def start(self, lines: list[str], name: str = "server") -> OpenVpnProcess:
        proc = start_openvpn(self.server, self.workdir, name, lines)
        assert proc.wait_for("Initialization Sequence Completed"), proc.text()
        return proc

    def context(self, lines: list[str], name: str = "client.conf") -> DoctorContext:
        path = self.workdir / name
        path.write_text("\n".join(lines) + "\n")
        options = load_config(path)
        return DoctorContext(path, options, options.role, 10.0, {}, netns=self.client.name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    with NetnsLab() as netns:
        server, router, client = netns.add("srv"), netns.add("rtr"), netns.add("cli")
        wan = netns.veth(server, router, f"{SERVER_IP}/24", f"{ROUTER_WAN}/24")
        netns.veth(router, client, f"{ROUTER_LAN}/24", f"{CLIENT_IP}/24")
        client.add_route("default", via=ROUTER_LAN)
        router.enable_forwarding()
        write_pki(tmp_path)
        yield Lab(netns, tmp_path, client, router, server, wan.b_ifname)


def _masquerade(lab: Lab, udp_timeout: int, stream_timeout: int | None = None) -> None:
    # no IPv6 on the server's tun: its router solicitations would be extra server packets
    lab.server.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    lab.router.nft("table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
                   f"  oifname \"{lab.wan_if}\" masquerade\n }}\n}}\n")
    lab.router.sysctl("net.netfilter.nf_conntrack_udp_timeout", str(udp_timeout))
    lab.router.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream",
                      str(stream_timeout or udp_timeout))


def _openvpn_client(lab: Lab, lines: list[str], name: str, until: str,
                    timeout: float = 12.0) -> str:
    """Run the real openvpn client in the client namespace until its log shows ``until``."""
    conf = lab.workdir / f"{name}.conf"
    conf.write_text("\n".join([*lines, "connect-retry 1", "verb 3"]) + "\n")
    log = lab.workdir / f"{name}.log"
    lab.client.spawn(["openvpn", "--cd", str(lab.workdir), "--config", conf.name,
                      "--log", str(log), "--ifconfig-noexec", "--route-noexec"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and until not in (log.read_text() if log.exists()
                                                         else ""):
        time.sleep(0.1)
    return log.read_text() if log.exists() else ""


async def _report(ctx: DoctorContext, only: list[str] | None = None) -> dict[str, CheckResult]:
    report = await run_checks(CHECKS, ctx, only=only)
    return {r.id: r for r in report.checks}


async def test_nat_binding_timeout_shorter_than_the_pushed_ping_is_measured(lab: Lab) -> None:
    _masquerade(lab, udp_timeout=3)
    lab.start(server_lines(extra=["keepalive 6 60"]))
    ctx = lab.context(client_lines())
    start = trio.current_time()
    result = await checks_netbeh.run_nat_timeout(ctx, max_wait=24.0)
    elapsed = trio.current_time() - start
    assert result.status == "fail", result
    assert (result.evidence["pushed_ping"], result.evidence["pushed_ping_restart"]) == (6, 60)
    lo, hi = result.evidence["survived_idle_s"], result.evidence["lost_after_idle_s"]
    assert hi is not None and hi >= 2.7, result.evidence["rounds"]
    assert lo is not None and lo <= 3.3, result.evidence["rounds"]
    assert hi - lo <= 2.5, result.evidence["rounds"]
    assert f"between {lo:.1f} and {hi:.1f} s" in result.summary
    assert "keepalive" in result.fix and "server config" in result.fix
    every = int(result.fix.split("'keepalive ")[1].split()[0])
    assert every < 3
    assert elapsed < 28


def test_openvpn_client_whose_server_pings_are_lost_restarts_on_ping_restart(lab: Lab) -> None:
    """The consequence netbeh.nat_timeout names, with openvpn 2.6 behind the same NAT (the
    client's own pings filtered out, so only the server's pings could keep the binding)."""
    _masquerade(lab, udp_timeout=1)
    lab.start(server_lines(extra=["keepalive 2 5"]))
    text = _openvpn_client(lab, [*client_lines(), 'pull-filter ignore "ping "'], "pinged",
                           "Inactivity timeout (--ping-restart), restarting")
    assert "Initialization Sequence Completed" in text
    assert "Inactivity timeout (--ping-restart), restarting" in text, text


def test_openvpn_client_ping_is_replaced_by_the_pushed_one(lab: Lab) -> None:
    """netbeh.keepalive's "unless the server pushes a 'ping' of its own (which replaces it)",
    checked against openvpn 2.6."""
    _route_back(lab)
    lab.start(server_lines())  # keepalive 2 10: pushes ping 2, ping-restart 10
    text = _openvpn_client(lab, [*client_lines(), "keepalive 60 300"], "replaced",
                           "Timers:")
    assert "Timers: ping 2, ping-restart 10" in text, text


def test_openvpn_server_without_keepalive_pushes_no_ping(lab: Lab) -> None:
    """netbeh.keepalive's "the server pushes no 'ping' to its clients", against openvpn 2.6."""
    _route_back(lab)
    lab.start([line for line in server_lines() if not line.startswith("keepalive")])
    text = _openvpn_client(lab, client_lines(), "nopush", "Initialization Sequence Completed")
    reply = next(line for line in text.splitlines() if "PUSH_REPLY" in line)
    assert "ping" not in reply, reply


async def test_nat_binding_that_outlives_the_ping_interval_is_ok(lab: Lab) -> None:
    _masquerade(lab, udp_timeout=30)
    lab.start(server_lines(extra=["keepalive 3 60"]))
    ctx = lab.context(client_lines())
    result = await checks_netbeh.run_nat_timeout(ctx, max_wait=14.0)
    assert result.status == "ok", result
    assert result.evidence["survived_idle_s"] >= 2.5


async def test_nat_with_a_short_one_way_timeout_but_a_long_stream_timeout_is_ok(
        lab: Lab) -> None:
    """Linux conntrack forgets a flow that has had replies for less than 2 s after
    nf_conntrack_udp_timeout, a longer-lived one after _stream (30 and 120 s by default): the
    probe's binding must be judged like the one of a tunnel in use."""
    _masquerade(lab, udp_timeout=2, stream_timeout=30)
    lab.start(server_lines(extra=["keepalive 5 60"]))
    result = await checks_netbeh.run_nat_timeout(lab.context(client_lines()), max_wait=15.0)
    assert result.status == "ok", result.evidence.get("rounds")
    assert result.evidence["survived_idle_s"] >= 4.5


async def test_nat_timeout_is_opt_in_and_runs_when_named(lab: Lab) -> None:
    _masquerade(lab, udp_timeout=30)
    lab.start(server_lines(extra=["keepalive 2 60"]))
    ctx = lab.context(client_lines())
    default = await _report(ctx)
    assert "netbeh.nat_timeout" not in default
    statuses = {c: r.status for c, r in default.items()}
    assert all(s in ("ok", "skip") for s in statuses.values()), statuses
    named = await _report(ctx, only=["netbeh.nat_timeout"])
    assert named["netbeh.nat_timeout"].status == "ok", named["netbeh.nat_timeout"]


def _route_back(lab: Lab) -> None:
    lab.server.add_route("198.18.1.0/24", via=ROUTER_WAN)


def _tcp_server_lines(port: int = 443) -> list[str]:
    lines = [line for line in server_lines(proto="tcp-server")
             if not line.startswith(("port ", "server "))]
    return [*lines, f"port {port}", "server 198.18.9.0 255.255.255.0"]


async def test_udp_filtered_while_tcp_443_answers_suggests_tcp(lab: Lab) -> None:
    _route_back(lab)
    lab.start(server_lines())
    lab.start(_tcp_server_lines(), name="tcp443")
    lab.server.nft("table inet block {\n chain input {\n  type filter hook input priority 0;\n"
                   "  udp dport 1194 drop\n }\n}\n")
    ctx = lab.context(client_lines())
    async with trio.open_nursery() as nursery:  # the default run, and the check run alone
        together: dict[str, dict[str, CheckResult]] = {}

        async def run(key: str, only: list[str] | None) -> None:
            together[key] = await _report(ctx, only)

        nursery.start_soon(run, "default", None)
        nursery.start_soon(run, "alone", ["netbeh.udp_blocked"])
    results = together["default"]
    assert results["port.reachable"].evidence["state"] == "filtered"
    assert "port.reachable" not in together["alone"]
    alone = together["alone"]["netbeh.udp_blocked"]
    assert alone.status == "warn" and "198.18.0.1:443/tcp" in alone.summary, alone
    got = results["netbeh.udp_blocked"]
    assert got.status == "warn", got
    assert "198.18.0.1:443/tcp" in got.summary
    assert "'proto tcp-client'" in got.fix and f"'remote {SERVER_IP} 443 tcp'" in got.fix
    probes = {p["openvpn_reset"]["sent_to"]: p["openvpn_reset"] for p in
              got.evidence["tcp_probes"]}
    assert probes["198.18.0.1:443/tcp"]["reply_kind"] == "openvpn_reset"
    assert probes["198.18.0.1:1194/tcp"]["connect"] == "refused"
    # the fallback the fix offers, with openvpn 2.6: a TCP remote line after the UDP one
    text = _openvpn_client(lab, [*client_lines(), f"remote {SERVER_IP} 443 tcp",
                                 "hand-window 3"], "fallback",
                           "Initialization Sequence Completed")
    assert "TLS key negotiation failed to occur within 3 seconds" in text
    assert f"TCP connection established with [AF_INET]{SERVER_IP}:443" in text
    assert "Initialization Sequence Completed" in text, text


DPI_RULES = """table inet dpi {
 chain input {
  type filter hook input priority -10;
  tcp dport 443 @th,272,8 0x38 reject with tcp reset
 }
}
"""
# TCP header with timestamps: 32 bytes = 256 bits; then OpenVPN's 2-byte length; then the
# opcode byte of P_CONTROL_HARD_RESET_CLIENT_V2 (7 << 3 | key id 0 = 0x38).


async def test_tcp_reset_right_after_the_openvpn_reset_is_named_dpi(lab: Lab) -> None:
    _route_back(lab)
    lab.start(_tcp_server_lines(), name="tcp443")
    lab.server.nft(DPI_RULES)
    results = await _report(lab.context(client_lines(proto="tcp-client", port=443)))
    got = results["netbeh.first_packet_reset"]
    assert got.status == "fail", got
    probe = got.evidence["probes"][0]
    assert probe["openvpn_reset"]["outcome"] == "reset"
    assert probe["openvpn_reset"]["after_first_packet_ms"] < 500
    assert probe["control"]["outcome"] in ("silent", "answered", "closed"), probe
    assert "deep packet inspection" in got.explanation
    assert "tls-crypt" in got.fix and "443" in got.fix
    # the config uses tls-crypt: the opcode byte the rule matches is still in clear
    assert "already uses tls-crypt" in got.fix
    # what the explanation says openvpn 2.6 does
    text = _openvpn_client(lab, client_lines(proto="tcp-client", port=443), "dpi",
                           "Connection reset, restarting", timeout=5)
    assert "Connection reset, restarting" in text, text


async def test_healthy_tcp_remote_has_no_first_packet_reset(lab: Lab) -> None:
    _route_back(lab)
    lab.start(_tcp_server_lines(), name="tcp443")
    results = await _report(lab.context(client_lines(proto="tcp-client", port=443)))
    assert results["netbeh.first_packet_reset"].status == "ok", results


MULTI_NAME = "vpn-multi.test"


@pytest.fixture
def multi(lab: Lab) -> Iterator[Lab]:
    """The server also has DEAD_IP, where every packet is dropped; MULTI_NAME resolves to
    DEAD_IP first, then SERVER_IP, in the client namespace's hosts file (which 'ip netns exec'
    puts over /etc/hosts for the programs it starts)."""
    _route_back(lab)
    lab.server.ip("addr", "add", f"{DEAD_IP}/24", "dev", "veth0")
    lab.server.nft("table inet dead {\n chain input {\n  type filter hook input priority 0;\n"
                   f"  ip daddr {DEAD_IP} drop\n }}\n}}\n")
    etc = Path("/etc/netns") / lab.client.name
    etc.mkdir(parents=True)
    try:
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{DEAD_IP} {MULTI_NAME}\n"
                                   f"{SERVER_IP} {MULTI_NAME}\n")
        yield lab
    finally:
        shutil.rmtree(etc, ignore_errors=True)


TRIES_NEXT = {
    "udp": (["hand-window 3"], [
        f"UDPv4 link remote: [AF_INET]{DEAD_IP}:1194",
        "TLS key negotiation failed to occur within 3 seconds",
        "SIGUSR1[soft,tls-error] received, process restarting",
        f"UDPv4 link remote: [AF_INET]{SERVER_IP}:1194",
        "Initialization Sequence Completed"]),
    "tcp": (["connect-timeout 3"], [
        f"Attempting to establish TCP connection with [AF_INET]{DEAD_IP}:443",
        f"TCP: connect to [AF_INET]{DEAD_IP}:443 failed: Connection timed out",
        "SIGUSR1[connection failed(soft),connection-failed] received, process restarting",
        f"TCP connection established with [AF_INET]{SERVER_IP}:443",
        "Initialization Sequence Completed"]),
}


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_openvpn_tries_the_next_address_of_a_name_after_the_first_times_out(
        multi: Lab, proto: str) -> None:
    """What netbeh.remote_addresses says OpenVPN does (the order, the messages, the timer
    that ends an attempt), checked against openvpn 2.6."""
    if proto == "udp":
        multi.start(server_lines(local=None))
        lines = client_lines(remote=MULTI_NAME)
    else:
        multi.start([line for line in _tcp_server_lines() if not line.startswith("local ")])
        lines = client_lines(remote=MULTI_NAME, port=443, proto="tcp-client")
    extra, order = TRIES_NEXT[proto]
    conf = multi.workdir / "ovpn-client.conf"
    conf.write_text("\n".join([*lines, *extra, "connect-retry 1", "verb 3"]) + "\n")
    log = multi.workdir / "ovpn-client.log"
    multi.client.spawn(["openvpn", "--cd", str(multi.workdir), "--config", conf.name,
                        "--log", str(log), "--ifconfig-noexec", "--route-noexec"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "Initialization Sequence Completed" not in (
            log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    text = log.read_text()
    at = [text.find(line) for line in order]
    assert -1 not in at and at == sorted(at), text


def _doctor_remote_addresses(lab: Lab) -> dict[str, Any]:
    """``trivpn doctor --check netbeh.remote_addresses`` run inside the client namespace
    (so that its hosts file applies), as JSON."""
    conf = lab.workdir / "client.conf"
    conf.write_text("\n".join(client_lines(remote=MULTI_NAME)) + "\n")
    done = lab.client.run([sys.executable, "-m", "trivpn", "doctor", str(conf), "--json",
                           "--check", "netbeh.remote_addresses"], check=False, timeout=30)
    report = json.loads(done.stdout)
    got: dict[str, Any] = next(c for c in report["checks"]
                               if c["id"] == "netbeh.remote_addresses")
    return got


def test_remote_name_with_a_dead_address_names_it_and_the_order(multi: Lab) -> None:
    multi.start(server_lines(local=None))
    got = _doctor_remote_addresses(multi)
    assert got["status"] == "warn", got
    states = {a["address"]: a["state"] for a in got["evidence"]["addresses"]}
    assert states == {DEAD_IP: "filtered", SERVER_IP: "open"}
    assert f"{DEAD_IP}:1194/udp filtered" in got["summary"]
    assert "Here the first address fails" in got["explanation"]
    assert f"Remove {DEAD_IP} from the DNS records of {MULTI_NAME}" in got["fix"]
    assert SERVER_IP in got["fix"]


def test_remote_name_with_an_ipv6_address_this_host_cannot_reach_after_a_good_one_is_ok(
        multi: Lab) -> None:
    multi.start(server_lines(local=None))
    (Path("/etc/netns") / multi.client.name / "hosts").write_text(
        f"127.0.0.1 localhost\n{SERVER_IP} {MULTI_NAME}\n2001:2:0:1::1 {MULTI_NAME}\n")
    got = _doctor_remote_addresses(multi)
    assert got["status"] == "ok", got
    assert got["evidence"]["no_route_from_here"] == ["[2001:2:0:1::1]:1194/udp"]
