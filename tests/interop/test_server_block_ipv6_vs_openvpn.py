"""``block-ipv6`` in a server config, side by side: a real openvpn 2.6 server ("theirs") and a
``trivpn run`` server ("ours") with the same config (``server-ipv6``, ``client-to-client``,
``block-ipv6``), each with two real openvpn 2.6 clients. What OpenVPN 2.6 does (forward.c,
process_ip_header(); multi.c, multi_get_queue()), checked here on the binary: IPv6 from the
server's side to a client is answered "no route" from the server's IPv6 peer address
(NET::2), a client's IPv6 still reaches the server's device (but the answers are blocked),
client-to-client IPv6 is dropped without an answer; IPv4 is untouched.

Lab (198.18.0.0/15 and 2001:2::/48 only), per side i (0 theirs, 1 ours)::

    srv (198.18.1i.1; tunnel 198.18.8.0/24, 2001:2:0:8::/64) -- a (198.18.1i.2)
                                                            \\- b (198.18.2i.2)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import (
    SERVER_VPN_IP,
    client_lines,
    issue_client,
    ping,
    server_lines,
    start_side_server,
)
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

SIDES = ("theirs", "ours")
SERVER_VPN6, SERVER_PEER6 = "2001:2:0:8::1", "2001:2:0:8::2"
NO_ROUTE = re.compile(rf"From {re.escape(SERVER_PEER6)} icmp_seq=\d+ Destination unreachable: "
                      "No route")


@dataclass
class Side:
    srv: Netns
    a: Netns
    b: Netns
    a6: str
    b6: str
    a4: str
    server: TrivpnProcess | OpenVpnProcess


def _pushed(client: OpenVpnProcess, pattern: str) -> str:
    found = re.search(r"PUSH_REPLY,.*" + pattern, client.text())
    assert found is not None, client.text()[-3000:]
    return found.group(1)


def _vpn6(client: OpenVpnProcess) -> str:
    return _pushed(client, r"ifconfig-ipv6 ([0-9a-f:]+)/64")


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Side]]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("block6")
    issue_client(write_pki(workdir), "c2")
    out = {}
    with NetnsLab() as lab:
        for i, who in enumerate(SIDES):
            srv, a, b = (lab.add(f"{n}{who[0]}") for n in ("srv", "a", "b"))
            lab.veth(srv, a, f"198.18.1{i}.1/24", f"198.18.1{i}.2/24")
            lab.veth(srv, b, f"198.18.2{i}.1/24", f"198.18.2{i}.2/24")
            lines = server_lines(link_ip="0.0.0.0", extra=[
                "server-ipv6 2001:2:0:8::/64", "client-to-client", "block-ipv6"])
            server = start_side_server(srv, workdir, who, lines)
            clients = []
            for ns, cert, net in ((a, "client", f"198.18.1{i}"), (b, "c2", f"198.18.2{i}")):
                client = start_openvpn(ns, workdir, f"{cert}-{who}", client_lines(
                    server_ip=f"{net}.1", cert=cert))
                assert client.wait_for("Initialization Sequence Completed", 20), \
                    (who, client.text()[-3000:], server.text()[-3000:])
                clients.append(client)
            out[who] = Side(srv, a, b, _vpn6(clients[0]), _vpn6(clients[1]),
                            _pushed(clients[0], r"ifconfig (198\.18\.8\.\d+) "), server)
        yield out


def _ping6(ns: Netns, dst: str) -> str:
    done = ns.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", dst], check=False, timeout=10)
    assert done.returncode != 0, done.stdout  # never an echo reply
    return done.stdout


def _echo_requests_received(ns: Netns) -> int:
    snmp6 = ns.run(["cat", "/proc/net/snmp6"]).stdout
    found = re.search(r"^Icmp6InEchos\s+(\d+)$", snmp6, re.M)
    assert found is not None
    return int(found.group(1))


@pytest.mark.directive("block-ipv6", "server-ipv6")
@pytest.mark.parametrize("who", SIDES)
def test_server_side_ipv6_to_a_client_is_answered_no_route_from_the_servers_ipv6_peer(
        sides: dict[str, Side], who: str) -> None:
    side = sides[who]
    assert NO_ROUTE.search(_ping6(side.srv, side.a6)), side.server.text()[-3000:]


@pytest.mark.directive("block-ipv6")
@pytest.mark.parametrize("who", SIDES)
def test_client_ipv6_reaches_the_server_but_no_answer_comes_back(
        sides: dict[str, Side], who: str) -> None:
    side = sides[who]
    before = _echo_requests_received(side.srv)
    text = _ping6(side.a, SERVER_VPN6)
    assert "Destination unreachable" not in text, text
    assert _echo_requests_received(side.srv) >= before + 2


@pytest.mark.directive("block-ipv6", "client-to-client")
@pytest.mark.parametrize("who", SIDES)
def test_client_to_client_ipv6_is_dropped_without_an_answer(
        sides: dict[str, Side], who: str) -> None:
    side = sides[who]
    for src, dst in ((side.a, side.b6), (side.b, side.a6)):
        text = _ping6(src, dst)
        assert "Destination unreachable" not in text, text


@pytest.mark.directive("block-ipv6")
@pytest.mark.parametrize("who", SIDES)
def test_ipv4_through_a_block_ipv6_server_is_untouched(sides: dict[str, Side], who: str) -> None:
    side = sides[who]
    assert ping(side.a, SERVER_VPN_IP)
    assert ping(side.b, side.a4)  # client-to-client
