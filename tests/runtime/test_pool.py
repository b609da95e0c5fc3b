"""Client address allocation (OpenVPN 2.6 ``pool.c`` semantics) and the persist file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from trivpn.config import parse_config
from trivpn.config.derive import AddressPool, AddressPool6, address_pool, address_pool6
from trivpn.runtime.pool import (
    PoolAllocator,
    format_persist,
    parse_persist,
    read_persist_file,
    write_persist_file,
)

IP = ipaddress.IPv4Address


def _pool(topology: str, net: str = "198.18.8.0 255.255.255.0") -> AddressPool:
    text = (f"server {net}\ndev tun\ntopology {topology}\n"
            "ca ca.crt\ncert s.crt\nkey s.key\ndh none\n")
    opts = parse_config(text, "/etc/s.conf")
    pool = address_pool(opts)
    assert pool is not None
    return pool


@pytest.mark.parametrize(("topology", "first", "second"), [
    ("net30", "ifconfig 198.18.8.6 198.18.8.5", "ifconfig 198.18.8.10 198.18.8.9"),
    ("subnet", "ifconfig 198.18.8.2 255.255.255.0", "ifconfig 198.18.8.3 255.255.255.0"),
])
def test_first_clients_get_the_first_entries_in_order(topology: str, first: str, second: str):
    alloc = PoolAllocator(_pool(topology))
    a = alloc.acquire("alice", 1.0)
    b = alloc.acquire("bob", 1.0)
    assert a is not None and b is not None
    assert (a.ifconfig_option(), b.ifconfig_option()) == (first, second)


@pytest.mark.parametrize(("topology", "size"), [("net30", 1), ("subnet", 5)])
def test_exhausted_pool_returns_none_until_an_entry_is_released(topology: str, size: int):
    alloc = PoolAllocator(_pool(topology, "198.18.8.0 255.255.255.248"))
    entries = [alloc.acquire(f"c{i}", 1.0) for i in range(size)]
    assert all(e is not None for e in entries)
    assert alloc.acquire("late", 1.0) is None
    first = entries[0]
    assert first is not None
    alloc.release(first, 2.0)
    again = alloc.acquire("late", 3.0)
    assert again is not None and again.index == first.index


def test_same_common_name_gets_its_previous_address_back():
    alloc = PoolAllocator(_pool("subnet"))
    a = alloc.acquire("alice", 1.0)
    b = alloc.acquire("bob", 1.0)
    assert a is not None and b is not None
    alloc.release(a, 2.0)
    alloc.release(b, 3.0)
    assert alloc.acquire("bob", 4.0) == b
    assert alloc.acquire("alice", 4.0) == a


def test_new_name_prefers_never_used_entries_over_released_ones():
    alloc = PoolAllocator(_pool("subnet"))
    a = alloc.acquire("alice", 1.0)
    assert a is not None
    alloc.release(a, 2.0)
    c = alloc.acquire("carol", 3.0)
    assert c is not None and c.index != a.index


def test_duplicate_cn_takes_the_lowest_free_entry_and_remembers_no_names():
    alloc = PoolAllocator(_pool("subnet"), duplicate_cn=True)
    a = alloc.acquire("same", 1.0)
    b = alloc.acquire("same", 1.0)
    assert a is not None and b is not None and (a.index, b.index) == (0, 1)
    assert alloc.associations() == []


def test_release_of_a_free_entry_is_an_error():
    alloc = PoolAllocator(_pool("subnet"))
    a = alloc.acquire("alice", 1.0)
    assert a is not None
    alloc.release(a, 2.0)
    with pytest.raises(ValueError):
        alloc.release(a, 3.0)


@pytest.mark.parametrize(("topology", "stored"), [
    ("net30", "198.18.8.8"),   # net30 persists the /30 block's base address
    ("subnet", "198.18.8.3"),
])
def test_persist_file_round_trip_restores_associations(tmp_path: Path, topology: str,
                                                       stored: str):
    path = tmp_path / "ipp.txt"
    alloc = PoolAllocator(_pool(topology))
    alloc.acquire("alice", 1.0)
    bob = alloc.acquire("bob", 1.0)
    assert bob is not None
    write_persist_file(path, alloc.associations())
    assert path.read_text() == f"alice,{alloc.base_address(0)},\nbob,{stored},\n"

    fresh = PoolAllocator(_pool(topology))
    assert fresh.load(read_persist_file(path), 10.0) == 2
    assert fresh.acquire("carol", 11.0) not in (None, bob)
    assert fresh.acquire("bob", 11.0) == bob


def test_fixed_persist_entries_are_only_given_to_their_names():
    alloc = PoolAllocator(_pool("net30", "198.18.8.0 255.255.255.248"))  # one /30 block
    assert alloc.load([("alice", IP("198.18.8.4"))], 1.0, fixed=True) == 1
    assert alloc.acquire("bob", 2.0) is None
    assert alloc.acquire("alice", 2.0) is not None


def test_persist_parser_skips_malformed_lines_and_out_of_pool_addresses():
    text = "alice,198.18.8.2,\nnonsense\n,198.18.8.3\nbob,not-an-ip\ncarol,198.18.9.9,\n"
    parsed = parse_persist(text)
    assert parsed == [("alice", IP("198.18.8.2")), ("carol", IP("198.18.9.9"))]
    alloc = PoolAllocator(_pool("subnet"))
    assert alloc.load(parsed, 1.0) == 1
    assert format_persist(alloc.associations()) == "alice,198.18.8.2,\n"


def test_missing_persist_file_reads_as_empty(tmp_path: Path):
    assert read_persist_file(tmp_path / "absent.txt") == []


def test_persistence_writes_every_period_and_not_before(tmp_path: Path):
    import structlog

    from trivpn.config.options import PeriodicFile
    from trivpn.runtime.poolpersist import PoolPersistence

    path = tmp_path / "ipp.txt"
    alloc = PoolAllocator(_pool("subnet"))
    persistence = PoolPersistence(PeriodicFile(path, 60), alloc, structlog.get_logger())
    persistence.load(100.0)
    alloc.acquire("alice", 100.0)
    persistence.tick(159.0)
    assert not path.exists()
    persistence.tick(160.0)
    assert path.read_text().startswith("alice,")
    assert persistence.next_write == 220.0


def test_persistence_with_period_zero_reads_and_never_writes(tmp_path: Path):
    import structlog

    from trivpn.config.options import PeriodicFile
    from trivpn.runtime.poolpersist import PoolPersistence

    path = tmp_path / "ipp.txt"
    path.write_text("alice,198.18.8.9,\n")
    alloc = PoolAllocator(_pool("subnet"))
    persistence = PoolPersistence(PeriodicFile(path, 0), alloc, structlog.get_logger())
    persistence.load(0.0)
    alloc.acquire("bob", 1.0)
    persistence.tick(10_000.0)
    persistence.write()
    assert path.read_text() == "alice,198.18.8.9,\n"


@pytest.mark.directive("ifconfig-push")
def test_a_fixed_address_inside_the_pool_is_kept_from_pool_clients_while_reserved():
    alloc = PoolAllocator(_pool("subnet"))
    assert alloc.reserve(IP("198.18.8.2"))
    a = alloc.acquire("alice", 1.0)
    assert a is not None and a.local == IP("198.18.8.3")
    free = alloc.free
    alloc.unreserve(IP("198.18.8.2"), 2.0)
    assert alloc.free == free + 1
    given = {e.local for e in iter(lambda: alloc.acquire(None, 3.0), None)}
    assert IP("198.18.8.2") in given


@pytest.mark.directive("ifconfig-push")
def test_a_fixed_address_a_pool_client_holds_cannot_be_reserved():
    alloc = PoolAllocator(_pool("net30"))
    a = alloc.acquire("alice", 1.0)
    assert a is not None and a.local == IP("198.18.8.6")
    assert not alloc.reserve(IP("198.18.8.5"))  # same /30 block
    assert alloc.reserve(IP("198.18.200.1"))  # outside the pool: nothing to keep


def _pools6(extra: str = "") -> tuple[AddressPool, AddressPool6]:
    opts = parse_config("server 198.18.8.0 255.255.255.0\nserver-ipv6 2001:2:0:8::/64\n"
                        "dev tun\ntopology subnet\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n"
                        + extra, "/etc/s.conf")
    pool, pool6 = address_pool(opts), address_pool6(opts)
    assert pool is not None and pool6 is not None
    return pool, pool6


@pytest.mark.directive("ifconfig-pool-persist")
def test_persist_file_with_an_ipv6_pool_keeps_cn_ipv4_ipv6_lines(tmp_path: Path):
    pool, pool6 = _pools6()
    alloc = PoolAllocator(pool, pool6=pool6)
    alloc.acquire("alice", 1.0)
    alloc.acquire("bob", 1.0)
    path = tmp_path / "ipp.txt"
    write_persist_file(path, alloc.associations(), alloc.ipv6_of)
    assert path.read_text() == ("alice,198.18.8.2,2001:2:0:8::1000\n"
                                "bob,198.18.8.3,2001:2:0:8::1001\n")
    fresh = PoolAllocator(pool, pool6=pool6)
    assert fresh.load(read_persist_file(path), 10.0) == 2
    bob = fresh.acquire("bob", 11.0)
    assert bob is not None and pool6.address(bob.index) == ipaddress.IPv6Address(
        "2001:2:0:8::1001")


def test_a_smaller_ipv6_pool_bounds_how_many_clients_get_addresses():
    pool, pool6 = _pools6()
    small6 = AddressPool6(pool6.base, 2, pool6.bits, pool6.server)
    alloc = PoolAllocator(pool, pool6=small6)
    assert alloc.acquire("a", 1.0) is not None and alloc.acquire("b", 1.0) is not None
    assert alloc.acquire("c", 1.0) is None
