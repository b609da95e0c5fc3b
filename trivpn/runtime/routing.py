"""Routing between the server's device and its peers, over the peer table (no I/O, no trio).

A :class:`Router` takes decrypted packets from a peer, or packets read from the TUN/TAP device,
and says where they go: a list for one device write, and ``(peer, wire)`` pairs already
encrypted by the target's session for the link. What goes where is decided by
:class:`~trivpn.runtime.peers.PeerTable` (see its docstring for OpenVPN's rules); the router
adds ``mssfix`` clamping (TUN), TAP flooding to every connected client and drop counting.

These functions are on the per-packet path: no logging, no allocation beyond the output lists.
A client refused a MAC address is reported once per reason through ``on_mac_refused``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from trivpn.protocol.icmp6 import block_ipv6
from trivpn.protocol.mss import IPPROTO_TCP, clamp_mss, clamp_mss6
from trivpn.protocol.session import Session
from trivpn.runtime.peers import IPV4_HEADER, IPV6_HEADER, PeerTable, Routable, Verdict

TCP_HEADER_END = 40  # IPv4 + TCP headers: shorter packets carry no MSS option
TCP6_HEADER_END = 60  # IPv6 + TCP headers
IPV6_EXTRA_HEADER = 20  # an IPv6 header is 20 bytes longer: its MSS is 20 lower (mtu - 60)


class RoutedPeer(Routable, Protocol):
    """What the router needs of a peer: its session, and the MAC refusals already reported."""

    @property
    def session(self) -> Session: ...

    mac_refused: tuple[str, ...]


P = TypeVar("P", bound=RoutedPeer)

MacRefusal = Callable[[P, bytes, Verdict], None]


class Router(Generic[P]):
    """Routes packets between the device and the peers of ``table``. ``connected``: the peers
    a TAP flood reaches (kept by the server as peers connect and go)."""

    __slots__ = ("client_to_client", "connected", "counts", "flood_limit", "mss",
                 "on_mac_refused", "table", "tap")

    def __init__(self, table: PeerTable[P], counts: Counter[str], *, tap: bool,
                 client_to_client: bool, mss: int | None,
                 on_mac_refused: MacRefusal[P]) -> None:
        self.table = table
        self.counts = counts  # drops by reason
        self.tap = tap
        self.client_to_client = client_to_client
        self.mss = None if tap else mss  # TCP SYNs through the tunnel are clamped (TUN only)
        self.on_mac_refused = on_mac_refused
        self.connected: tuple[P, ...] = ()
        # bcast-buffers: how many clients one TAP flood reaches at most (None: all)
        self.flood_limit: int | None = None

    def from_peer(self, peer: P, packet: bytes, now: float, out: list[tuple[P, bytes]], *,
                  to_device: list[bytes]) -> None:
        """A decrypted packet from ``peer``: to the device (appended to ``to_device``, for one
        device write per batch), or encrypted for other clients (appended to ``out``)."""
        if self.tap:
            verdict = self.table.from_client_frame(peer, packet, self.client_to_client)
        else:
            mss = self.mss
            # clamp_mss's first test inline: only TCP can need it (pings skip the call); it
            # returns IPv6 packets unchanged (byte 9 is in their source address)
            if mss is not None and len(packet) >= TCP_HEADER_END and packet[9] == IPPROTO_TCP:
                packet = clamp_mss(packet, mss)
            verdict = self.table.from_client_ipv4(peer, packet, self.client_to_client)
        if verdict is Verdict.DEVICE:
            to_device.append(packet)
        elif isinstance(verdict, Verdict):
            self._other_verdict(peer, packet, verdict, now, out, to_device=to_device)
        else:
            wire = verdict.session.encrypt_data(packet, now)
            if wire is not None:
                out.append((verdict, wire))

    def _from_peer6(self, peer: P, packet: bytes, now: float, out: list[tuple[P, bytes]], *,
                    to_device: list[bytes]) -> None:
        """An IPv6 packet from ``peer`` (TUN): clamped, checked and routed as IPv4 ones are."""
        mss = self.mss
        if mss is not None and len(packet) >= TCP6_HEADER_END and packet[6] == IPPROTO_TCP:
            packet = clamp_mss6(packet, mss - IPV6_EXTRA_HEADER)
        verdict = self.table.from_client_ipv6(peer, packet, self.client_to_client)
        if verdict is Verdict.DEVICE:
            to_device.append(packet)
        elif isinstance(verdict, Verdict):
            self._other_verdict(peer, packet, verdict, now, out, to_device=to_device)
        else:
            wire = verdict.session.encrypt_data(packet, now)
            if wire is not None:
                out.append((verdict, wire))

    def _other_verdict(self, peer: P, packet: bytes, verdict: Verdict, now: float,
                       out: list[tuple[P, bytes]], *, to_device: list[bytes]) -> None:
        if verdict is Verdict.IPV6:
            self._from_peer6(peer, packet, now, out, to_device=to_device)
            return
        if verdict is Verdict.FLOOD:
            to_device.append(packet)
            targets = self.connected
            if self.flood_limit is not None:
                targets = self._limited(tuple(t for t in targets if t is not peer))
            for other in targets:
                if other is not peer:
                    wire = other.session.encrypt_data(packet, now)
                    if wire is not None:
                        out.append((other, wire))
            return
        self.counts[verdict.value] += 1
        if (verdict in (Verdict.MAC_TAKEN, Verdict.MAC_QUOTA)
                and verdict.value not in peer.mac_refused):
            # once per peer and reason; the drop counters count the rest
            peer.mac_refused = (*peer.mac_refused, verdict.value)
            self.on_mac_refused(peer, packet, verdict)

    def from_device(self, packets: list[bytes], now: float) -> list[tuple[P, bytes]]:
        """Packets read from the device, encrypted for the peers owning their destinations
        (TAP: every connected peer when the destination is a group or unknown MAC)."""
        if self.tap:
            return self._frames_from_device(packets, now)
        out: list[tuple[P, bytes]] = []
        counts = self.counts
        by_vaddr = self.table.by_vaddr
        by_vaddr6 = self.table.by_vaddr6
        mss = self.mss
        for packet in packets:
            if len(packet) >= IPV4_HEADER and packet[0] >> 4 == 4:
                peer = by_vaddr.get(packet[16:20])
                if peer is None:
                    peer = self.table.iroute_owner(packet[16:20]) if self.table.iroutes else None
                    if peer is None:
                        counts["no_route"] += 1
                        continue
                if mss is not None and len(packet) >= TCP_HEADER_END \
                        and packet[9] == IPPROTO_TCP:
                    packet = clamp_mss(packet, mss)  # noqa: PLW2901
            elif len(packet) >= IPV6_HEADER and packet[0] >> 4 == 6:
                peer = by_vaddr6.get(packet[24:40])
                if peer is None:
                    peer = (self.table.iroute6_owner(packet[24:40]) if self.table.iroutes6
                            else None)
                    if peer is None:
                        counts["no_route"] += 1
                        continue
                if mss is not None and len(packet) >= TCP6_HEADER_END \
                        and packet[6] == IPPROTO_TCP:
                    packet = clamp_mss6(packet, mss - IPV6_EXTRA_HEADER)  # noqa: PLW2901
            else:
                counts["not_ipv4"] += 1
                continue
            wire = peer.session.encrypt_data(packet, now)
            if wire is not None:
                out.append((peer, wire))
        return out

    def _frames_from_device(self, frames: list[bytes], now: float) -> list[tuple[P, bytes]]:
        out: list[tuple[P, bytes]] = []
        table = self.table
        for frame in frames:
            peer = table.for_frame(frame)
            if peer is None:
                targets = self.connected
                if self.flood_limit is not None:
                    targets = self._limited(targets)
                for other in targets:
                    wire = other.session.encrypt_data(frame, now)
                    if wire is not None:
                        out.append((other, wire))
                continue
            wire = peer.session.encrypt_data(frame, now)
            if wire is not None:
                out.append((peer, wire))
        return out


    def _limited(self, targets: tuple[P, ...]) -> tuple[P, ...]:
        """bcast-buffers: OpenVPN queues a flood's copies in one buffer set of that many
        entries (rounded up to a power of two) and drops the oldest on overflow (multi.c
        multi_bcast(), mbuf.c mbuf_add_item(): "MBUF: mbuf packet dropped"), so only the last
        ``flood_limit`` clients get it."""
        limit = self.flood_limit
        assert limit is not None
        if len(targets) <= limit:
            return targets
        self.counts["bcast_buffers"] += len(targets) - limit
        return targets[len(targets) - limit:]


def power_of_two_at_least(n: int) -> int:
    """OpenVPN integer.h adjust_power_of_2(): the buffer set's capacity for ``n``."""
    return 1 << max(n - 1, 0).bit_length()


