"""Client directives of issue 12's breadth (socket and link options), each checked on a
running ``trivpn run`` client against a real openvpn 2.6 server in namespaces."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    CLIENT_IP,
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    server_lines,
    start_client,
    start_server,
    wait_up,
)
from tests.interop.openvpn import start_openvpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _count_outer_tos(ns: Netns, tos: int) -> None:
    """Count, on arrival in ``ns``, the client's UDP datagrams whose IP TOS byte is ``tos``."""
    ns.nft("table ip tos_test {\n chain pre {\n  type filter hook prerouting priority -300;\n"
           f"  ip saddr {{ {CLIENT_IP}, 198.18.0.9 }} udp dport 1194 @nh,8,8 {tos:#x}"
           " counter\n"
           " }\n}\n")


def _counted(ns: Netns) -> int:
    out = json.loads(ns.run(["nft", "-j", "list", "table", "ip", "tos_test"]).stdout)
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule is not None:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    raise AssertionError(out)


@pytest.mark.directive("passtos")
@pytest.mark.parametrize("passtos", [True, False])
def test_passtos_copies_the_inner_tos_byte_to_the_outer_udp_datagrams(
        setup: Setup, passtos: bool) -> None:
    start_server(setup, server_lines())
    _count_outer_tos(setup.server_ns, 0x10)
    client = start_client(setup, [*client_lines(), *(["passtos"] if passtos else [])])
    wait_up(client)
    before = _counted(setup.server_ns)
    done = setup.client_ns.run(["ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "2",
                                "-Q", "0x10", VPN_SERVER], check=False, timeout=10)
    assert done.returncode == 0, done.stdout
    counted = _counted(setup.server_ns) - before
    # each echo request is one datagram with the inner TOS; without passtos none carries it
    assert counted >= 5 if passtos else counted == 0, counted


def _p2p_server_lines(ciphers: str = "AES-256-GCM:AES-128-GCM") -> list[str]:
    """A real openvpn 2.6 TLS peer-to-peer server (OpenVPN's sample loopback-server shape)."""
    return ["tls-server", "dev tun", "proto udp", "local 198.18.0.1", "port 1194",
            "ifconfig 198.18.8.1 198.18.8.2", "ca ca.crt", "cert server.crt",
            "key server.key", "dh none", f"data-ciphers {ciphers}", "ping 1",
            "ping-restart 10", "verb 4"]


def _p2p_client_lines(*extra: str) -> list[str]:
    return ["tls-client", "dev tun", "proto udp", "remote 198.18.0.1 1194", "nobind",
            "ifconfig 198.18.8.2 198.18.8.1", "ca ca.crt", "cert client.crt",
            "key client.key", "remote-cert-tls server", "ping 1", "ping-restart 10",
            "verb 4", *extra]


@pytest.mark.directive("tls-client", "ifconfig")
@pytest.mark.parametrize(("server_ciphers", "client_ciphers", "chosen"), [
    ("AES-256-GCM:AES-128-GCM", "AES-128-GCM:AES-256-GCM", "AES-256-GCM"),  # server's order
    ("CHACHA20-POLY1305:AES-128-GCM", "AES-128-GCM:CHACHA20-POLY1305", "CHACHA20-POLY1305"),
])
def test_tls_peer_to_peer_client_negotiates_with_an_openvpn_tls_server_and_pings(
        setup: Setup, server_ciphers: str, client_ciphers: str, chosen: str) -> None:
    ovpn = start_openvpn(setup.server_ns, setup.workdir, "p2p-server",
                         _p2p_server_lines(server_ciphers))
    client = start_client(setup, _p2p_client_lines(f"data-ciphers {client_ciphers}"))
    wait_up(client)
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    done = setup.client_ns.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2",
                                "198.18.8.1"], check=False, timeout=10)
    assert done.returncode == 0, (done.stdout, client.text()[-3000:], ovpn.text()[-3000:])
    text = ovpn.text()
    # OpenVPN's view of the negotiation (ssl_ncp.c, p2p_mode_ncp): TLS-EKM keys, P_DATA_V2
    assert "P2P mode NCP negotiation result: TLS_export=1, DATA_v2=1" in text, text[-3000:]
    assert f"cipher={chosen}" in text, text[-3000:]
    assert f"Data Channel: cipher '{chosen}'" in text, text[-3000:]
    log = client.text()
    assert "key_method_received" in log and "push_request_sent" not in log, log[-3000:]


