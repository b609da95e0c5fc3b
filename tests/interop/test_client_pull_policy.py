"""``route-nopull`` and ``pull-filter`` against a real ``openvpn`` 2.6 server that pushes
routes, redirect-gateway and DNS: a trivpn client ends with exactly the routes a real openvpn
client with the same config ends with (topology: :mod:`tests.interop.sidebyside`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.clientkit import VPN_SERVER, ping, ping_ok, wait_until
from tests.interop.sidebyside import (
    OPENVPN_SIDE,
    TRIVPN_SIDE,
    Route,
    SideBySide,
    make_side_by_side,
    route_table,
)
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

PUSHES = ('push "route 198.18.9.0 255.255.255.0"', 'push "route 198.18.10.0 255.255.255.0"',
          'push "redirect-gateway def1"', 'push "dhcp-option DNS 198.18.8.1"',
          'push "route-metric 7"')
VPN_SUBNET = ("198.18.8.0/24", "", "tun", 0)
DEF1 = {("0.0.0.0/1", "198.18.8.1", "tun", 0), ("128.0.0.0/1", "198.18.8.1", "tun", 0)}


@pytest.fixture
def side_by_side(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> SideBySide:
    return make_side_by_side(lab, tmp_path)


def _both_up(s: SideBySide, extra: tuple[str, ...]) -> tuple[set[Route], set[Route]]:
    s.start_server("udp", extra=PUSHES)
    trivpn = s.start_trivpn("udp", extra)
    ovpn = s.start_openvpn("udp", extra)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ping_ok(s.trivpn_ns, VPN_SERVER)
    ping_ok(s.openvpn_ns, VPN_SERVER)
    return route_table(s.trivpn_ns, TRIVPN_SIDE[0]), route_table(s.openvpn_ns, OPENVPN_SIDE[0])


@pytest.mark.directive("route-nopull")
def test_route_nopull_installs_no_pushed_route_like_openvpn(side_by_side: SideBySide):
    ours, theirs = _both_up(side_by_side, ("route-nopull", "route 198.18.11.0 255.255.255.0"))
    # the address (and its subnet) still comes from the push; the client's own route stays
    expected = {VPN_SUBNET, ("198.18.11.0/24", "198.18.8.1", "tun", 0)}
    assert theirs == expected
    assert ours == expected


@pytest.mark.directive("pull-filter")
def test_pull_filter_accept_and_ignore_pick_routes_like_openvpn(side_by_side: SideBySide):
    ours, theirs = _both_up(side_by_side, (
        'pull-filter accept "route 198.18.9."', 'pull-filter ignore "route 198.18."',
        'pull-filter ignore "redirect-gateway"'))
    expected = {VPN_SUBNET, ("198.18.9.0/24", "198.18.8.1", "tun", 7)}
    assert theirs == expected
    assert ours == expected


@pytest.mark.directive("pull-filter")
def test_without_filters_both_clients_install_every_pushed_route(side_by_side: SideBySide):
    ours, theirs = _both_up(side_by_side, ())
    routes = {("198.18.9.0/24", "198.18.8.1", "tun", 7), ("198.18.10.0/24", "198.18.8.1", "tun", 7)}
    assert theirs == routes | DEF1 | {VPN_SUBNET}
    # trivpn also keeps the server reachable outside the tunnel; openvpn 2.6 tries to and
    # fails here ("ERROR: Linux route add command failed": the namespace has no default
    # gateway to route the server's address through)
    assert ours == theirs | {("SERVER", "", "veth", 0)}


@pytest.mark.directive("pull-filter")
def test_pull_filter_reject_restarts_and_never_brings_the_tunnel_up(side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=PUSHES)
    extra = ('pull-filter reject "redirect-gateway"',)
    trivpn = s.start_trivpn("udp", extra)
    ovpn = s.start_openvpn("udp", extra)
    assert ovpn.wait_for("Pushed option rejected by filter: 'redirect-gateway def1'. "
                         "Restarting.", 20), ovpn.text()[-4000:]
    failed = trivpn.wait_event("handshake_failed", 20)
    assert failed is not None, trivpn.text()[-4000:]
    assert "rejected by pull-filter: 'redirect-gateway def1'" in failed["detail"]
    # both keep trying (connect-retry 1), neither ever configures the tunnel
    assert wait_until(lambda: trivpn.count("reconnecting") >= 2, 10), trivpn.text()[-4000:]
    assert wait_until(lambda: ovpn.text().count("Pushed option rejected by filter") >= 2, 10)
    assert trivpn.count("tun_configured") == 0
    assert "Initialization Sequence Completed" not in ovpn.text()


def test_pushed_route_covering_the_server_keeps_trivpn_up_where_openvpn_loops(
        side_by_side: SideBySide):
    # each /25 covers the server's address on one side and is more specific than the
    # connected /24, so the tunnel's own packets would follow it into the tunnel
    s = side_by_side
    s.start_server("udp", extra=('push "route 198.18.0.0 255.255.255.128"',
                                 'push "route 198.18.1.0 255.255.255.128"'))
    trivpn = s.start_trivpn("udp", ())
    ovpn = s.start_openvpn("udp", ())
    up = trivpn.wait_event("tun_configured", 20)
    assert up is not None, trivpn.text()[-4000:]
    assert f"{TRIVPN_SIDE[0]}/32 dev veth0" in up["routes"]
    warning = trivpn.wait_event("tunnel_warning", 1)
    assert warning is not None and "cover the VPN server's address" in warning["detail"]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ping_ok(s.trivpn_ns, VPN_SERVER)
    # openvpn installs the route as pushed: its packets to the server now enter its own
    # tunnel, so nothing it sends reaches the server any more
    lookup = s.openvpn_ns.run(["ip", "route", "get", OPENVPN_SIDE[0]]).stdout
    assert "dev tun" in lookup, lookup
    assert ping(s.openvpn_ns, VPN_SERVER, count=3).returncode != 0
    ours = s.trivpn_ns.run(["ip", "route", "get", TRIVPN_SIDE[0]]).stdout
    assert "dev veth0" in ours, ours
    assert trivpn.count("ping_restart") == 0 and trivpn.count("reconnecting") == 0
