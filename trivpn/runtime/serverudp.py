"""The server's UDP transport: one socket for all peers, one task for both directions.

The task waits on the socket and the device at once (:mod:`trivpn.runtime.readiness`); a link
or device without a file descriptor (the in-memory doubles of :mod:`trivpn.runtime.memory`)
is served by one plain task per direction instead, with the same packet handling. Data
packets of a known peer (by source address) go straight to :meth:`Session.decrypt_data` and are
routed (hot path: no logging, no per-packet allocation beyond the packet itself). Everything
else — control packets, packets from unknown addresses — is judged by the server's
:class:`~trivpn.protocol.gateway.Gateway`: a stateless cookie reply, a new session once the
cookie is proven, a float when a P_DATA_V2 authenticates from a new address, or a counted drop.
"""

from __future__ import annotations

import trio

from trivpn.protocol.admission import REFUSED_PER_SOURCE, REFUSED_QUOTA
from trivpn.protocol.gateway import Floated, NewSession, Reply, ToPeer
from trivpn.protocol.packets import DATA_BYTE0
from trivpn.runtime.link import Address, UdpLink
from trivpn.runtime.readiness import ReadySet
from trivpn.runtime.serverhub import PeerHub
from trivpn.runtime.serverpeer import BATCH, Peer, Pending, format_address
from trivpn.runtime.tlscryptv2 import verify_client_key
from trivpn.runtime.transport import DatagramLink
from trivpn.runtime.tun import TunDevice