def _count_df(ns: Netns) -> None:
    """Count the client's UDP datagrams arriving in ``ns`` with Don't Fragment set."""
    ns.nft("table ip tos_test {\n chain pre {\n  type filter hook prerouting priority -300;\n"
           f"  ip saddr {CLIENT_IP} udp dport 1194 ip frag-off & 0x4000 != 0 counter\n"
           " }\n}\n")


@pytest.mark.directive("mtu-disc")
@pytest.mark.parametrize(("value", "df"), [("no", False), ("yes", True)])
def test_mtu_disc_decides_the_dont_fragment_bit_of_the_outer_datagrams(
        setup: Setup, value: str, df: bool) -> None:
    start_server(setup, server_lines())
    _count_df(setup.server_ns)
    client = start_client(setup, [*client_lines(), f"mtu-disc {value}"])
    wait_up(client)
    done = setup.client_ns.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2",
                                VPN_SERVER], check=False, timeout=10)
    assert done.returncode == 0, done.stdout
    counted = _counted(setup.server_ns)
    assert counted >= 3 if df else counted == 0, counted


@pytest.mark.directive("bind-dev")
@pytest.mark.parametrize("to_server", [True, False])
def test_bind_dev_sends_the_link_through_the_named_device_only(
        setup: Setup, to_server: bool) -> None:
    """The client has a second link on the server's subnet, to a sink namespace that also
    answers to the server's address (but runs no server): bound to the sink's link, the
    datagrams arrive there; bound to the server's, the tunnel comes up."""
    sink = setup.lab.add("sink")
    veth = setup.lab.veth(setup.client_ns, sink, "198.18.0.9/24", "198.18.0.1/24")
    _count_outer_tos(sink, 0)
    start_server(setup, server_lines())
    server_if = next(link["ifname"] for link in json.loads(
        setup.client_ns.run(["ip", "-j", "link"]).stdout)
        if link["ifname"] not in ("lo", veth.a_ifname))
    client = start_client(setup, [*client_lines(), "bind-dev "
                                  + (server_if if to_server else veth.a_ifname)])
    if to_server:
        wait_up(client)
        assert _counted(sink) == 0
        return
    assert client.wait_event("tun_configured", 3) is None
    # a loaded machine may take longer than that to start the client: its datagrams arrive
    # at the sink within a bound (seen: none yet after 3 s in a 4-worker run)
    deadline = time.monotonic() + 15
    while _counted(sink) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _counted(sink) > 0
    assert client.count("tun_configured") == 0


@pytest.mark.directive("tls-client", "reneg-sec")
def test_tls_peer_to_peer_client_keeps_the_tunnel_across_renegotiation(setup: Setup) -> None:
    """OpenVPN's loopback sample renegotiates every 10 s; the negotiated cipher and peer-id
    stay, the new key is installed on both ends."""
    ovpn = start_openvpn(setup.server_ns, setup.workdir, "p2p-server", _p2p_server_lines())
    client = start_client(setup, _p2p_client_lines("reneg-sec 2"))
    wait_up(client)
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    time.sleep(4.5)  # two renegotiations
    done = setup.client_ns.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2",
                                "198.18.8.1"], check=False, timeout=10)
    assert done.returncode == 0, (done.stdout, client.text()[-3000:], ovpn.text()[-3000:])
    keys = ovpn.text().count("Outgoing Data Channel: Cipher 'AES-256-GCM' initialized")
    assert keys >= 3, ovpn.text()[-3000:]
