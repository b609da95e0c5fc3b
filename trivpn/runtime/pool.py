"""Client address allocation from the ``server`` helper's pool, and ``ifconfig-pool-persist``.

Pure bookkeeping (the caller passes ``now``; file I/O is in the two small functions at the end).
Selection follows OpenVPN 2.6 (``pool.c``; docs/protocol.md §10.5): a free entry of the same
common name wins; otherwise the free entry released longest ago, where never-used entries
count as released at time 0 and so go first, lowest address first. With ``duplicate-cn`` the
lowest free entry is taken and common names are not remembered.

The persist file holds one ``CN,IP,`` line per remembered association. ``IP`` is the entry's
base address: the client address for subnet pools, the first address of the /30 block for net30
(as OpenVPN writes it). Entries read from the file count as just released, so a new client gets
a never-used address before one that is reserved for someone else. ``ifconfig-pool-persist FILE
0`` makes the file read-only and its associations fixed: those entries go only to their names.

A client with a fixed ``ifconfig-push`` address inside the pool holds its entry while it is
connected (:meth:`PoolAllocator.reserve`), so no pool client gets the same address; so does a
fixed ``ifconfig-ipv6-push`` address inside the IPv6 pool (:meth:`PoolAllocator.reserve_index`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trivpn.config.derive import AddressPool, AddressPool6, PoolEntry
from trivpn.runtime.files import write_atomically

Association = tuple[str, ipaddress.IPv4Address]
"""(common name, base address) as stored in the persist file."""

Ipv6Of = Callable[[ipaddress.IPv4Address], "ipaddress.IPv6Address | None"]
"""The IPv6 address paired with a persisted IPv4 base address (server-ipv6)."""


@dataclass(slots=True)
class _Slot:
    common_name: str | None = None
    in_use: bool = False
    last_release: float = 0.0
    fixed: bool = False


class PoolAllocator:
    """Which pool entries are in use, and by which common name they were last used."""

    __slots__ = ("_duplicate_cn", "_slots", "pool", "pool6")

    def __init__(self, pool: AddressPool | None, *, duplicate_cn: bool = False,
                 pool6: AddressPool6 | None = None) -> None:
        """``pool6``: the IPv6 pool paired by index; the smaller pool bounds both (pool.c).
        ``pool`` None: an IPv6-only server (entries are taken with :meth:`acquire_index`), or
        none at all."""
        self.pool = pool
        self.pool6 = pool6
        self._duplicate_cn = duplicate_cn
        if pool is None:  # IPv6-only, or no pool at all (server-bridge's DHCP form)
            size = 0 if pool6 is None else pool6.size
        else:
            size = pool.size if pool6 is None else min(pool.size, pool6.size)
        self._slots = [_Slot() for _ in range(size)]

    @property
    def size(self) -> int:
        return len(self._slots)

    @property
    def in_use(self) -> int:
        return sum(1 for s in self._slots if s.in_use)

    @property
    def free(self) -> int:
        return len(self._slots) - self.in_use

    def acquire(self, common_name: str | None, now: float) -> PoolEntry | None:
        """Take an entry for a client; None when the pool is exhausted."""
        assert self.pool is not None, "an IPv6-only pool is taken with acquire_index()"
        index = self.acquire_index(common_name, now)
        return None if index is None else self.pool.entry(index)

    def acquire_index(self, common_name: str | None, now: float) -> int | None:
        """Take an entry for a client (its index); None when the pool is exhausted. Give it
        back with :meth:`unreserve_index`."""
        index = self._find(common_name)
        if index is None:
            return None
        slot = self._slots[index]
        slot.in_use = True
        slot.common_name = None if self._duplicate_cn else common_name
        slot.last_release = 0.0
        return index

    def _find(self, common_name: str | None) -> int | None:
        best: int | None = None
        for i, slot in enumerate(self._slots):
            if slot.in_use:
                continue
            if self._duplicate_cn:
                return i
            if common_name is not None and slot.common_name == common_name:
                return i
            if slot.fixed:
                continue
            if best is None or slot.last_release < self._slots[best].last_release:
                best = i
        return best

    def release(self, entry: PoolEntry, now: float) -> None:
        """Give an entry back; its common name stays associated with it."""
        slot = self._slots[entry.index]
        if not slot.in_use:
            raise ValueError(f"pool entry {entry.index} is not in use")
        slot.in_use = False
        slot.last_release = now

    def reserve(self, address: ipaddress.IPv4Address) -> bool:
        """Keep the entry of ``address`` (a client's fixed ``ifconfig-push`` address, for
        net30 any address of the /30 block) from being handed out while that client is
        connected. False when a pool client holds it; True otherwise (also outside the
        pool)."""
        index = self.index_of_base(address)
        if index is None:
            return True
        slot = self._slots[index]
        if slot.in_use:
            return False
        slot.in_use = True
        return True

    def unreserve(self, address: ipaddress.IPv4Address, now: float) -> None:
        """The fixed-address client is gone: its entry may be handed out again."""
        index = self.index_of_base(address)
        if index is not None and self._slots[index].in_use:
            self._slots[index].in_use = False
            self._slots[index].last_release = now

    def take_index(self, common_name: str | None) -> int | None:
        """Take the entry a pool client would get, for its IPv6 only (a fixed-IPv4 client
        without ``ifconfig-ipv6-push``); the name is not remembered, as OpenVPN gives the
        entry back with its name cleared. Give it back with :meth:`unreserve_index`."""
        index = self._find(common_name)
        if index is None:
            return None
        slot = self._slots[index]
        slot.in_use = True
        if slot.common_name == common_name:
            slot.common_name = None
        return index

    def reserve_index(self, index: int) -> bool:
        """Keep entry ``index`` from being handed out (a client's fixed
        ``ifconfig-ipv6-push`` address of the IPv6 pool: the pools are paired, so the whole
        entry). False when a pool client holds it; True otherwise (also past the pool)."""
        if not 0 <= index < len(self._slots):
            return True
        slot = self._slots[index]
        if slot.in_use:
            return False
        slot.in_use = True
        return True

    def unreserve_index(self, index: int, now: float) -> None:
        """The client that reserved entry ``index`` is gone."""
        if 0 <= index < len(self._slots) and self._slots[index].in_use:
            self._slots[index].in_use = False
            self._slots[index].last_release = now

    def base_address(self, index: int) -> ipaddress.IPv4Address:
        """The address the persist file names for entry ``index``."""
        assert self.pool is not None
        step = 4 if self.pool.topology == "net30" else 1
        return self.pool.start + step * index

    def index_of_base(self, address: ipaddress.IPv4Address) -> int | None:
        """The entry a persisted address belongs to (for net30 any address of the /30; None
        without an IPv4 pool)."""
        if self.pool is None:
            return None
        offset = int(address) - int(self.pool.start)
        if offset < 0:
            return None
        index = offset // 4 if self.pool.topology == "net30" else offset
        return index if index < len(self._slots) else None

    def load(self, associations: Iterable[Association], now: float, *,
             fixed: bool = False) -> int:
        """Apply associations read from the persist file; returns how many were applied.

        Addresses outside the pool and entries currently in use are skipped; with
        ``duplicate-cn`` nothing is applied (OpenVPN ignores the file then, too).
        """
        if self._duplicate_cn:
            return 0
        applied = 0
        for common_name, address in associations:
            index = self.index_of_base(address)
            if index is None or self._slots[index].in_use:
                continue
            slot = self._slots[index]
            slot.common_name = common_name
            slot.last_release = now
            slot.fixed = fixed
            applied += 1
        return applied

    def ipv6_of(self, address: ipaddress.IPv4Address) -> ipaddress.IPv6Address | None:
        """The IPv6 address of the entry whose base address is ``address`` (None without an
        IPv6 pool)."""
        index = self.index_of_base(address)
        if self.pool6 is None or index is None:
            return None
        return self.pool6.address(index)

    def associations(self) -> list[Association]:
        """Every remembered (common name, base address), in pool order."""
        return [(slot.common_name, self.base_address(i))
                for i, slot in enumerate(self._slots) if slot.common_name is not None]


def parse_persist(text: str) -> list[Association]:
    """``CN,IP[,IPv6]`` lines; malformed lines are skipped as OpenVPN does. The IPv6 field is
    not needed: the IPv6 address follows from the IPv4 entry (the pools are paired)."""
    out: list[Association] = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if len(fields) < 2 or not fields[0]:
            continue
        try:
            address = ipaddress.IPv4Address(fields[1].strip())
        except ValueError:
            continue
        out.append((fields[0], address))
    return out


def persist_lines(associations: Iterable[Association], ipv6_of: Ipv6Of | None = None
                  ) -> list[str]:
    """``CN,IPv4,IPv6`` lines as OpenVPN 2.6 writes them (pool.c ifconfig_pool_write); the
    IPv6 field is empty without an IPv6 pool."""
    out = []
    for cn, address in associations:
        v6 = ipv6_of(address) if ipv6_of is not None else None
        out.append(f"{cn},{address},{v6 if v6 is not None else ''}")
    return out


def format_persist(associations: Iterable[Association], ipv6_of: Ipv6Of | None = None) -> str:
    return "".join(line + "\n" for line in persist_lines(associations, ipv6_of))


def read_persist_file(path: Path) -> list[Association]:
    """The associations in ``path``; a missing file is an empty list."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return parse_persist(text)


def write_persist_file(path: Path, associations: Iterable[Association],
                       ipv6_of: Ipv6Of | None = None) -> None:
    """Replace ``path`` atomically, never through a symlink (a ``mkstemp`` temp file next to
    it, then rename: :func:`trivpn.runtime.files.write_atomically`)."""
    write_atomically(path, format_persist(associations, ipv6_of).encode())
