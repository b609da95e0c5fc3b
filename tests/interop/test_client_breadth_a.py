"""Client directives of issue 12's breadth (socket and link options), each checked on a
running ``trivpn run`` client against a real openvpn 2.6 server in namespaces."""

from __future__ import annotations

import json
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
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _count_outer_tos(ns: Netns, tos: int) -> None:
    """Count, on arrival in ``ns``, the client's UDP datagrams whose IP TOS byte is ``tos``."""
    ns.nft("table ip tos_test {\n chain pre {\n  type filter hook prerouting priority -300;\n"
           f"  ip saddr {CLIENT_IP} udp dport 1194 @nh,8,8 {tos:#x} counter\n"
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
