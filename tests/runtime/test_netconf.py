"""NetConfig against the kernel, inside test namespaces."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from tests.netns import Netns, NetnsLab, NetnsPair
from trivpn.runtime.errors import NoRouteError, RuntimeSetupError
from trivpn.runtime.netconf import NetConfig


@pytest.fixture
def multihomed(netns_lab: NetnsLab) -> Iterator[Netns]:
    """``h`` with two veths: veth0 198.18.1.1/24 (to ``p``) and veth1 198.18.2.1/24 (to ``q``)."""
    h, p, q = netns_lab.add("h"), netns_lab.add("p"), netns_lab.add("q")
    netns_lab.veth(h, p, "198.18.1.1/24", "198.18.1.2/24")
    netns_lab.veth(h, q, "198.18.2.1/24", "198.18.2.2/24")
    yield h


def _routes(ns: Netns) -> str:
    return ns.run(["ip", "route", "show"]).stdout


def _addrs(ns: Netns, dev: str) -> str:
    return ns.run(["ip", "-o", "addr", "show", "dev", dev]).stdout


def _link(ns: Netns, dev: str) -> str:
    return ns.run(["ip", "-o", "link", "show", "dev", dev]).stdout


def test_added_route_is_in_kernel_and_undo_removes_it(netns_pair: NetnsPair) -> None:
    a = netns_pair.a
    with NetConfig(netns=a.name) as net:
        net.add_route("198.19.5.0/24", gateway="198.18.0.2", metric=42)
        assert "198.19.5.0/24 via 198.18.0.2 dev veth0 proto static metric 42" in _routes(a)
        net.undo()
        assert "198.19.5.0/24" not in _routes(a)


def test_route_via_device_only(netns_pair: NetnsPair) -> None:
    a = netns_pair.a
    with NetConfig(netns=a.name) as net:
        net.add_route("198.19.6.0/24", ifname="veth0")
        assert "198.19.6.0/24 dev veth0" in _routes(a)
    assert "198.19.6.0/24" not in _routes(a)


def test_context_exit_undoes_in_reverse_order(netns_pair: NetnsPair) -> None:
    a = netns_pair.a
    with NetConfig(netns=a.name) as net:
        net.add_address("veth0", "198.18.3.1", 24)
        net.add_route("198.19.7.0/24", gateway="198.18.3.2")  # needs the address above
        assert net.pending_undo == [
            "remove route 198.19.7.0/24 via 198.18.3.2",
            "remove address 198.18.3.1/24 on veth0",
        ]
    assert "198.18.3.1" not in _addrs(a, "veth0")
    assert "198.19.7.0" not in _routes(a)


def test_removed_route_is_forgotten_by_undo(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net:
        net.add_route("198.19.8.0/24", gateway="198.18.0.2")
        net.remove_route("198.19.8.0/24", gateway="198.18.0.2")
        assert net.pending_undo == []


def test_duplicate_route_error_names_the_route(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net:
        net.add_route("198.19.9.0/24", gateway="198.18.0.2")
        with pytest.raises(RuntimeSetupError) as info:
            net.add_route("198.19.9.0/24", gateway="198.18.0.2")
    assert info.value.errno == errno.EEXIST
    assert info.value.where == "198.19.9.0/24 via 198.18.0.2"
    assert info.value.what == "adding route"


def test_unknown_interface_is_reported_by_name(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net, pytest.raises(RuntimeSetupError) as info:
        net.set_up("nosuch0")
    assert (info.value.where, info.value.errno) == ("nosuch0", errno.ENODEV)


def test_mtu_is_set_and_restored(netns_pair: NetnsPair) -> None:
    a = netns_pair.a
    with NetConfig(netns=a.name) as net:
        net.set_mtu("veth0", 1400)
        assert "mtu 1400" in _link(a, "veth0")
    assert "mtu 1500" in _link(a, "veth0")


def test_link_brought_up_goes_down_on_undo_only_if_it_was_down(netns_lab: NetnsLab) -> None:
    a, b = netns_lab.add("a"), netns_lab.add("b")
    netns_lab.veth(a, b)  # both ends up
    a.ip("link", "add", "dum0", "type", "veth", "peer", "name", "dum1")  # both down
    with NetConfig(netns=a.name) as net:
        net.set_up("veth0")
        net.set_up("dum0")
        assert "UP" in _link(a, "dum0").split(">")[0]
    assert "UP" not in _link(a, "dum0").split(">")[0]
    assert "UP" in _link(a, "veth0").split(">")[0]


def test_point_to_point_address_has_peer(netns_pair: NetnsPair) -> None:
    a = netns_pair.a
    with NetConfig(netns=a.name) as net:
        net.add_ptp_address("veth0", "198.18.4.6", "198.18.4.5")
        assert "inet 198.18.4.6 peer 198.18.4.5/32" in _addrs(a, "veth0")
        listed = [x for x in net.addresses("veth0") if x.address == "198.18.4.6"]
        assert [(x.peer, x.prefixlen) for x in listed] == [("198.18.4.5", 32)]
    assert "198.18.4.6" not in _addrs(a, "veth0")


def test_addresses_lists_interface_addresses(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.b.name) as net:
        found = {(x.ifname, x.address, x.prefixlen, x.peer) for x in net.addresses(family=2)}
    assert found == {("lo", "127.0.0.1", 8, None), ("veth0", "198.18.0.2", 24, None)}


@pytest.mark.parametrize(
    ("dst", "oif", "source", "gateway"),
    [
        ("198.18.1.2", "veth0", "198.18.1.1", None),
        ("198.18.2.9", "veth1", "198.18.2.1", None),
        ("198.19.0.1", "veth1", "198.18.2.1", "198.18.2.2"),  # via the default route
    ],
)
def test_route_get_reports_interface_and_source(multihomed: Netns, dst: str, oif: str,
                                                source: str, gateway: str | None) -> None:
    multihomed.ip("route", "add", "default", "via", "198.18.2.2")
    with NetConfig(netns=multihomed.name) as net:
        found = net.route_get(dst)
    assert (found.dst, found.oif, found.source, found.gateway) == (dst, oif, source, gateway)
    assert (found.type, found.table) == ("unicast", 254)


def test_route_get_with_source_address(multihomed: Netns) -> None:
    multihomed.ip("route", "add", "198.19.1.0/24", "via", "198.18.1.2")
    with NetConfig(netns=multihomed.name) as net:
        found = net.route_get("198.19.1.7", src="198.18.2.1")
    assert (found.oif, found.src, found.source, found.gateway) == (
        "veth0", "198.18.2.1", "198.18.2.1", "198.18.1.2")


def test_route_get_of_local_address(multihomed: Netns) -> None:
    with NetConfig(netns=multihomed.name) as net:
        found = net.route_get("198.18.1.1")
    assert (found.type, found.oif) == ("local", "lo")


def test_route_get_without_route_raises_no_route(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net, pytest.raises(NoRouteError) as info:
        net.route_get("198.19.200.1")
    assert info.value.errno == errno.ENETUNREACH
    assert info.value.where == "198.19.200.1"


def test_default_routes_lists_each_default(multihomed: Netns) -> None:
    multihomed.ip("route", "add", "default", "via", "198.18.1.2", "metric", "100")
    multihomed.ip("route", "add", "default", "via", "198.18.2.2", "metric", "200")
    with NetConfig(netns=multihomed.name) as net:
        found = [(r.dst, r.gateway, r.oif, r.metric) for r in net.default_routes()]
    assert found == [("0.0.0.0/0", "198.18.1.2", "veth0", 100),
                     ("0.0.0.0/0", "198.18.2.2", "veth1", 200)]


def test_default_routes_include_ecmp_nexthops(multihomed: Netns) -> None:
    multihomed.ip("route", "add", "default", "nexthop", "via", "198.18.1.2", "weight", "1",
                  "nexthop", "via", "198.18.2.2", "weight", "3")
    with NetConfig(netns=multihomed.name) as net:
        (route,) = net.default_routes()
    hops = sorted((h.gateway, h.oif, h.weight) for h in route.nexthops)
    assert hops == [("198.18.1.2", "veth0", 1), ("198.18.2.2", "veth1", 3)]


def test_no_default_route_gives_empty_list(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net:
        assert net.default_routes() == []


def test_undo_skips_what_already_vanished(netns_lab: NetnsLab) -> None:
    a, b = netns_lab.add("a"), netns_lab.add("b")
    netns_lab.veth(a, b)
    with NetConfig(netns=a.name) as net:
        net.add_address("veth0", "198.18.3.1", 24)
        net.add_route("198.19.3.0/24", gateway="198.18.3.2")
        a.ip("link", "del", "veth0")
        net.undo()  # must not raise
        assert net.pending_undo == []


def test_invalid_route_destination_is_a_setup_error(netns_pair: NetnsPair) -> None:
    with NetConfig(netns=netns_pair.a.name) as net, pytest.raises(RuntimeSetupError):
        net.add_route("198.19.3.1/24", gateway="198.18.0.2")  # host bits set
