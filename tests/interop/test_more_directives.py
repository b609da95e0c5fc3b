"""Issue-12 follow-ups ("more"): client directives checked side by side against a real
``openvpn`` 2.6 client (topology: :mod:`tests.interop.sidebyside`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.clientkit import VPN_SERVER, ping_ok
from tests.interop.sidebyside import (
    OPENVPN_SIDE,
    TRIVPN_SIDE,
    SideBySide,
    make_side_by_side,
    route_table,
)
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

# names both clients resolve through their namespace's own hosts file (``ip netns exec``
# bind-mounts /etc/netns/NAME/hosts over /etc/hosts)
HOSTS = "198.18.9.0 vpnnet.trivpn.test\n198.18.8.1 vpngw.trivpn.test\n"
FQDN_PUSHES = ('push "route vpnnet.trivpn.test 255.255.255.0"',
               'push "route 198.18.10.0 255.255.255.0 vpngw.trivpn.test"')
VPN_SUBNET = ("198.18.8.0/24", "", "tun", 0)


@pytest.fixture
def side_by_side(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Iterator[SideBySide]:
    s = make_side_by_side(lab, tmp_path)
    made = []
    for ns in (s.trivpn_ns, s.openvpn_ns):
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(HOSTS)
        made.append(etc)
    try:
        yield s
    finally:
        for etc in made:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.mark.directive("allow-pull-fqdn")
def test_allow_pull_fqdn_resolves_pushed_route_names_like_openvpn(side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=FQDN_PUSHES)
    trivpn = s.start_trivpn("udp", ("allow-pull-fqdn",))
    ovpn = s.start_openvpn("udp", ("allow-pull-fqdn",))
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ping_ok(s.trivpn_ns, VPN_SERVER)
    expected = {VPN_SUBNET, ("198.18.9.0/24", "198.18.8.1", "tun", 0),
                ("198.18.10.0/24", "198.18.8.1", "tun", 0)}
    assert route_table(s.openvpn_ns, OPENVPN_SIDE[0]) == expected
    assert route_table(s.trivpn_ns, TRIVPN_SIDE[0]) == expected


@pytest.mark.directive("allow-pull-fqdn")
def test_without_allow_pull_fqdn_a_pushed_name_is_refused_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=FQDN_PUSHES[:1])
    trivpn = s.start_trivpn("udp", ())
    ovpn = s.start_openvpn("udp", ())
    assert ovpn.wait_for("route parameter network/IP 'vpnnet.trivpn.test' must be a valid "
                         "address", 20), ovpn.text()[-4000:]
    failed = trivpn.wait_event("handshake_failed", 20)
    assert failed is not None, trivpn.text()[-4000:]
    assert ("'vpnnet.trivpn.test' is not an IPv4 address (a host name needs allow-pull-fqdn)"
            in failed["detail"])
    # openvpn drops just that option and comes up without the route; trivpn refuses the
    # whole push (its policy for malformed pushes, trivpn/protocol/push.py) and retries
    assert ovpn.wait_for("Initialization Sequence Completed", 10), ovpn.text()[-4000:]
    assert route_table(s.openvpn_ns, OPENVPN_SIDE[0]) == {VPN_SUBNET}
    assert trivpn.count("tun_configured") == 0