class BlockIpv6Router(Router[P]):
    """The router of a TUN server with ``block-ipv6``, as OpenVPN 2.6 applies it on a server
    (forward.c, process_ip_header() with PIPV6_IMCP_NOHOST_CLIENT from process_incoming_tun(),
    PIPV6_IMCP_NOHOST_SERVER from multi.c multi_get_queue()):

    * an IPv6 packet read from the device for a client is not sent; an ICMPv6 "no route" answer
      (from ``source``: the server's ``ifconfig-ipv6`` REMOTE, or fe80::7) goes back to the
      device, counted as ``block_ipv6``;
    * an IPv6 packet from one client to another (client-to-client) is dropped, counted;
    * an IPv6 packet from a client to the device still goes there (OpenVPN passes
      PIP_OUTGOING for it, which block-ipv6 leaves alone).

    Only used when configured, so the default path stays :class:`Router`'s."""

    __slots__ = ("block6_source", "tun_mtu", "write_device")

    def __init__(self, table: PeerTable[P], counts: Counter[str], *, tap: bool,
                 client_to_client: bool, mss: int | None, on_mac_refused: MacRefusal[P],
                 block6_source: bytes, tun_mtu: int,
                 write_device: Callable[[list[bytes]], None]) -> None:
        super().__init__(table, counts, tap=tap, client_to_client=client_to_client, mss=mss,
                         on_mac_refused=on_mac_refused)
        self.block6_source = block6_source
        self.tun_mtu = tun_mtu
        self.write_device = write_device

    def from_device(self, packets: list[bytes], now: float) -> list[tuple[P, bytes]]:
        packets, answers = block_ipv6(packets, self.block6_source, self.tun_mtu)
        if answers:
            self.counts["block_ipv6"] += len(answers)
            self.write_device(answers)
        return super().from_device(packets, now)

    def _from_peer6(self, peer: P, packet: bytes, now: float, out: list[tuple[P, bytes]], *,
                    to_device: list[bytes]) -> None:
        verdict = self.table.from_client_ipv6(peer, packet, self.client_to_client)
        if verdict is Verdict.DEVICE:
            mss = self.mss
            if mss is not None and len(packet) >= TCP6_HEADER_END and packet[6] == IPPROTO_TCP:
                packet = clamp_mss6(packet, mss - IPV6_EXTRA_HEADER)
            to_device.append(packet)
        elif isinstance(verdict, Verdict):
            self._other_verdict(peer, packet, verdict, now, out, to_device=to_device)
        else:  # client-to-client: not sent
            self.counts["block_ipv6"] += 1


