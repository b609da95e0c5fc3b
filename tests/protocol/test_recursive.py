"""Packets to the VPN server itself (OpenVPN forward.c, drop_if_recursive_routing(); against
openvpn 2.6 in tests/interop/test_more_directives.py)."""

from __future__ import annotations

import ipaddress

import pytest

from trivpn.protocol.recursive import RecursiveFilter


def _ipv4(dst: str) -> bytes:
    return (b"\x45\x00\x00\x1c" + bytes(8) + ipaddress.IPv4Address("198.18.8.10").packed
            + ipaddress.IPv4Address(dst).packed + bytes(8))


def _ipv6(dst: str) -> bytes:
    return (b"\x60" + bytes(7) + ipaddress.IPv6Address("2001:2::10").packed
            + ipaddress.IPv6Address(dst).packed)


@pytest.mark.directive("allow-recursive-routing")
def test_only_packets_to_the_server_are_dropped():
    f = RecursiveFilter.for_server("198.18.0.1")
    kept, dropped = f.split([_ipv4("198.18.0.1"), _ipv4("198.18.0.2"), _ipv6("2001:2::1")])
    assert dropped == 1 and kept == [_ipv4("198.18.0.2"), _ipv6("2001:2::1")]


@pytest.mark.directive("allow-recursive-routing")
def test_an_ipv6_server_and_a_tap_frame():
    f6 = RecursiveFilter.for_server("2001:2::1")
    assert f6.split([_ipv6("2001:2::1"), _ipv6("2001:2::2")])[1] == 1
    tap = RecursiveFilter.for_server("198.18.0.1", tap=True)
    frame = bytes(12) + b"\x08\x00" + _ipv4("198.18.0.1")
    arp = bytes(12) + b"\x08\x06" + _ipv4("198.18.0.1")
    assert tap.split([frame, arp]) == ([arp], 1)


@pytest.mark.directive("allow-recursive-routing")
def test_a_batch_without_such_packets_is_returned_as_is():
    batch = [_ipv4("198.18.9.1"), b"\x45"]  # even a truncated packet is no error
    kept, dropped = RecursiveFilter.for_server("198.18.0.1").split(batch)
    assert kept is batch and dropped == 0
