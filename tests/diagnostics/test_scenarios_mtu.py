"""``mtu.path`` against a real openvpn 2.6 server behind a router namespace.

client (198.18.1.2) — router (198.18.1.1 | 198.18.2.1) — server (198.18.2.2). Each test makes
the path's fault for real: a smaller MTU on the router's link to the server (the router sends
ICMP "fragmentation needed"), or an nftables rule on the router that drops bigger packets
without any ICMP (a black hole). A size counts only when an echo reply (or, without a data
channel, the server's reset) answered it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import Scenario, client_lines, scenario, server_lines
from trivpn.config import load_config
from trivpn.diagnostics import checks_mtu, checks_nat, checks_port, checks_tls, checks_tunnel
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import TunnelBroker
from trivpn.pki.certs import create_ca, issue_cert

pytestmark = pytest.mark.integration

SERVER = "198.18.2.2"
SERVER6 = "2001:2:0:2::2"
NETWORK_CHECKS: tuple[Check, ...] = (*checks_port.CHECKS, *checks_nat.CHECKS, *checks_tls.CHECKS,
                                     *checks_mtu.CHECKS, *checks_tunnel.CHECKS)


@dataclass
class Routed:
    sc: Scenario
    router_name: str
    client_name: str

    def context(self, lines: Sequence[str], *, timeout: float = 10.0) -> DoctorContext:
        config = self.sc.client_config(list(lines))
        return DoctorContext(config, load_config(config), "client", timeout,
                             netns=self.client_name)


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        yield made


def _routed(sc: Scenario, *, mtu: int | None = None, drop_above: int | None = None,
            proto: str = "udp", server_extra: Sequence[str] = ()) -> Routed:
    lab = sc.lab
    router, server, client = lab.add("rtr"), lab.add("srv"), lab.add("cli")
    lab.veth(client, router, "198.18.1.2/24", "198.18.1.1/24")
    lab.veth(router, server, "198.18.2.1/24", f"{SERVER}/24", mtu=mtu)
    router.enable_forwarding()
    client.add_route("198.18.2.0/24", via="198.18.1.1")
    server.add_route("198.18.1.0/24", via="198.18.2.1")
    if drop_above is not None:
        # Silently drop bigger packets in both directions: no ICMP error is ever sent.
        router.nft("table inet mtutest {\n chain forward {\n"
                   "  type filter hook forward priority 0; policy accept;\n"
                   f"  meta length > {drop_above} drop\n }}\n}}\n")
    proc = sc.start_openvpn_in(server, server_lines("tls-crypt", local=SERVER, proto=proto,
                                                    extra=server_extra))
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()
    return Routed(sc, router.name, client.name)


def _routed6(sc: Scenario, *, mtu: int) -> Routed:
    """The same path over IPv6 (2001:2:0:1::/64 and 2001:2:0:2::/64); the router answers
    too-big packets with ICMPv6 "packet too big"."""
    lab = sc.lab
    router, server, client = lab.add("rtr"), lab.add("srv"), lab.add("cli")
    for ns in (router, server, client):
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
    lab.veth(client, router, "198.18.1.2/24", "198.18.1.1/24")
    lab.veth(router, server, "198.18.2.1/24", f"{SERVER}/24", mtu=mtu)
    client.add_address("veth0", "2001:2:0:1::2/64")
    router.add_address("veth0", "2001:2:0:1::1/64")
    router.add_address("veth1", "2001:2:0:2::1/64")
    server.add_address("veth0", "2001:2:0:2::2/64")
    router.sysctl("net.ipv6.conf.all.forwarding", "1")
    client.add_route("2001:2:0:2::/64", via="2001:2:0:1::1")
    server.add_route("2001:2:0:1::/64", via="2001:2:0:2::1")
    proc = sc.start_openvpn_in(server, server_lines("tls-crypt", local=SERVER6,
                                                    proto="udp6"))
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()
    return Routed(sc, router.name, client.name)


def _client(proto: str = "udp", extra: Sequence[str] = ()) -> list[str]:
    return client_lines("tls-crypt", remote=SERVER, proto=proto, extra=extra)


async def _report(ctx: DoctorContext) -> dict[str, CheckResult]:
    async with TunnelBroker() as broker:
        report = await run_checks(NETWORK_CHECKS, replace(ctx, tunnel=broker))
    return {r.id: r for r in report.checks}


async def _mtu(ctx: DoctorContext) -> CheckResult:
    check = checks_mtu.CHECKS[0]
    return await check.run(ctx)


async def test_healthy_routed_path_confirms_the_link_mtu_without_warning(sc: Scenario):
    r = _routed(sc)

    results = await _report(r.context(_client()))

    result = results["mtu.path"]
    assert {i: x.status for i, x in results.items()} == {
        c.id: "ok" for c in NETWORK_CHECKS}, \
        {i: x.summary for i, x in results.items()}
    assert result.evidence["method"] == "data_channel_echo"
    assert result.evidence["path_mtu"] == 1500
    assert result.evidence["limit_kind"] == "route_mtu"
    assert 1500 in result.evidence["answered"]
    assert result.evidence["silent"] == []
    assert result.duration_s < 3


async def test_smaller_link_mtu_with_icmp_is_found_exactly_with_the_fix(sc: Scenario):
    r = _routed(sc, mtu=1400)

    result = await _mtu(r.context(_client()))

    assert result.status == "warn", result.summary
    ev = result.evidence
    assert ev["path_mtu"] == 1400  # exact: the session's framing sized the probes
    assert ev["limit_kind"] == "icmp"
    assert 1400 in ev["answered"]
    assert 1500 in ev["icmp_reported"]
    assert ev["silent"] == []
    assert ev["largest_tun_packet_that_fits"] == 1348  # 1400 - 20 - 8 - 24 (AES-256-GCM, v2)
    assert "ICMP" in result.summary
    assert "mssfix 1400 mtu" in result.fix
    assert "'tun-mtu' to 1348" in result.fix
    assert "fragment 1400 mtu" in result.fix


async def test_black_hole_is_reported_with_the_answered_size_never_as_1500(sc: Scenario):
    r = _routed(sc, drop_above=1300)

    result = await _mtu(r.context(_client()))

    assert result.status == "warn", result.summary
    ev = result.evidence
    assert ev["limit_kind"] == "black_hole"
    assert ev["path_mtu"] == 1300
    assert ev["black_hole_at"] == 1301
    assert ev["route_mtu"] == 1500
    assert 1300 in ev["answered"]
    assert {1301, 1500} <= set(ev["silent"])
    assert ev["icmp_reported"] == []
    boundary = [p for p in ev["probes"] if p["size"] == 1301]
    assert boundary[-1]["tries"] == 2  # tried again before it counts as silent
    assert "black hole" in result.summary
    assert "1500" not in result.summary
    assert "mssfix 1300 mtu" in result.fix
    assert "tun-mtu' to 1248" in result.fix
    assert "fragment 1300 mtu" in result.fix
    assert result.duration_s < 8


async def test_black_hole_with_a_cbc_cipher_accounts_for_its_padding(sc: Scenario):
    cbc = ["data-ciphers AES-256-CBC", "auth SHA256"]
    r = _routed(sc, drop_above=1300, server_extra=cbc)

    result = await _mtu(r.context(_client(extra=cbc)))

    ev = result.evidence
    assert ev["limit_kind"] == "black_hole", result.summary
    assert ev["cipher"] == "AES-256-CBC"
    # CBC sizes come in 16-byte steps: the largest reachable size at or under the limit
    assert 1300 - 16 < ev["path_mtu"] <= 1300 < ev["black_hole_at"] <= 1300 + 16
    assert ev["overhead_bytes"] > 52  # HMAC-SHA256, IV, padding: more than AES-GCM's


async def test_black_hole_without_a_data_channel_is_found_with_padded_resets(sc: Scenario):
    r = _routed(sc, drop_above=1300)
    other = create_ca("other CA")
    from tests.diagnostics.test_scenarios import _write_credential

    _write_credential(sc.workdir, "foreign", issue_cert(other, "client", "client1"))
    ctx = r.context(client_lines("tls-crypt", remote=SERVER, cert="foreign.crt",
                                 key="foreign.key"), timeout=8.0)

    with trio.fail_after(8.0):  # the failed handshake and the search fit the check's timeout
        result = await _mtu(ctx)

    ev = result.evidence
    assert ev["method"] == "control_channel_reset", result.summary
    assert ev["direction"] == "to_server"
    assert ev["limit_kind"] == "black_hole"
    assert ev["path_mtu"] == 1300
    assert ev["black_hole_at"] == 1301
    assert "handshake" in ev["no_data_channel"]
    assert result.status == "warn"


async def test_tcp_transport_confirms_full_packets_and_leaves_the_outer_mtu_to_the_kernel(
        sc: Scenario):
    r = _routed(sc, mtu=1400, proto="tcp-server")

    result = await _mtu(r.context(_client(proto="tcp-client")))

    assert result.status == "ok", result.summary
    ev = result.evidence
    assert ev["method"] == "data_channel_echo_tcp"
    assert [p["result"] for p in ev["probes"]] == ["answered", "answered"]
    assert ev["probes"][1]["size"] == 1500
    assert "kernel" in result.summary and "not OpenVPN's" in result.summary


@pytest.mark.parametrize("fix", [["tun-mtu 1248"], ["fragment 1300 mtu"]])
async def test_the_fix_the_black_hole_warning_gives_makes_the_tunnel_fit(sc: Scenario,
                                                                          fix: list[str]):
    # The warning's fix, applied to both sides of a real openvpn 2.6 tunnel.
    r = _routed(sc, drop_above=1300, server_extra=fix)

    result = await _mtu(r.context(_client(extra=fix)))

    assert result.status == "ok", (result.summary, result.evidence)
    assert result.evidence["outer_packet_bytes"] <= 1300
    assert result.evidence["answered"][-1] == result.evidence["outer_packet_bytes"]


async def test_ipv6_remote_smaller_link_mtu_is_found_exactly_from_packet_too_big(sc: Scenario):
    r = _routed6(sc, mtu=1400)

    result = await _mtu(r.context(client_lines("tls-crypt", remote=SERVER6, proto="udp6")))

    assert result.status == "warn", result.summary
    ev = result.evidence
    assert ev["sent_to"] == f"[{SERVER6}]:1194/udp"
    assert ev["path_mtu"] == 1400
    assert ev["limit_kind"] == "icmp"
    assert ev["answered"][0] == 1280  # the IPv6 floor
    assert ev["largest_tun_packet_that_fits"] == 1328  # 1400 - 40 - 8 - 24
    assert "'tun-mtu' to 1328" in result.fix
