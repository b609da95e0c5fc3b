"""client-config-dir on the server runtime, in memory (real Server and trivpn Clients over the
memory network, trio's MockClock): files are read at each connect and decide the client's
address, its push list, its internal routes, or its refusal. The real-openvpn interop tests
are tests/interop/test_server_ccd_vs_openvpn.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import SERVER_TUN_IP, ping
from tests.runtime.packets import build_ipv6
from tests.runtime.serverlab import LabClient, ServerLab
from trivpn.runtime.operator import ServerView
from trivpn.runtime.stats import OperatorState

CCD = "client-config-dir ccd\n"


def _ccd(lab: ServerLab, name: str, text: str) -> None:
    directory = lab.directory / "server" / "ccd"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


def _routes(c: LabClient) -> list[str]:
    return [r.destination for r in c.tunnel.plan.routes]


async def _refused(lab: ServerLab, c: LabClient) -> None:
    await lab.wait_for(lambda: bool(lab.client_events("auth_failed")), 30)
    assert not c.tunnel_up()


@pytest.mark.directive("client-config-dir", "ifconfig-push", "push")
async def test_ccd_file_gives_its_client_a_fixed_address_and_extra_pushes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "alice", 'ifconfig-push 198.18.8.50 255.255.255.0\n'
                           'push "route 198.18.40.0 255.255.255.0"\n')
        lab.start_server()
        alice, bob = lab.start_client("alice"), lab.start_client("bob")
        await lab.wait_for(lambda: alice.tunnel_up() and bob.tunnel_up(), 30)
        assert alice.vpn_ip == "198.18.8.50"
        assert "198.18.40.0/24" in _routes(alice)
        assert bob.vpn_ip == "198.18.8.2" and "198.18.40.0/24" not in _routes(bob)
        await lab.client_to_server(alice, 1)
        await lab.server_to_client(alice, 2)
        connected = lab.server_events("peer_connected")
        assert {"198.18.8.50", "198.18.8.2"} == {e["vpn_ip"] for e in connected}
        applied = lab.server_events("ccd_applied")
        assert applied and applied[0]["ifconfig_push"] == "198.18.8.50"


@pytest.mark.directive("client-config-dir")
async def test_default_file_applies_to_clients_without_their_own(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "DEFAULT", 'push "route 198.18.41.0 255.255.255.0"\n')
        lab.start_server()
        bob = lab.start_client("bob")
        await lab.wait_for(bob.tunnel_up, 30)
        assert "198.18.41.0/24" in _routes(bob)


@pytest.mark.directive("disable")
async def test_disable_refuses_the_client_and_serves_the_others(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "mallory", "disable\n")
        lab.start_server()
        mallory = lab.start_client("mallory")
        await _refused(lab, mallory)
        refused = lab.server_events("ccd_refused")
        assert refused and "disabled" in str(refused[0]["reason"])
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)


@pytest.mark.directive("ccd-exclusive")
async def test_ccd_exclusive_refuses_a_client_without_its_own_file(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD + "ccd-exclusive\n") as lab:
        _ccd(lab, "alice", "\n")
        _ccd(lab, "DEFAULT", "\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        bob = lab.start_client("bob")
        await _refused(lab, bob)
        assert "does not exist" in str(lab.server_events("ccd_refused")[0]["reason"])


@pytest.mark.directive("client-config-dir")
async def test_bad_ccd_file_refuses_that_client_naming_file_and_line_and_server_goes_on(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "alice", "iroute 198.18.30.0 255.255.255.0\nifconfig-push nonsense 1\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await _refused(lab, alice)
        reason = str(lab.server_events("ccd_refused")[0]["reason"])
        assert reason.endswith("ccd/alice:2: 'ifconfig-push' expects an IPv4 address, "
                               "got 'nonsense'")
        bob = lab.start_client("bob")
        await lab.wait_for(bob.tunnel_up, 30)


@pytest.mark.directive("push-reset", "push-remove")
async def test_push_reset_and_push_remove_change_what_the_client_receives(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    extra = CCD + ('push "route 198.18.40.0 255.255.255.0"\n'
                   'push "route 198.18.41.0 255.255.255.0"\n')
    async with ServerLab(tmp_path, extra) as lab:
        _ccd(lab, "alice", "push-reset\npush \"topology subnet\"\n"
                           "push \"route 198.18.42.0 255.255.255.0\"\n")
        _ccd(lab, "bob", "push-remove \"route 198.18.40\"\n")
        lab.start_server()
        alice, bob, carol = (lab.start_client(n) for n in ("alice", "bob", "carol"))
        await lab.wait_for(lambda: all(c.tunnel_up() for c in (alice, bob, carol)), 30)
        assert "198.18.42.0/24" in _routes(alice)
        assert not {"198.18.40.0/24", "198.18.41.0/24"} & set(_routes(alice))
        assert "198.18.40.0/24" not in _routes(bob) and "198.18.41.0/24" in _routes(bob)
        assert {"198.18.40.0/24", "198.18.41.0/24"} <= set(_routes(carol))


@pytest.mark.directive("iroute")
async def test_iroute_sends_a_network_to_its_client_and_accepts_its_packets(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "site", "iroute 198.18.30.0 255.255.255.0\n")
        lab.start_server()
        site = lab.start_client("site")
        await lab.wait_for(site.tunnel_up, 30)
        to_lan = ping(1, src=SERVER_TUN_IP, dst="198.18.30.5")
        lab.server_device.device.inject(to_lan)
        with trio.fail_after(5):
            while await site.tunnel.device.delivered() != to_lan:
                pass
        from_lan = ping(2, src="198.18.30.5", dst=SERVER_TUN_IP)
        site.tunnel.device.inject(from_lan)
        with trio.fail_after(5):
            while await lab.server_device.device.delivered() != from_lan:
                pass
        assert lab.server is not None
        routes = ServerView(lab.server, OperatorState()).status(0.0).routes
        assert [(address, row.common_name) for address, row in routes] == [
            (site.vpn_ip, "site"), ("198.18.30.0/24", "site")]


@pytest.mark.directive("ifconfig-push")
async def test_a_fixed_address_another_client_holds_refuses_the_newcomer(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "bob", "ifconfig-push 198.18.8.2 255.255.255.0\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        assert alice.vpn_ip == "198.18.8.2"
        bob = lab.start_client("bob")
        await _refused(lab, bob)
        assert "198.18.8.2" in str(lab.server_events("ccd_refused")[0]["reason"])


DUAL = CCD + "server-ipv6 2001:2:0:8::/64\n"
SERVER6 = "2001:2:0:8::1"


def _addresses6(c: LabClient) -> list[str]:
    return [f"{a.address}/{a.prefixlen}" for a in c.tunnel.plan.addresses if ":" in a.address]


def _ping6(seq: int, src: str, dst: str) -> bytes:
    return build_ipv6(src, dst, 58, b"\x80\x00\x00\x00" + seq.to_bytes(4, "big") + b"x" * 8)


async def _delivered(receive: Callable[[], Awaitable[bytes]], packet: bytes) -> None:
    with trio.fail_after(5):
        while await receive() != packet:
            pass


@pytest.mark.directive("ifconfig-ipv6-push")
async def test_ifconfig_ipv6_push_gives_the_client_its_fixed_ipv6_address_routed_both_ways(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", "ifconfig-ipv6-push 2001:2:0:8::50/64\n")
        lab.start_server()
        alice, bob = lab.start_client("alice"), lab.start_client("bob")
        await lab.wait_for(lambda: alice.tunnel_up() and bob.tunnel_up(), 30)
        assert _addresses6(alice) == ["2001:2:0:8::50/64"]
        assert alice.vpn_ip.startswith("198.18.8.")  # IPv4 still from the pool
        assert _addresses6(bob) in (["2001:2:0:8::1000/64"], ["2001:2:0:8::1001/64"])  # pool
        connected = {e["cn"]: e["vpn_ip6"] for e in lab.server_events("peer_connected")}
        assert connected["alice"] == "2001:2:0:8::50"
        to_alice = _ping6(1, SERVER6, "2001:2:0:8::50")
        lab.server_device.device.inject(to_alice)
        await _delivered(alice.tunnel.device.delivered, to_alice)
        from_alice = _ping6(2, "2001:2:0:8::50", SERVER6)
        alice.tunnel.device.inject(from_alice)
        await _delivered(lab.server_device.device.delivered, from_alice)


@pytest.mark.directive("ifconfig-ipv6-push")
async def test_a_client_with_a_fixed_ipv6_cannot_send_from_its_pool_ipv6(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", "ifconfig-ipv6-push 2001:2:0:8::50/64\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        assert lab.server is not None
        spoofed = _ping6(1, "2001:2:0:8::1000", SERVER6)  # the IPv6 of its IPv4 pool entry
        alice.tunnel.device.inject(spoofed)
        await lab.wait_for(lambda: lab.server is not None
                           and lab.server.counts["spoofed_source"] > 0, 5)


@pytest.mark.directive("ifconfig-ipv6-push")
async def test_a_fixed_ipv6_address_of_the_pool_is_kept_from_pool_clients(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", "ifconfig-push 198.18.8.50 255.255.255.0\n"
                           "ifconfig-ipv6-push 2001:2:0:8::1000/64\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        bob = lab.start_client("bob")
        await lab.wait_for(bob.tunnel_up, 30)
        assert _addresses6(alice) == ["2001:2:0:8::1000/64"]
        # entry 0 (198.18.8.2 and 2001:2:0:8::1000) is alice's while she is connected
        assert (bob.vpn_ip, _addresses6(bob)) == ("198.18.8.3", ["2001:2:0:8::1001/64"])


@pytest.mark.directive("ifconfig-ipv6-push")
async def test_a_fixed_ipv6_address_of_a_pool_entry_in_use_refuses_the_newcomer(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        # carol holds pool entry 0 (198.18.8.2) but her IPv6 is her fixed one: entry 0's
        # IPv6 is unused, yet not bob's to take (the pools are paired)
        _ccd(lab, "carol", "ifconfig-ipv6-push 2001:2:0:8::50/64\n")
        _ccd(lab, "bob", "ifconfig-ipv6-push 2001:2:0:8::1000/64\n")
        lab.start_server()
        carol = lab.start_client("carol")
        await lab.wait_for(carol.tunnel_up, 30)
        assert carol.vpn_ip == "198.18.8.2"
        bob = lab.start_client("bob")
        await _refused(lab, bob)
        assert "2001:2:0:8::1000': a client of the pool has that address" in str(
            lab.server_events("ccd_refused")[0]["reason"])


@pytest.mark.directive("ifconfig-ipv6-push")
@pytest.mark.parametrize("held", ["2001:2:0:8::50", "2001:2:0:8::1000"])
async def test_a_fixed_ipv6_another_client_has_refuses_the_newcomer(
        held: str, tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        if held == "2001:2:0:8::50":  # else alice has it from the pool
            _ccd(lab, "alice", f"ifconfig-ipv6-push {held}/64\n")
        _ccd(lab, "bob", f"ifconfig-ipv6-push {held}/64\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        assert _addresses6(alice) == [f"{held}/64"]
        bob = lab.start_client("bob")
        await _refused(lab, bob)
        assert f"'ifconfig-ipv6-push {held}': another client has that address" in str(
            lab.server_events("ccd_refused")[0]["reason"])


@pytest.mark.directive("ifconfig-ipv6-push")
async def test_ifconfig_ipv6_push_on_a_server_without_ipv6_refuses_the_client(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD) as lab:
        _ccd(lab, "alice", "ifconfig-ipv6-push 2001:2::10/64 2001:2::1\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await _refused(lab, alice)
        assert "needs IPv6 in the tunnel on the server" in str(
            lab.server_events("ccd_refused")[0]["reason"])


@pytest.mark.directive("ifconfig-push", "server-ipv6")
async def test_a_fixed_ipv4_client_gets_the_ipv6_of_a_pool_entry_kept_while_connected(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", "ifconfig-push 198.18.8.50 255.255.255.0\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        # as OpenVPN: the entry a pool client would get (entry 0), for its IPv6 only
        assert alice.vpn_ip == "198.18.8.50"
        assert _addresses6(alice) == ["2001:2:0:8::1000/64"]
        bob = lab.start_client("bob")
        await lab.wait_for(bob.tunnel_up, 30)
        assert (bob.vpn_ip, _addresses6(bob)) == ("198.18.8.3", ["2001:2:0:8::1001/64"])
        from_alice = _ping6(1, "2001:2:0:8::1000", SERVER6)
        alice.tunnel.device.inject(from_alice)
        await _delivered(lab.server_device.device.delivered, from_alice)


@pytest.mark.directive("ifconfig-push", "server-ipv6")
async def test_a_fixed_ipv4_in_the_pool_and_its_pool_ipv6_share_one_entry(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", "ifconfig-push 198.18.8.2 255.255.255.0\n")  # entry 0's IPv4
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        assert (alice.vpn_ip, _addresses6(alice)) == ("198.18.8.2", ["2001:2:0:8::1000/64"])
        carol = lab.start_client("carol")
        await lab.wait_for(carol.tunnel_up, 30)
        assert (carol.vpn_ip, _addresses6(carol)) == ("198.18.8.3", ["2001:2:0:8::1001/64"])
        server = lab.server
        assert server is not None and server.allocator.in_use == 2
        await lab.stop_client(alice)
        await lab.wait_for(lambda: server.allocator.in_use == 1, 300)  # alice's entry is free


@pytest.mark.directive("push-remove", "ifconfig-ipv6-push")
async def test_push_remove_ifconfig_ipv6_withholds_the_ipv6_address_only(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "alice", 'push-remove "ifconfig-ipv6"\n')
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        assert alice.vpn_ip == "198.18.8.2" and _addresses6(alice) == []


@pytest.mark.directive("iroute-ipv6")
async def test_iroute_ipv6_sends_a_network_to_its_client_and_accepts_its_packets(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, DUAL) as lab:
        _ccd(lab, "site", "iroute-ipv6 2001:2:0:40::/64\n")
        lab.start_server()
        site, bob = lab.start_client("site"), lab.start_client("bob")
        await lab.wait_for(lambda: site.tunnel_up() and bob.tunnel_up(), 30)
        to_lan = _ping6(1, SERVER6, "2001:2:0:40::5")
        lab.server_device.device.inject(to_lan)
        await _delivered(site.tunnel.device.delivered, to_lan)
        from_lan = _ping6(2, "2001:2:0:40::5", SERVER6)
        site.tunnel.device.inject(from_lan)
        await _delivered(lab.server_device.device.delivered, from_lan)
        assert lab.server is not None
        routes = ServerView(lab.server, OperatorState()).status(0.0).routes
        assert ("2001:2:0:40::/64", "site") in [(a, row.common_name) for a, row in routes]
        bob.tunnel.device.inject(_ping6(3, "2001:2:0:40::6", SERVER6))  # not bob's network
        await lab.wait_for(lambda: lab.server is not None
                           and lab.server.counts["spoofed_source"] > 0, 5)


@pytest.mark.directive("iroute-ipv6")
async def test_iroute_ipv6_on_a_tap_server_refuses_the_client(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD + "dev tap\n") as lab:
        _ccd(lab, "site", "iroute-ipv6 2001:2:0:40::/64\n")
        lab.start_server()
        site = lab.start_client("site", "dev tap\n")
        await _refused(lab, site)
        assert "'iroute-ipv6' needs 'dev tun'" in str(
            lab.server_events("ccd_refused")[0]["reason"])


@pytest.mark.directive("ifconfig-push", "topology")
async def test_ifconfig_push_with_net30_gives_the_client_its_address_and_peer(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, CCD + "topology net30\n") as lab:
        _ccd(lab, "alice", "ifconfig-push 198.18.8.9 198.18.8.10\n")
        lab.start_server()
        alice = lab.start_client("alice")
        await lab.wait_for(alice.tunnel_up, 30)
        address = alice.tunnel.plan.addresses[0]
        assert (address.address, address.peer) == ("198.18.8.9", "198.18.8.10")
        await lab.client_to_server(alice, 1)
        await lab.server_to_client(alice, 2)
