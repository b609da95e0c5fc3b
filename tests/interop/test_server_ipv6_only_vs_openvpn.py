"""An IPv6-only server (``server-ipv6`` without ``server``), side by side: a real openvpn 2.6
server ("theirs") and a ``trivpn run`` server ("ours") with the same config, each with two real
openvpn 2.6 clients. What OpenVPN 2.6 does with it, checked here on the binary: it runs as
'mode server' + 'tls-server' (helper.c helper_client_server), pushes
``tun-ipv6``, ``ifconfig-ipv6`` from the pool and no IPv4 ``ifconfig``, ``topology`` or
``route-gateway``; its device and its clients' devices get no IPv4 address.

Lab (198.18.0.0/15 and 2001:2::/48 only), per side i (0 theirs, 1 ours)::

    srv (198.18.1i.1; tunnel 2001:2:0:8::/64 only) -- a (198.18.1i.2)
                                                  \\- b (198.18.2i.2)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, issue_client, ping, start_side_server, transfer
from tests.interop.test_server_scripts_vs_openvpn import VARIES, _records
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

SIDES = ("theirs", "ours")
SERVER_VPN6 = "2001:2:0:8::1"
DUMP = """#!/bin/sh
out="{dir}/{who}.$script_type.log"
{{ for a in "$@"; do echo "ARG=$a"; done; env | sort; echo ====; }} >> "$out"
exit 0
"""


@dataclass
class Side:
    srv: Netns
    a: Netns
    b: Netns
    server: TrivpnProcess | OpenVpnProcess
    clients: list[OpenVpnProcess]


@dataclass
class Lab:
    workdir: Path
    sides: dict[str, Side]


def server_config(link_ip: str, dump: Path) -> list[str]:
    return ["dev tun", "proto udp", f"local {link_ip}", "port 1194", "ca ca.crt",
            "cert server.crt", "key server.key", "dh none", "server-ipv6 2001:2:0:8::/64",
            "keepalive 2 20", "remote-cert-tls client", "verb 3", "client-to-client",
            "script-security 2", f"client-connect {dump}", f"learn-address {dump}"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("v6only")
    issue_client(write_pki(workdir), "c2")
    sides = {}
    with NetnsLab() as netns_lab:
        for i, who in enumerate(SIDES):
            dump = workdir / f"dump-{who}.sh"
            dump.write_text(DUMP.format(dir=workdir, who=who))
            dump.chmod(0o755)
            srv, a, b = (netns_lab.add(f"{n}{who[0]}") for n in ("srv", "a", "b"))
            netns_lab.veth(srv, a, f"198.18.1{i}.1/24", f"198.18.1{i}.2/24")
            netns_lab.veth(srv, b, f"198.18.2{i}.1/24", f"198.18.2{i}.2/24")
            lines = server_config("0.0.0.0", dump)
            server = start_side_server(srv, workdir, who, lines)
            clients = []
            # one after the other: a gets the pool's first address, b the second
            for ns, cert, net in ((a, "client", f"198.18.1{i}"), (b, "c2", f"198.18.2{i}")):
                client = start_openvpn(ns, workdir, f"{cert}-{who}", client_lines(
                    server_ip=f"{net}.1", cert=cert))
                assert client.wait_for("Initialization Sequence Completed", 20), \
                    (who, client.text()[-3000:], server.text()[-3000:])
                clients.append(client)
            sides[who] = Side(srv, a, b, server, clients)
        yield Lab(workdir, sides)


def _push_reply(client: OpenVpnProcess) -> str:
    found = re.search(r"PUSH: Received control message: '(PUSH_REPLY,[^']*)'", client.text())
    assert found is not None, client.text()[-3000:]
    return found.group(1)


@pytest.mark.directive("server-ipv6")
def test_ipv6_only_server_pushes_what_openvpn_pushes(lab: Lab) -> None:
    theirs = [_push_reply(c) for c in lab.sides["theirs"].clients]
    ours = [_push_reply(c) for c in lab.sides["ours"].clients]
    assert theirs[0].startswith("PUSH_REPLY,tun-ipv6,ping 2,ping-restart 20,"
                                "ifconfig-ipv6 2001:2:0:8::1000/64 2001:2:0:8::1,"), theirs[0]
    assert "ifconfig 198" not in theirs[0] and "topology" not in theirs[0]
    assert "ifconfig-ipv6 2001:2:0:8::1001/64" in theirs[1]
    # the pool's size (trivpn's: tests/config/test_ipv6_only_server.py)
    assert "IFCONFIG POOL IPv6: base=2001:2:0:8::1000 size=65536" in \
        lab.sides["theirs"].server.text()
    # trivpn's own protocol flags and tun-mtu push differ for every server (not this test's)
    assert [r.partition(",protocol-flags")[0] for r in ours] == \
        [r.partition(",protocol-flags")[0] for r in theirs]


@pytest.mark.directive("server-ipv6")
@pytest.mark.parametrize("who", SIDES)
def test_ipv6_only_tunnel_carries_ipv6_both_ways_and_between_clients(lab: Lab, who: str
                                                                     ) -> None:
    side = lab.sides[who]
    assert ping(side.a, SERVER_VPN6), side.server.text()[-3000:]
    assert ping(side.srv, "2001:2:0:8::1001"), side.server.text()[-3000:]
    assert ping(side.b, "2001:2:0:8::1000"), side.server.text()[-3000:]  # client-to-client
    for ns in (side.srv, side.a):  # no IPv4 on either device
        assert "inet " not in ns.run(["ip", "addr", "show", "dev", "tun0"]).stdout


@pytest.mark.directive("server-ipv6")
def test_tcp_through_the_trivpn_ipv6_only_server(lab: Lab) -> None:
    side = lab.sides["ours"]
    sent, received = transfer(side.srv, SERVER_VPN6, side.a, 256 * 1024, timeout=30)
    assert sent == received


@pytest.mark.directive("server-ipv6", "client-connect", "learn-address")
def test_ipv6_only_scripts_get_what_openvpn_gives(lab: Lab) -> None:
    for hook in ("client-connect", "learn-address"):
        theirs, ours = _records(lab.workdir, "theirs", hook), _records(lab.workdir, "ours", hook)
        assert len(ours) == len(theirs) == 2, hook
        for (their_args, their_env), (our_args, our_env) in zip(theirs, ours, strict=True):
            if hook == "learn-address":
                assert our_args == their_args
            assert set(our_env) == set(their_env), (hook, set(our_env) ^ set(their_env))
            for key in set(their_env) - VARIES:
                assert _theirs_lab(our_env[key]) == their_env[key], (hook, key)


def _theirs_lab(value: str) -> str:
    """Our lab's link addresses written as theirs (198.18.11/21.x -> 198.18.10/20.x)."""
    return value.replace("198.18.11.", "198.18.10.").replace("198.18.21.", "198.18.20.")
