"""route.to_server and route.overlap in namespaces the tests build."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.diagnostics.doctorkit import CLIENT, SERVER, by_id, context, write_config, write_pki
from tests.netns import Netns, NetnsLab
from trivpn.diagnostics.checks_route import CHECKS, pushed_networks
from trivpn.diagnostics.model import CheckResult, DoctorContext, ok

TO_SERVER = by_id(CHECKS, "route.to_server")
OVERLAP = by_id(CHECKS, "route.overlap")
SERVER_IP = "198.19.200.1"


def dns_result(*addresses: str) -> CheckResult:
    return ok("dns.remote", "resolved",
              remotes=[{"host": a, "port": 1194, "proto": "udp", "addresses": [a]}
                       for a in addresses])


@pytest.fixture
def client_ns(netns_lab: NetnsLab) -> Netns:
    """``c`` with two uplinks: veth0 198.18.1.1/24 (router 198.18.1.2) and veth1 198.18.2.1/24
    (router 198.18.2.2)."""
    c, r1, r2 = netns_lab.add("c"), netns_lab.add("r"), netns_lab.add("r")
    netns_lab.veth(c, r1, "198.18.1.1/24", "198.18.1.2/24")
    netns_lab.veth(c, r2, "198.18.2.1/24", "198.18.2.2/24")
    return c


def ctx_for(tmp_path: Path, ns: Netns, text: str = CLIENT,
            results: dict[str, CheckResult] | None = None) -> DoctorContext:
    write_pki(tmp_path)
    text = text.replace("remote 198.18.0.2", f"remote {SERVER_IP}")
    return context(write_config(tmp_path, text), netns=ns.name,
                   results=results if results is not None else
                   {"dns.remote": dns_result(SERVER_IP)})


async def test_single_default_route_is_ok_with_interface_source_gateway(
        client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "ok"
    assert result.evidence["routes_to_server"] == [{
        "address": SERVER_IP, "interface": "veth0", "gateway": "198.18.1.2",
        "source": "198.18.1.1", "table": 254, "type": "unicast"}]


async def test_two_default_routes_warn_and_list_both(client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2", "metric", "100")
    client_ns.ip("route", "add", "default", "via", "198.18.2.2", "metric", "200")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "warn"
    assert len(result.evidence["default_routes"]) == 2
    assert any("198.18.2.2" in r for r in result.evidence["default_routes"])
    assert f"ip route add {SERVER_IP}/32 via 198.18.1.2 dev veth0" in result.fix


async def test_ecmp_default_route_warns_with_nexthops(client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "nexthop", "via", "198.18.1.2", "nexthop", "via",
                 "198.18.2.2")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "warn"
    (route,) = result.evidence["default_routes"]
    assert "nexthop via 198.18.1.2" in route and "nexthop via 198.18.2.2" in route


async def test_specific_route_to_server_avoids_the_multi_default_warning(
        client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2", "metric", "100")
    client_ns.ip("route", "add", "default", "via", "198.18.2.2", "metric", "200")
    client_ns.ip("route", "add", f"{SERVER_IP}/32", "via", "198.18.2.2")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "ok"
    assert result.evidence["routes_to_server"][0]["interface"] == "veth1"


async def test_no_route_to_server_fails(client_ns: Netns, tmp_path: Path) -> None:
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "fail"
    assert result.evidence["routes_to_server"][0]["error"] == "no route"


async def test_route_into_a_tun_device_fails(client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2")
    client_ns.ip("tuntap", "add", "dev", "tun7", "mode", "tun")
    client_ns.ip("link", "set", "tun7", "up")
    client_ns.ip("route", "add", f"{SERVER_IP}/32", "dev", "tun7")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "fail"
    assert "tun7" in result.summary
    assert "loop" in result.explanation


async def test_policy_rule_to_another_table_warns(client_ns: Netns, tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2")
    client_ns.ip("route", "add", "default", "via", "198.18.2.2", "table", "100")
    client_ns.ip("rule", "add", "to", f"{SERVER_IP}/32", "lookup", "100", "priority", "1000")
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns))
    assert result.status == "warn"
    assert result.evidence["routes_to_server"][0]["table"] == 100
    assert result.evidence["policy_rules"] == [
        {"priority": 1000, "table": 100, "to": f"{SERVER_IP}/32"}]
    assert "ip rule show" in result.fix


async def test_configured_route_covering_the_server_fails(client_ns: Netns,
                                                          tmp_path: Path) -> None:
    client_ns.ip("route", "add", "default", "via", "198.18.1.2")
    text = CLIENT + "route 198.19.200.0 255.255.255.0\n"
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns, text))
    assert result.status == "fail"
    assert "covers the server address" in result.summary
    assert "net_gateway" in result.fix


async def test_redirect_gateway_without_default_route_warns(client_ns: Netns,
                                                            tmp_path: Path) -> None:
    client_ns.ip("route", "add", f"{SERVER_IP}/32", "via", "198.18.1.2")
    text = CLIENT + "redirect-gateway def1\n"
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns, text))
    assert result.status == "warn"
    assert "redirect-gateway" in result.summary


async def test_to_server_skips_without_resolved_addresses(client_ns: Netns,
                                                          tmp_path: Path) -> None:
    result = await TO_SERVER.run(ctx_for(tmp_path, client_ns, results={}))
    assert result.status == "skip"


# --- route.overlap ----------------------------------------------------------------------------

async def test_configured_route_overlapping_a_local_network_fails(
        client_ns: Netns, tmp_path: Path) -> None:
    text = CLIENT + "route 198.18.2.0 255.255.255.0\n"
    result = await OVERLAP.run(ctx_for(tmp_path, client_ns, text))
    assert result.status == "fail"
    (overlap,) = result.evidence["overlaps"]
    assert overlap["vpn_network"] == "198.18.2.0/24"
    assert overlap["local_network"] == "198.18.2.0/24"
    assert overlap["interface"] == "veth1"
    assert "test.conf:12" in overlap["from"]


async def test_pushed_route_overlapping_a_local_network_fails(client_ns: Netns,
                                                              tmp_path: Path) -> None:
    handshake = ok("tls.handshake", "done",
                   push_reply="PUSH_REPLY,route 198.18.1.0 255.255.255.0,topology subnet,"
                              "ifconfig 198.19.9.2 255.255.255.0")
    result = await OVERLAP.run(ctx_for(tmp_path, client_ns, results={"tls.handshake":
                                                                     handshake}))
    assert result.status == "fail"
    (overlap,) = result.evidence["overlaps"]
    assert overlap["vpn_network"] == "198.18.1.0/24"
    assert overlap["interface"] == "veth0"
    assert "push" in result.fix


async def test_wider_pushed_route_around_a_local_network_warns(client_ns: Netns,
                                                               tmp_path: Path) -> None:
    handshake = ok("tls.handshake", "done", pushed_routes=["198.18.0.0 255.254.0.0"])
    result = await OVERLAP.run(ctx_for(tmp_path, client_ns, results={"tls.handshake":
                                                                     handshake}))
    assert result.status == "warn"
    assert len(result.evidence["overlaps"]) == 2


async def test_server_pool_overlapping_a_local_network_fails(netns_lab: NetnsLab,
                                                             tmp_path: Path) -> None:
    s, peer = netns_lab.add("s"), netns_lab.add("p")
    netns_lab.veth(s, peer, "198.19.0.10/24", "198.19.0.20/24")
    write_pki(tmp_path)
    result = await OVERLAP.run(context(write_config(tmp_path, SERVER), netns=s.name))
    assert result.status == "fail"
    assert result.evidence["overlaps"][0]["from"].startswith("server pool 'server 198.19.0.0")
    assert "unused range" in result.fix


async def test_no_overlap_is_ok(client_ns: Netns, tmp_path: Path) -> None:
    handshake = ok("tls.handshake", "done", pushed_routes=["route 198.19.50.0 255.255.255.0"])
    result = await OVERLAP.run(ctx_for(tmp_path, client_ns, results={"tls.handshake":
                                                                     handshake}))
    assert result.status == "ok"
    assert "198.18.1.0/24 dev veth0" in result.evidence["local_networks"]


def test_pushed_networks_reads_routes_and_subnet_ifconfig() -> None:
    nets = pushed_networks("PUSH_REPLY,route 198.18.5.0 255.255.255.0,route 198.18.6.1,"
                           "ifconfig 198.19.0.2 255.255.255.0,ifconfig 198.19.1.6 198.19.1.5")
    assert [str(n) for n in nets] == ["198.18.5.0/24", "198.18.6.1/32", "198.19.0.0/24"]
