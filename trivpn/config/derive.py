"""Values OpenVPN derives from several options: the ``server`` and ``keepalive`` helper
expansions (``helper.c``), the server's push list in PUSH_REPLY order and the address pool
(``pool.c``). See docs/protocol.md §8.3 and §10.5."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from trivpn.config.options import Ifconfig, Ifconfig6, Options, Topology


@dataclass(frozen=True, slots=True)
class PingSettings:
    """Effective ``ping``/``ping-restart``/``ping-exit`` seconds (None = off). At most one of
    ``ping_restart``/``ping_exit`` is set: they are one timer with two actions."""

    ping: int | None
    ping_restart: int | None
    ping_exit: int | None


def ping_settings(o: Options) -> PingSettings:
    """This side's own timers. ``keepalive A B`` means ping A, ping-restart 2B on a server and
    ping A, ping-restart B elsewhere; otherwise the explicit directives apply."""
    if o.keepalive is not None:
        k = o.keepalive
        restart = k.timeout * 2 if o.mode == "server" else k.timeout
        return PingSettings(k.interval, restart, None)
    return PingSettings(o.ping or None, o.ping_restart or None, o.ping_exit or None)


def server_push_options(o: Options) -> tuple[str, ...]:
    """The options every client of this server gets, in OpenVPN's order: the config's ``push``
    lines, then what ``server`` adds, then ``keepalive``'s ``ping``/``ping-restart``, then
    ``tcp-nodelay``'s socket flag. Per-client items (``ifconfig``, ``peer-id``, ``cipher``...)
    are added by the server at connect time."""
    pushes = list(o.pushes)
    if o.server_ipv6 is not None:
        pushes.append("tun-ipv6")  # helper.c pushes it; 2.6 clients ignore it
    if o.server_bridge is not None:  # helper.c: push "route-gateway GW"
        pushes.append(f"route-gateway {o.server_bridge.gateway}")
    elif o.server_bridge_proxy_dhcp and not o.server_bridge_nogw:
        pushes.append("route-gateway dhcp")  # helper.c: print_opt_route_gateway_dhcp()
    if o.server is not None:
        net = o.server.network
        first = net.network_address + 1
        if o.dev_type == "tap":
            pushes.append(f"route-gateway {first}")
        else:
            if o.topology in ("net30", "p2p"):
                if o.client_to_client:
                    pushes.append(f"route {net.network_address} {net.netmask}")
                elif o.topology == "net30":
                    pushes.append(f"route {first}")
            else:
                pushes.append(f"route-gateway {first}")
            pushes.append(f"topology {o.topology}")
    if o.keepalive is not None and o.mode == "server":
        pushes.append(f"ping {o.keepalive.interval}")
        pushes.append(f"ping-restart {o.keepalive.timeout}")
    if o.tcp_nodelay and o.mode == "server":
        pushes.append("socket-flags TCP_NODELAY")
    return tuple(pushes)


def server_tun_ifconfig(o: Options) -> Ifconfig | None:
    """The server's own tun address from ``server NET MASK``: NET+1 with peer NET+2 (net30,
    p2p) or NET+1 with the netmask (subnet, tap); otherwise an explicit ``ifconfig``."""
    if o.server is None:
        return o.ifconfig
    net = o.server.network
    first = net.network_address + 1
    if o.dev_type == "tun" and o.topology in ("net30", "p2p"):
        return Ifconfig(first, net.network_address + 2)
    return Ifconfig(first, net.netmask)


def server_tun_ifconfig6(o: Options) -> Ifconfig6 | None:
    """The server's own IPv6 tun address: NET+1/BITS with peer NET+2 from ``server-ipv6``
    (helper.c helper_client_server), otherwise an explicit ``ifconfig-ipv6``."""
    if o.server_ipv6 is None:
        return o.ifconfig_ipv6
    net = o.server_ipv6
    return Ifconfig6(net.network_address + 1, net.prefixlen, net.network_address + 2)


@dataclass(frozen=True, slots=True)
class AddressPool6:
    """The IPv6 pool: entry ``i`` of the IPv4 pool gets ``base + i`` (OpenVPN's pool.c pairs
    both pools by index). ``bits`` is the prefix pushed to clients (the server's own
    ``ifconfig-ipv6`` BITS); ``server`` the server's tun address (the pushed REMOTE)."""

    base: ipaddress.IPv6Address
    size: int
    bits: int
    server: ipaddress.IPv6Address

    def address(self, index: int) -> ipaddress.IPv6Address:
        if not 0 <= index < self.size:
            raise IndexError(f"IPv6 pool has {self.size} entries, no entry {index}")
        return self.base + index

    def index_of(self, address: ipaddress.IPv6Address) -> int | None:
        offset = int(address) - int(self.base)
        return offset if 0 <= offset < self.size else None

    def ifconfig_option(self, index: int) -> str:
        return f"ifconfig-ipv6 {self.address(index)}/{self.bits} {self.server}"


IFCONFIG_POOL_MAX = 65536
"""OpenVPN's cap on a pool's size (pool.h IFCONFIG_POOL_MAX)."""


