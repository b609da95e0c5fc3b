"""Values OpenVPN derives from several options: the ``server`` and ``keepalive`` helper
expansions (``helper.c``), the server's push list in PUSH_REPLY order and the address pool
(``pool.c``). See docs/protocol.md §8.3 and §10.5."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from trivpn.config.options import Ifconfig, Options, Topology


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
    if o.server_bridge is not None:  # helper.c: push "route-gateway GW"
        pushes.append(f"route-gateway {o.server_bridge.gateway}")
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
    """The pool ``server NET MASK`` defines (None without ``server`` or with ``nopool``).

    net30/p2p: from NET+4 to broadcast-4 (broadcast itself for a /29); subnet and tap:
    NET+2 .. broadcast-1."""
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
