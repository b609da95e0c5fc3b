"""The server's peer table and its routing decisions (no I/O, no trio).

Peers are found by link address (UDP demultiplexing), by peer-id (P_DATA_V2 from a new address,
"float"), by virtual IPv4 or IPv6 address (TUN routing) and by learned MAC address (TAP routing).
IPv4 and IPv6 are told apart once per packet by the version nibble; IPv4 is tested first, so the
IPv6 work never runs for IPv4 packets. A client's IPv6 packets must come from its pool IPv6
address (``server-ipv6``/``ifconfig-ipv6-pool``) or its ``ifconfig-ipv6-push`` one, as its IPv4
ones from its IPv4 address.

Routing, as OpenVPN's ``mode server`` does it:
- from the device: an IPv4 packet goes to the client owning its destination; a TAP frame to
  the client that sent from its destination MAC, or to every client when the destination is
  broadcast, multicast or not yet learned.
- from a client: the packet must carry the client's own source address (TUN) or a unicast
  source MAC, which is then learned (TAP); otherwise it is a spoof and dropped. It goes to the
  device, except with ``client-to-client`` when it is for another client: then straight to that
  client (TAP broadcast/multicast: to every other client *and* the device).

Internal routes (``iroute NET MASK`` in a client's client-config-dir file, TUN): a network
behind a client. A packet from the device or, with ``client-to-client``, from another client
whose destination is in the network goes to that client (the most specific iroute wins, after
the exact virtual addresses), and the client may send from addresses in it. They are looked at
only when no virtual address matched, so a server without iroutes does no extra work. Two
clients claiming the same network: the one connected last has it (OpenVPN's learn-address
takes it over too), and it is free again when that one goes. ``iroute-ipv6 NET/BITS`` works the
same for IPv6 (OpenVPN's multi.c ``multi_add_iroutes()``, ``multi_learn_in6_addr()``), in its
own table, looked at only when some client has one.

Learned MAC addresses (TAP), two limits:
- ``max-routes-per-client`` (default 256, as OpenVPN): a client that already owns that many
  MACs cannot add another (OpenVPN refuses the learn too: ``route quota (N) exceeded``); the
  frame is dropped and counted (``max_routes_per_client``).
- a MAC owned by another connected client is not taken over: the frame is dropped and counted
  (``mac_owned_by_other_client``). Here trivpn is stricter than OpenVPN 2.6, which moves the
  MAC to the newest sender (``MULTI: Learn: <mac> -> <other client>``), so that any client can
  redirect another client's traffic to itself. A MAC is free again once its owner disconnects.
  Both behaviours are compared in tests/interop/test_server_tap_macs.py.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

ETH_HEADER = 14
IPV4_HEADER = 20
IPV6_HEADER = 40
MASK128 = (1 << 128) - 1


class Routable(Protocol):
    """What the table needs to know about a peer."""

    @property
    def address(self) -> Any: ...

    @property
    def peer_id(self) -> int: ...

    @property
    def vaddr(self) -> bytes | None: ...

    @property
    def vaddr6(self) -> bytes | None: ...


P = TypeVar("P", bound=Routable)


class Verdict(enum.Enum):
    """Where a packet from a client goes when it is not another single client."""

    DEVICE = "device"
    FLOOD = "flood"  # TAP group frame with client-to-client: every other client and the device
    SPOOFED = "spoofed_source"
    MALFORMED = "malformed_packet"
    NOT_IPV4 = "not_ipv4"  # not IPv4, and not IPv6 to a server with an IPv6 pool
    IPV6 = "ipv6"  # not a drop: the caller checks it with from_client_ipv6 (off the IPv4 path)
    MAC_TAKEN = "mac_owned_by_other_client"
    MAC_QUOTA = "max_routes_per_client"


def is_group_mac(mac: bytes) -> bool:
    """Broadcast or multicast (the I/G bit of the first octet)."""
    return bool(mac[0] & 1)


class PeerTable(Generic[P]):
    """Indexes over the live peers. ``vaddr`` keys are packed 4-byte IPv4 addresses."""

    __slots__ = ("_all", "_iroute6_bits", "_iroute_bits", "_macs_of", "by_address", "by_mac",
                 "by_peer_id", "by_vaddr", "by_vaddr6", "iroutes", "iroutes6", "max_macs")

    def __init__(self, max_macs: int = 256) -> None:
        self._all: dict[int, P] = {}
        self.by_address: dict[Hashable, P] = {}
        self.by_peer_id: dict[int, P] = {}
        self.by_vaddr: dict[bytes, P] = {}
        self.by_vaddr6: dict[bytes, P] = {}  # packed 16-byte IPv6 addresses
        self.by_mac: dict[bytes, P] = {}
        self.max_macs = max_macs  # max-routes-per-client
        self._macs_of: dict[int, list[bytes]] = {}  # id(peer) -> the MACs it owns
        # iroutes: (network as int, prefix length) -> peer; the prefix lengths in use, longest
        # first
        self.iroutes: dict[tuple[int, int], P] = {}
        self._iroute_bits: tuple[int, ...] = ()
        # iroute-ipv6: (network as a 128-bit int, prefix length) -> peer, likewise
        self.iroutes6: dict[tuple[int, int], P] = {}
        self._iroute6_bits: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[P]:
        """Iterate over a snapshot (peers may be removed meanwhile)."""
        return iter(list(self._all.values()))

    def __contains__(self, peer: object) -> bool:
        return self._all.get(id(peer)) is peer

    # -- membership -------------------------------------------------------------------------

    def add(self, peer: P) -> None:
        """Register a new peer under its address and peer-id (both must be unused)."""
        if peer.peer_id in self.by_peer_id:
            raise ValueError(f"peer-id {peer.peer_id} is in use")
        if peer.address in self.by_address:
            raise ValueError(f"address {peer.address} is in use")
        self._all[id(peer)] = peer
        self.by_address[peer.address] = peer
        self.by_peer_id[peer.peer_id] = peer

    def remove(self, peer: P) -> None:
        """Forget a peer everywhere (idempotent)."""
        if self._all.pop(id(peer), None) is None:
            return
        if self.by_address.get(peer.address) is peer:
            del self.by_address[peer.address]
        if self.by_peer_id.get(peer.peer_id) is peer:
            del self.by_peer_id[peer.peer_id]
        if peer.vaddr is not None and self.by_vaddr.get(peer.vaddr) is peer:
            del self.by_vaddr[peer.vaddr]
        if peer.vaddr6 is not None and self.by_vaddr6.get(peer.vaddr6) is peer:
            del self.by_vaddr6[peer.vaddr6]
        for mac in self._macs_of.pop(id(peer), ()):
            if self.by_mac.get(mac) is peer:
                del self.by_mac[mac]
        if self.iroutes:
            for key in [k for k, owner in self.iroutes.items() if owner is peer]:
                del self.iroutes[key]
            self._iroute_bits = tuple(sorted({b for _, b in self.iroutes}, reverse=True))
        if self.iroutes6:
            for key in [k for k, owner in self.iroutes6.items() if owner is peer]:
                del self.iroutes6[key]
            self._iroute6_bits = tuple(sorted({b for _, b in self.iroutes6}, reverse=True))

    def macs_of(self, peer: P) -> int:
        """How many MAC addresses ``peer`` owns."""
        return len(self._macs_of.get(id(peer), ()))

    def free_peer_id(self, limit: int) -> int | None:
        """The lowest peer-id below ``limit`` no live peer uses (OpenVPN's assignment)."""
        for candidate in range(limit):
            if candidate not in self.by_peer_id:
                return candidate
        return None

    def move(self, peer: P, old_address: Hashable) -> None:
        """The peer's address changed (float): re-index it under ``peer.address``."""
        if self.by_address.get(old_address) is peer:
            del self.by_address[old_address]
        other = self.by_address.get(peer.address)
        if other is not None and other is not peer:
            raise ValueError(f"address {peer.address} belongs to another peer")
        self.by_address[peer.address] = peer

    def route_vaddr(self, peer: P) -> None:
        """Start routing ``peer.vaddr`` (and ``peer.vaddr6``) to the peer (once it is
        connected); an IPv6-only server's peers have ``vaddr6`` only."""
        if peer.vaddr is None and peer.vaddr6 is None:
            raise ValueError("peer has no virtual address")
        if peer.vaddr is not None:
            self.by_vaddr[peer.vaddr] = peer
        if peer.vaddr6 is not None:
            self.by_vaddr6[peer.vaddr6] = peer

    def add_iroutes(self, peer: P, networks: Iterable[tuple[int, int]]) -> None:
        """Route the networks ``(address as int, prefix length)`` to ``peer`` (iroute)."""
        for network, bits in networks:
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            self.iroutes[(network & mask, bits)] = peer
        self._iroute_bits = tuple(sorted({b for _, b in self.iroutes}, reverse=True))

    def iroute_owner(self, address: bytes) -> P | None:
        """The peer whose most specific iroute contains the packed IPv4 ``address``."""
        value = int.from_bytes(address, "big")
        for bits in self._iroute_bits:
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            peer = self.iroutes.get((value & mask, bits))
            if peer is not None:
                return peer
        return None

    def add_iroutes6(self, peer: P, networks: Iterable[tuple[int, int]]) -> None:
        """Route the IPv6 networks ``(address as int, prefix length)`` to ``peer``
        (iroute-ipv6)."""
        for network, bits in networks:
            mask = (MASK128 << (128 - bits)) & MASK128
            self.iroutes6[(network & mask, bits)] = peer
        self._iroute6_bits = tuple(sorted({b for _, b in self.iroutes6}, reverse=True))

    def iroute6_owner(self, address: bytes) -> P | None:
        """The peer whose most specific iroute-ipv6 contains the packed IPv6 ``address``."""
        value = int.from_bytes(address, "big")
        for bits in self._iroute6_bits:
            mask = (MASK128 << (128 - bits)) & MASK128
            peer = self.iroutes6.get((value & mask, bits))
            if peer is not None:
                return peer
        return None

    # -- routing: device -> client ------------------------------------------------------------

    def for_ipv4(self, packet: bytes) -> P | None:
        """The client owning an IPv4 packet's destination; None for anything else."""
        if len(packet) < IPV4_HEADER or packet[0] >> 4 != 4:
            return None
        peer = self.by_vaddr.get(packet[16:20])
        if peer is None and self.iroutes:
            return self.iroute_owner(packet[16:20])
        return peer

    def for_ipv6(self, packet: bytes) -> P | None:
        """The client owning an IPv6 packet's destination; None for anything else."""
        if len(packet) < IPV6_HEADER or packet[0] >> 4 != 6:
            return None
        peer = self.by_vaddr6.get(packet[24:40])
        if peer is None and self.iroutes6:
            return self.iroute6_owner(packet[24:40])
        return peer

    def for_frame(self, frame: bytes) -> P | None:
        """The client that owns a frame's destination MAC; None means flood to all."""
        if len(frame) < ETH_HEADER:
            return None
        return self.by_mac.get(frame[0:6])

    # -- routing: client -> device or client -----------------------------------------------

    def from_client_ipv4(self, sender: P, packet: bytes,
                         client_to_client: bool) -> P | Verdict:
        """Check and route an IPv4 packet a client sent (TUN mode)."""
        if len(packet) < IPV4_HEADER:
            return Verdict.MALFORMED
        if packet[0] >> 4 != 4:
            return Verdict.IPV6 if packet[0] >> 4 == 6 else Verdict.NOT_IPV4
        if packet[12:16] != sender.vaddr and (
                not self.iroutes or self.iroute_owner(packet[12:16]) is not sender):
            return Verdict.SPOOFED
        if client_to_client:
            target = self.by_vaddr.get(packet[16:20])
            if target is None and self.iroutes:
                target = self.iroute_owner(packet[16:20])
            if target is not None and target is not sender:
                return target
        return Verdict.DEVICE

    def from_client_ipv6(self, sender: P, packet: bytes,
                         client_to_client: bool) -> P | Verdict:
        """Check and route an IPv6 packet a client sent (TUN mode): the source must be the
        client's IPv6 address (pool or ``ifconfig-ipv6-push``) or in one of its iroute-ipv6
        networks."""
        if packet[0] >> 4 != 6:
            return Verdict.NOT_IPV4
        iroutes6 = self.iroutes6
        if sender.vaddr6 is None and not iroutes6:
            return Verdict.NOT_IPV4
        if len(packet) < IPV6_HEADER:
            return Verdict.MALFORMED
        if packet[8:24] != sender.vaddr6 and (
                not iroutes6 or self.iroute6_owner(packet[8:24]) is not sender):
            return Verdict.SPOOFED
        if client_to_client:
            target = self.by_vaddr6.get(packet[24:40])
            if target is None and iroutes6:
                target = self.iroute6_owner(packet[24:40])
            if target is not None and target is not sender:
                return target
        return Verdict.DEVICE

    def from_client_frame(self, sender: P, frame: bytes,
                          client_to_client: bool) -> P | Verdict:
        """Learn the source MAC and route an Ethernet frame a client sent (TAP mode)."""
        if len(frame) < ETH_HEADER:
            return Verdict.MALFORMED
        src = frame[6:12]
        if is_group_mac(src):
            return Verdict.SPOOFED
        owner = self.by_mac.get(src)
        if owner is not sender:
            if owner is not None:
                return Verdict.MAC_TAKEN
            macs = self._macs_of.setdefault(id(sender), [])
            if len(macs) >= self.max_macs:
                return Verdict.MAC_QUOTA
            macs.append(src)
            self.by_mac[src] = sender
        if not client_to_client:
            return Verdict.DEVICE
        dst = frame[0:6]
        if is_group_mac(dst):
            return Verdict.FLOOD
        target = self.by_mac.get(dst)
        if target is not None and target is not sender:
            return target
        return Verdict.DEVICE


class AgeingPeerTable(PeerTable[P]):
    """A :class:`PeerTable` for ``stale-routes-check``: learned MAC routes that no frame used
    for a while can be forgotten (:meth:`expire`), as OpenVPN's check_stale_routes()
    (src/openvpn/multi.c) drops routes whose last reference is too old.

    A route is referenced when a client's frame comes from its MAC or a device frame goes to
    it; each reference records the current :attr:`generation` (a counter the server advances
    once per check interval), so the per-frame cost is one dict store and no clock read. Only
    a server configured with ``stale-routes-check`` uses this class.
    """

    __slots__ = ("_seen", "generation")

    def __init__(self, max_macs: int = 256) -> None:
        super().__init__(max_macs)
        self.generation = 0
        self._seen: dict[bytes, int] = {}

    def for_frame(self, frame: bytes) -> P | None:
        peer = super().for_frame(frame)
        if peer is not None:
            self._seen[frame[0:6]] = self.generation
        return peer

    def from_client_frame(self, sender: P, frame: bytes,
                          client_to_client: bool) -> P | Verdict:
        result = super().from_client_frame(sender, frame, client_to_client)
        if self.by_mac.get(frame[6:12]) is sender:
            self._seen[frame[6:12]] = self.generation
        return result

    def expire(self, min_generation: int) -> list[tuple[bytes, P]]:
        """Forget every MAC route last referenced before ``min_generation``; what went."""
        gone: list[tuple[bytes, P]] = []
        for mac, peer in list(self.by_mac.items()):
            if self._seen.get(mac, -1) < min_generation:
                del self.by_mac[mac]
                self._seen.pop(mac, None)
                owned = self._macs_of.get(id(peer))
                if owned is not None and mac in owned:
                    owned.remove(mac)
                gone.append((mac, peer))
        for mac in [m for m in self._seen if m not in self.by_mac]:
            del self._seen[mac]
        return gone