def address_pool6(o: Options) -> AddressPool6 | None:
    """The IPv6 pool from ``server-ipv6`` (NET+0x1000 for prefixes shorter than /112, else
    NET+2) or ``ifconfig-ipv6-pool BASE/BITS``. A base whose low 32 bits are zero starts one
    higher, and a pool inside the last 16 bits ends at the prefix's end (pool.c
    ifconfig_pool_init)."""
    own = server_tun_ifconfig6(o)
    if own is None:
        return None
    if o.server_ipv6 is not None:
        net = o.server_ipv6
        base = net.network_address + (0x1000 if net.prefixlen < 112 else 2)
        bits = net.prefixlen
    elif o.ifconfig_ipv6_pool is not None:
        base, bits = o.ifconfig_ipv6_pool.ip, o.ifconfig_ipv6_pool.network.prefixlen
    else:
        return None
    low = int(base) & 0xFFFFFFFF
    if low == 0:
        base += 1
        low = 1
    span = 1 << (128 - bits)
    size = span - (low & (span - 1)) if bits >= 112 else IFCONFIG_POOL_MAX
    return AddressPool6(base, max(size, 0), own.bits, own.address)


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One assignable client address: ``ifconfig LOCAL REMOTE`` as pushed to that client."""

    index: int
    local: ipaddress.IPv4Address
    remote: ipaddress.IPv4Address

    def ifconfig_option(self) -> str:
        return f"ifconfig {self.local} {self.remote}"


@dataclass(frozen=True, slots=True)
class AddressPool:
    """The ``server`` helper's IPv4 pool. ``start``/``end`` are inclusive; for net30 each entry
    is a /30 block (client = block+2, its peer = block+1), otherwise one address per entry."""

    topology: Topology
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address
    server: ipaddress.IPv4Address

    @property
    def size(self) -> int:
        span = int(self.end) - int(self.start) + 1
        return span // 4 if self.topology == "net30" else span

    def entry(self, index: int) -> PoolEntry:
        if not 0 <= index < self.size:
            raise IndexError(f"pool has {self.size} entries, no entry {index}")
        if self.topology == "net30":
            block = self.start + 4 * index
            return PoolEntry(index, block + 2, block + 1)
        local = self.start + index
        if self.topology == "p2p":
            return PoolEntry(index, local, self.server)
        return PoolEntry(index, local, self.netmask)

    def index_of(self, address: ipaddress.IPv4Address) -> int | None:
        """The entry whose client address is ``address``, or None."""
        offset = int(address) - int(self.start)
        if self.topology == "net30":
            index, rest = divmod(offset, 4)
            ok = rest == 2
        else:
            index, ok = offset, True
        return index if ok and 0 <= index < self.size else None

    def __iter__(self) -> Iterator[PoolEntry]:
        return (self.entry(i) for i in range(self.size))

    def __len__(self) -> int:
        return self.size


def address_pool(o: Options) -> AddressPool | None:
    """The pool ``server NET MASK`` defines (None without ``server`` or with ``nopool``), or
    an explicit ``ifconfig-pool START END [NETMASK]``.

    net30/p2p: from NET+4 to broadcast-4 (broadcast itself for a /29); subnet and tap:
    NET+2 .. broadcast-1 (helper.c ``helper_client_server()``)."""
    if o.ifconfig_pool is not None:
        return _explicit_pool(o)
    if o.server_bridge is not None:  # server-bridge GW MASK POOL_START POOL_END
        b = o.server_bridge
        return AddressPool("subnet", b.pool_start, b.pool_end, b.netmask, b.gateway)
    if o.server is None or o.server.nopool:
        return None
    net = o.server.network
    base, bcast = net.network_address, net.broadcast_address
    server = base + 1
    if o.dev_type == "tun" and o.topology in ("net30", "p2p"):
        reserve = 0 if net.prefixlen == 29 else 4
        return AddressPool(o.topology, base + 4, bcast - reserve, net.netmask, server)
    return AddressPool("subnet", base + 2, bcast - 1, net.netmask, server)


def _explicit_pool(o: Options) -> AddressPool | None:
    """``ifconfig-pool``, as pool.c ``ifconfig_pool_init()`` lays it out: net30 in whole /30
    blocks (START rounded down, END up), otherwise one address per entry. The netmask pushed
    with a subnet/tap address: the pool's NETMASK, else the server's own (``server``'s, or
    ``ifconfig``'s second address). The server's address: ``server`` NET+1 or ``ifconfig``'s."""
    pool = o.ifconfig_pool
    own = server_tun_ifconfig(o)
    if pool is None or own is None:
        return None
    topology: Topology = "subnet" if o.dev_type == "tap" else o.topology
    if topology == "net30":
        start = ipaddress.IPv4Address(int(pool.start) & ~3)
        end = ipaddress.IPv4Address(int(pool.end) | 3)
        return AddressPool("net30", start, end, ipaddress.IPv4Address("255.255.255.252"),
                           own.local)
    netmask = pool.netmask
    if netmask is None:
        netmask = o.server.network.netmask if o.server is not None else own.remote
    return AddressPool(topology, pool.start, pool.end, netmask, own.local)