class FragmentingRouter(Router[P]):
    """The router of a server with ``fragment N``: one packet may become several datagrams.
    The target's session returns the first from ``encrypt_data`` and queues the others
    (Session.encrypt_data with a fragment layer); they are sent right after it. Only used when
    configured, so the default path stays :class:`Router`'s."""

    __slots__ = ()

    def from_peer(self, peer: P, packet: bytes, now: float, out: list[tuple[P, bytes]], *,
                  to_device: list[bytes]) -> None:
        start = len(out)
        super().from_peer(peer, packet, now, out, to_device=to_device)
        if len(out) > start:
            _add_queued(out, start)

    def from_device(self, packets: list[bytes], now: float) -> list[tuple[P, bytes]]:
        out = super().from_device(packets, now)
        _add_queued(out, 0)
        return out


class FragmentingBlockIpv6Router(BlockIpv6Router[P], FragmentingRouter[P]):
    """``fragment`` and ``block-ipv6`` together."""

    __slots__ = ()


def _add_queued(out: list[tuple[P, bytes]], start: int) -> None:
    seen: set[int] = set()
    for target, _wire in out[start:]:
        if id(target) not in seen:
            seen.add(id(target))
            out.extend((target, d) for d in target.session.take_datagrams())


TPID_8021Q = b"\x81\x00"
VID_MASK = 0x0FFF


def vlan_tag(frame: bytes, vid: int) -> bytes | None:
    """The frame tagged with ``vid`` (OpenVPN vlan.c, vlan_encapsulate()): an untagged frame
    gets an 802.1Q header, a priority-tagged one (VID 0) keeps its priority and gets the VID;
    None for a frame too short or tagged with another VID (dropped)."""
    if len(frame) < ETHERNET_HEADER:
        return None
    if frame[12:14] == TPID_8021Q:
        if len(frame) < ETHERNET_HEADER + 4:
            return None
        tci = int.from_bytes(frame[14:16], "big")
        if tci & VID_MASK:
            return None
        return frame[:14] + ((tci & ~VID_MASK) | vid).to_bytes(2, "big") + frame[16:]
    return frame[:12] + TPID_8021Q + vid.to_bytes(2, "big") + frame[12:]


def vlan_tagged(frame: bytes) -> bool:
    """An 802.1Q frame with a VID (not just priority-tagged): vlan.c, vlan_is_tagged()."""
    return (len(frame) >= ETHERNET_HEADER + 4 and frame[12:14] == TPID_8021Q
            and int.from_bytes(frame[14:16], "big") & VID_MASK != 0)


ETHERNET_HEADER = 14
VlanAccept = str  # "tagged", "untagged" or "all"