class UdpTransport:
    """Moves datagrams between the server's UDP socket, its device and its peers."""

    def __init__(self, server: PeerHub) -> None:
        self.server = server
        self._verifying: set[Address] = set()  # tls-crypt-v2-verify running for these

    async def run(self) -> None:
        """UDP transport: a real socket and device share one task for both directions
        (:meth:`run_ready`); links and devices without file descriptors (in memory) get a
        plain task per direction (:meth:`run_tasks`)."""
        udp, tunnel = self.server.udp, self.server.tunnel
        assert udp is not None and tunnel is not None
        device = tunnel.device
        if isinstance(udp, UdpLink) and isinstance(device, TunDevice):
            await self.run_ready(udp, device)
        else:
            await self.run_tasks(udp)

    async def run_tasks(self, udp: DatagramLink) -> None:
        """Link → device/peers in this task, device → peers in the TCP transport's device
        reader (the same loop)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.server.read_device)
            while True:
                batch = await udp.recv_batch(BATCH)
                out = self.from_link(batch, trio.current_time())
                if out:
                    await self.server.transmit(out)

    async def run_ready(self, udp: UdpLink, device: TunDevice) -> None:
        """One task for both directions (link → device/peers, device → peers), waiting on
        both fds at once (:mod:`trivpn.runtime.readiness`)."""
        link_fd, device_fd = udp.fileno(), device.fileno()
        clock = trio.lowlevel.current_clock().current_time  # = trio.current_time, cheaper
        ready = ReadySet((link_fd, device_fd), direct=self.server.direct_wait)
        self.server.log.debug("data_path_wait", direct=ready.direct)
        try:
            while True:
                for fd in await ready.wait():
                    # A burst is drained (batches for GSO); a lone packet is read once.
                    if fd == link_fd:
                        out = self.from_link(udp.recv_ready(BATCH, drain=fd in ready.again),
                                              clock())
                    elif fd == device_fd:
                        out = self.server.router.from_device(
                            device.read_ready(BATCH if fd in ready.again else 1), clock())
                    else:  # pragma: no cover - only these two are watched
                        continue
                    if out:
                        await self.server.transmit(out)
        finally:
            ready.close()

    def from_link(self, batch: list[tuple[bytes, Address]],
                   now: float) -> list[tuple[Peer, bytes]]:
        """Datagrams from the link: data of known peers is decrypted and routed (what goes to
        other peers is returned), the rest goes to :meth:`other`."""
        by_address = self.server.table.by_address
        out: list[tuple[Peer, bytes]] = []
        to_device: list[bytes] = []
        from_peer = self.server.router.from_peer
        for data, address in batch:
            peer = by_address.get(address)
            if peer is not None:
                peer.rx_bytes += len(data)
                peer.rx_packets += 1
            try:
                if peer is not None and data and data[0] in DATA_BYTE0:
                    plain = peer.session.decrypt_data(data, now)
                    if plain is not None:
                        from_peer(peer, plain, now, out, to_device=to_device)
                else:
                    self.other(peer, data, address, now, out, to_device=to_device)
            except Exception as exc:  # a bug must cost one peer, never the server
                self.server.peer_failed(peer, exc)
        if to_device and self.server.tunnel is not None:  # = self.server.write_device(to_device)
            self.server.tunnel.device.write_many(to_device)
        return out

    def other(self, peer: Peer | None, data: bytes, address: Address, now: float,
                   out: list[tuple[Peer, bytes]], *, to_device: list[bytes]) -> None:
        """Control packets of known peers, and everything from unknown addresses: what the
        gateway decides."""
        server = self.server
        decision = server.gateway.datagram(data, address, now, peer=peer,
                                           by_peer_id=server.table.by_peer_id,
                                           new_key=lambda: Pending(address))
        if isinstance(decision, ToPeer):
            target = decision.peer
            target.session.receive_datagram(data, now)
            self.server.drain(target, now)
            self.server.wake_if_sooner(target)
        elif isinstance(decision, Reply):
            assert self.server.udp is not None
            self.server.udp.try_send(decision.data, address)
        elif isinstance(decision, NewSession):
            self._new_session(decision, data, address, now)
        elif isinstance(decision, Floated):
            self._floated(decision.peer, decision.packet, address, now, out,
                          to_device=to_device)
        elif decision.reason in (REFUSED_QUOTA, REFUSED_PER_SOURCE):
            self.server.preauth_refused(decision.reason, address, now)
        elif decision.reason is not None:
            self.server.counts[decision.reason] += 1

    def _new_session(self, decision: NewSession[Peer, Pending], data: bytes,
                         address: Address, now: float) -> None:
        """A client proved its cookie: a peer for its session (the old one goes when the
        client restarted from the same address). With ``tls-crypt-v2-verify`` the command
        judges the client key's metadata first, in a task of its own."""
        metadata = decision.session.client_key_metadata
        command = self.server.options.tls_crypt_v2_verify
        if metadata is not None and command:
            self.server.preauth.release(decision.key)
            if address in self._verifying:  # a resend while the command runs
                self.server.counts["tls_crypt_v2_verify_pending"] += 1
                return
            nursery = self.server.peers_nursery
            assert nursery is not None
            self._verifying.add(address)
            nursery.start_soon(self._verify_then_create, decision, data, address, command,
                               metadata)
            return
        self._create(decision, data, address, now)

    async def _verify_then_create(self, decision: NewSession[Peer, Pending], data: bytes,
                                  address: Address, command: str, metadata: bytes) -> None:
        try:
            ok = await verify_client_key(command, metadata,
                                         script_security=self.server.options.script_security,
                                         tmp_dir=self.server.options.tmp_dir,
                                         log=self.server.log)
        finally:
            self._verifying.discard(address)
        if not ok:
            self.server.counts["tls_crypt_v2_verify_refused"] += 1
            return
        now = trio.current_time()
        if not self.server.preauth_admit(decision.key, now):
            return
        self._create(decision, data, address, now)

    def _create(self, decision: NewSession[Peer, Pending], data: bytes, address: Address,
                now: float) -> None:
        if decision.replacing is not None:
            self.server.remove_peer(decision.replacing, "client_restarted")
        peer = self.server.create_peer(address, decision.session, now, pending=decision.key)
        if peer is None:
            return
        decision.session.receive_datagram(data, now)
        self.server.drain(peer, now)

    def _floated(self, peer: Peer, plain: bytes | None, address: Address, now: float,
                 out: list[tuple[Peer, bytes]], *, to_device: list[bytes]) -> None:
        """``peer`` authenticated from a new address: it moved there."""
        old = peer.address
        peer.address = address
        self.server.table.move(peer, old)
        old_label, peer.label = peer.label, format_address(address)
        self.server.log.info("peer_floated", peer=peer.label, previous=old_label,
                             cn=peer.common_name)
        if plain is not None:
            self.server.router.from_peer(peer, plain, now, out, to_device=to_device)
