"""``fragment`` against a real openvpn 2.6 server (OpenVPN src/openvpn/fragment.c): big pings
and TCP transfers cross both ways while no datagram on the wire carries more than N bytes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.interop import serverkit
from tests.interop.clientkit import (
    CLIENT_IP,
    SERVER_IP,
    VPN_SERVER,
    Setup,
    addresses,
    client_lines,
    client_tun_ip,
    make_setup,
    received,
    server_lines,
    start_client,
    start_server,
    stop_process,
    transfer,
    wait_up,
)
from tests.interop.openvpn import start_openvpn
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

FRAGMENT = 500
# counted on the server's side: from trivpn, then from openvpn; all, then data packets (opcode
# P_DATA_V2, the top 5 bits of the first payload byte: 9) above the fragment size. The fragment
# layer is for the data channel: TLS control packets have their own limit (OpenVPN's too).
_RULES = f"""
table inet fragcheck {{
  chain countin {{
    type filter hook input priority 0; policy accept;
    ip saddr {CLIENT_IP} udp dport 1194 counter
    ip saddr {CLIENT_IP} udp dport 1194 udp length > {FRAGMENT + 8} @th,64,5 9 counter
  }}
  chain countout {{
    type filter hook output priority 0; policy accept;
    ip daddr {CLIENT_IP} udp sport 1194 counter
    ip daddr {CLIENT_IP} udp sport 1194 udp length > {FRAGMENT + 8} @th,64,5 9 counter
  }}
}}
"""


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _counters(ns: Netns) -> list[int]:
    out = ns.run(["nft", "list", "table", "inet", "fragcheck"]).stdout
    return [int(line.split("packets")[1].split()[0]) for line in out.splitlines()
            if "counter packets" in line]


def _no_gso(ns: Netns) -> None:
    """trivpn sends batches with UDP GSO: have its kernel cut them into datagrams before the
    veth, so the peer's counters see each datagram as it is on a real wire."""
    for link in addresses(ns):
        if link["ifname"] != "lo" and not link["ifname"].startswith("tun"):
            ns.run(["ethtool", "-K", link["ifname"], "tx-udp-segmentation", "off"], check=False)


def _big_pings(ns: Netns, dst: str) -> None:
    done = ns.run(["ping", "-n", "-q", "-c", "4", "-i", "0.2", "-W", "2", "-s", "1400",
                   "-M", "dont", dst], check=False, timeout=15)
    assert received(done.stdout) == 4, (done.stdout, done.stderr)


@pytest.mark.directive("fragment")
@pytest.mark.parametrize("extra", [(), ("mssfix 1400",)])
def test_fragment_with_openvpn_server_keeps_datagrams_small(setup: Setup,
                                                            extra: tuple[str, ...]) -> None:
    start_server(setup, server_lines(extra=(f"fragment {FRAGMENT}", *extra)))
    setup.server_ns.run(["nft", "-f", "-"], input=_RULES)
    _no_gso(setup.client_ns)
    client = start_client(setup, client_lines(extra=(f"fragment {FRAGMENT}", *extra)))
    tun_ip = client_tun_ip(wait_up(client))
    _big_pings(setup.client_ns, VPN_SERVER)
    _big_pings(setup.server_ns, tun_ip)
    transfer(setup.server_ns, setup.client_ns, tun_ip, size=512 * 1024, timeout=20)
    transfer(setup.client_ns, setup.server_ns, VPN_SERVER, size=512 * 1024, timeout=20)
    from_trivpn, from_trivpn_big, from_openvpn, from_openvpn_big = _counters(setup.server_ns)
    assert from_trivpn > 400 and from_openvpn > 400, (from_trivpn, from_openvpn)
    assert (from_trivpn_big, from_openvpn_big) == (0, 0)
    stop_process(setup.lab, client.pid, signal.SIGTERM)
    stats = client.wait_event("fragment_stats", 5)
    assert stats is not None, client.text()[-3000:]
    # pings of 1428 bytes: fragmented both ways; openvpn's fragments were reassembled
    assert stats["fragmented_packets"] >= 4 and stats["reassembled"] >= 4, stats
    assert stats["max_size"] == FRAGMENT - 28, stats  # AES-256-GCM: 500 - 24 - 4


_CLIENT_SIDE_RULES = f"""
table inet fragcheck {{
  chain countin {{
    type filter hook input priority 0; policy accept;
    ip saddr {SERVER_IP} udp sport 1194 counter
    ip saddr {SERVER_IP} udp sport 1194 udp length > {FRAGMENT + 8} @th,64,5 9 counter
  }}
  chain countout {{
    type filter hook output priority 0; policy accept;
    ip daddr {SERVER_IP} udp dport 1194 counter
    ip daddr {SERVER_IP} udp dport 1194 udp length > {FRAGMENT + 8} @th,64,5 9 counter
  }}
}}
"""


@pytest.mark.directive("fragment")
def test_trivpn_server_with_fragment_serves_an_openvpn_client(setup: Setup) -> None:
    server = start_trivpn(setup.server_ns, setup.workdir, "tserver", serverkit.server_lines(
        link_ip=SERVER_IP, extra=[f"fragment {FRAGMENT}"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    _no_gso(setup.server_ns)
    setup.client_ns.run(["nft", "-f", "-"], input=_CLIENT_SIDE_RULES)
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "oclient", serverkit.client_lines(
        server_ip=SERVER_IP, extra=[f"fragment {FRAGMENT}"]))
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-3000:]
    connected = server.wait_event("peer_connected", timeout=5)
    assert connected is not None, server.text()[-3000:]
    vpn_ip = connected["vpn_ip"]
    _big_pings(setup.client_ns, serverkit.SERVER_VPN_IP)
    _big_pings(setup.server_ns, vpn_ip)
    transfer(setup.server_ns, setup.client_ns, vpn_ip, size=512 * 1024, timeout=20)
    transfer(setup.client_ns, setup.server_ns, serverkit.SERVER_VPN_IP, size=512 * 1024,
             timeout=20)
    from_trivpn, from_trivpn_big, from_openvpn, from_openvpn_big = _counters(setup.client_ns)
    assert from_trivpn > 400 and from_openvpn > 400, (from_trivpn, from_openvpn)
    assert (from_trivpn_big, from_openvpn_big) == (0, 0)