class VlanRouter(Router[P]):
    """The router of a TAP server with ``vlan-tagging`` (OpenVPN vlan.c and multi.c), used
    only when configured:

    * a frame read from the device belongs to the VLAN of its 802.1Q tag (the tag is removed)
      or, untagged or priority-tagged, to the server's ``vlan-pvid``; ``vlan-accept tagged``
      drops untagged frames, ``untagged`` drops tagged ones (vlan_decapsulate()). It reaches
      only clients whose ``vlan-pvid`` (client-config-dir, else the server's) is that VLAN.
    * a tagged frame from a client is dropped (multi_process_incoming_link(); the client's
      frames are in its own VLAN); to the device it goes untagged when its VLAN is the
      server's ``vlan-pvid`` and ``vlan-accept`` is ``all``, tagged with its VLAN otherwise
      (``tagged``), or not at all (``untagged`` and another VLAN): vlan_process_outgoing_tun().
    * client-to-client: a broadcast or a frame for another client stays in the sender's VLAN
      (multi_bcast() skips other VIDs; the learned address of a client in another VLAN does
      not match, so the frame goes to the device).
    """

    __slots__ = ("accept", "pvid", "pvids")

    def __init__(self, table: PeerTable[P], counts: Counter[str], *, tap: bool,
                 client_to_client: bool, mss: int | None, on_mac_refused: MacRefusal[P],
                 accept: VlanAccept, pvid: int) -> None:
        super().__init__(table, counts, tap=tap, client_to_client=client_to_client, mss=mss,
                         on_mac_refused=on_mac_refused)
        self.accept = accept
        self.pvid = pvid
        self.pvids: dict[P, int] = {}  # vlan-pvid from a client's client-config-dir file

    def pvid_of(self, peer: P) -> int:
        return self.pvids.get(peer, self.pvid)

    def _to_device(self, vid: int, frame: bytes, to_device: list[bytes]) -> None:
        if self.accept == "untagged" or (self.accept == "all" and vid == self.pvid):
            if vid != self.pvid:
                self.counts["vlan_other_vid"] += 1
                return
            to_device.append(frame)
            return
        tagged = vlan_tag(frame, vid)
        if tagged is None:
            self.counts["vlan_malformed"] += 1
            return
        to_device.append(tagged)

    def from_peer(self, peer: P, packet: bytes, now: float, out: list[tuple[P, bytes]], *,
                  to_device: list[bytes]) -> None:
        if vlan_tagged(packet):
            self.counts["vlan_tagged_from_client"] += 1
            return
        vid = self.pvid_of(peer)
        verdict = self.table.from_client_frame(peer, packet, self.client_to_client)
        if verdict is Verdict.DEVICE:
            self._to_device(vid, packet, to_device)
        elif verdict is Verdict.FLOOD:
            self._to_device(vid, packet, to_device)
            targets = tuple(p for p in self.connected
                            if p is not peer and self.pvid_of(p) == vid)
            self._send(self._limited(targets) if self.flood_limit is not None else targets,
                       packet, now, out)
        elif isinstance(verdict, Verdict):
            self._other_verdict(peer, packet, verdict, now, out, to_device=to_device)
        elif self.pvid_of(verdict) != vid:
            self._to_device(vid, packet, to_device)
        else:
            self._send((verdict,), packet, now, out)

    @staticmethod
    def _send(targets: tuple[P, ...], frame: bytes, now: float,
              out: list[tuple[P, bytes]]) -> None:
        for target in targets:
            wire = target.session.encrypt_data(frame, now)
            if wire is not None:
                out.append((target, wire))

    def _decapsulate(self, frame: bytes) -> tuple[int, bytes] | None:
        if len(frame) < ETHERNET_HEADER:
            return None
        if frame[12:14] != TPID_8021Q:
            return None if self.accept == "tagged" else (self.pvid, frame)
        if len(frame) < ETHERNET_HEADER + 4:
            return None
        vid = int.from_bytes(frame[14:16], "big") & VID_MASK
        if vid == 0:  # priority-tagged: the server's VLAN, the frame as it is
            return self.pvid, frame
        if self.accept == "untagged":
            return None
        return vid, frame[:12] + frame[16:]

    def _frames_from_device(self, frames: list[bytes], now: float) -> list[tuple[P, bytes]]:
        out: list[tuple[P, bytes]] = []
        for raw in frames:
            found = self._decapsulate(raw)
            if found is None:
                self.counts["vlan_refused"] += 1
                continue
            vid, frame = found
            owner = self.table.for_frame(frame)
            if owner is not None and self.pvid_of(owner) == vid:
                self._send((owner,), frame, now, out)
                continue
            targets = tuple(p for p in self.connected if self.pvid_of(p) == vid)
            self._send(self._limited(targets) if self.flood_limit is not None else targets,
                       frame, now, out)
        return out
