"""The server's TCP transport: one connection per peer.

A new connection is an *opening* until its first packet, which must be a client hard reset that
authenticates (tls-auth / tls-crypt) and arrive within
:func:`~trivpn.protocol.admission.first_packet_timeout`; anything else closes it at once.
``connect-freq-initial`` counts these resets as it counts UDP ones (OpenVPN 2.6 applies it to
UDP only; ``connect-freq`` with TCP is a config error there and here), through the server's
:class:`~trivpn.protocol.gateway.Gateway`. Only then is a peer created; its reader and writer
run as that peer's tasks. A device reader task sends device packets to the peers.

With ``port-share``, the first bytes decide first (:mod:`trivpn.protocol.portshare`): a
connection that does not start like an OpenVPN client is relayed to the port-share target
(:mod:`trivpn.runtime.portshare`) instead of being closed.
"""

from __future__ import annotations

import trio

from trivpn.config.options import PortShare
from trivpn.protocol.admission import MAX_FIRST_PACKET, first_packet_timeout
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.gateway import Drop
from trivpn.protocol.packets import DATA_BYTE0
from trivpn.protocol.portshare import HEAD_BYTES, FirstBytes, classify
from trivpn.runtime.link import LinkClosed
from trivpn.runtime.portshare import relay
from trivpn.runtime.serverhub import PeerHub
from trivpn.runtime.serverpeer import BATCH, Peer, Pending
from trivpn.runtime.tlscryptv2 import verify_client_key


class TcpTransport:
    """Accepts the server's TCP connections and moves each peer's packets."""

    def __init__(self, server: PeerHub, *, port_share: PortShare | None = None) -> None:
        self.server = server
        self.port_share = port_share

    async def run_device_reader(self) -> None:
        """Packets from the device to the peers (TCP; also UDP over a link or device
        without a file descriptor, :meth:`UdpTransport.run_tasks`)."""
        assert self.server.tunnel is not None
        device = self.server.tunnel.device
        while True:
            packets = await device.read_batch(BATCH)
            out = self.server.router.from_device(packets, trio.current_time())
            if out:
                await self.server.transmit(out)

    async def run_acceptor(self) -> None:
        listener = self.server.listener
        assert listener is not None and self.server.config is not None
        while True:
            try:
                link = await listener.accept()
            except OSError as exc:
                self.server.counts["accept_failed"] += 1
                self.server.log.warning("accept_failed", error=str(exc))
                await trio.sleep(0.1)
                continue
            now = trio.current_time()
            try:
                address = link.peer_address
            except OSError:
                await link.aclose()
                continue
            pending = Pending(address, link)
            if not self.server.preauth_admit(pending, now, opening=True):
                await link.aclose()
                continue
            assert self.server.peers_nursery is not None
            self.server.peers_nursery.start_soon(self._opening, pending)

    async def _opening(self, pending: Pending) -> None:
        """A new TCP connection until its first packet: a valid client reset within the first
        packet timeout makes it a peer; anything else closes it (counted by reason)."""
        link, config = pending.link, self.server.config
        assert link is not None and config is not None
        reason: str | None = None
        peer: Peer | None = None
        foreign: bytes | None = None
        try:
            with pending.cancel_scope:  # cancelled when the ledger evicts this opening
                with trio.move_on_after(first_packet_timeout(config.hand_window)) as timer:
                    try:
                        if self.port_share is not None:
                            head = await link.read_head(HEAD_BYTES)
                            if classify(head) is FirstBytes.FOREIGN:
                                foreign = head
                        if foreign is None:
                            packets = await link.recv_first_packets(MAX_FIRST_PACKET)
                    except LinkClosed:
                        reason = "tcp_closed_before_reset"
                    except ProtocolError:
                        reason = "tcp_bad_first_packet"
                    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                        reason = "tcp_closed_before_reset"
                if timer.cancelled_caught:
                    reason = "tcp_first_packet_timeout"
            if pending.evicted:
                return  # counted as preauth_evicted
            if foreign is not None and reason is None:
                await self._share(pending, foreign)
            elif reason is None:
                peer = await self._first_packets(pending, packets, trio.current_time())
        finally:
            if peer is None:
                self.server.preauth.release(pending)
                if reason is not None:
                    self.server.counts[reason] += 1
                with trio.CancelScope(shield=True):
                    await link.aclose()

    async def _share(self, pending: Pending, head: bytes) -> None:
        """``port-share``: a connection that does not start like an OpenVPN client goes to
        the port-share target (no longer an opening of the pre-authentication ledger)."""
        assert self.port_share is not None and pending.link is not None
        self.server.preauth.release(pending)
        self.server.counts["port_share_proxied"] += 1
        await relay(pending.link.byte_stream, head, self.port_share, pending.address,
                    self.server.log)

    async def _first_packets(self, pending: Pending, packets: list[bytes],
                             now: float) -> Peer | None:
        """The first packets of a TCP connection: a peer if the first is a valid reset and
        connect-freq-initial allows it (each refusal counted)."""
        assert pending.link is not None
        session = self.server.gateway.tcp_first_packet(packets[0], now)
        if isinstance(session, Drop):
            self.server.counts[session.reason or "tcp_bad_first_packet"] += 1
            return None
        command = self.server.options.tls_crypt_v2_verify
        if session.client_key_metadata is not None and command:
            if not await verify_client_key(command, session.client_key_metadata,
                                           script_security=self.server.options.script_security,
                                           tmp_dir=self.server.options.tmp_dir,
                                           log=self.server.log):
                self.server.counts["tls_crypt_v2_verify_refused"] += 1
                self.server.gateway.reset_unused()
                return None
            now = trio.current_time()
        self.server.preauth.settle(pending)
        peer = self.server.create_peer(pending.address, session, now, tcp=pending.link,
                                 pending=pending)
        if peer is None:
            self.server.gateway.reset_unused()
            return None
        peer.reset_counted = True
        for data in packets:
            session.receive_datagram(data, now)
        self.server.drain(peer, now)
        return peer

    async def reader(self, peer: Peer) -> None:
        link = peer.tcp
        assert link is not None
        session = peer.session
        while True:
            try:
                packets = await link.recv_packets()
            except LinkClosed:
                self.server.remove_peer(peer, "connection_closed")
                return
            except ProtocolError as exc:
                self.server.remove_peer(peer, "bad_packet_length", detail=exc.what)
                return
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.server.remove_peer(peer, "connection_reset", detail=str(exc))
                return
            now = trio.current_time()
            peer.rx_bytes += sum(map(len, packets))
            peer.rx_packets += len(packets)
            out: list[tuple[Peer, bytes]] = []
            to_device: list[bytes] = []
            control = False
            for data in packets:
                if data and data[0] in DATA_BYTE0:
                    plain = session.decrypt_data(data, now)
                    if plain is not None:
                        self.server.router.from_peer(peer, plain, now, out, to_device=to_device)
                else:
                    session.receive_datagram(data, now)
                    control = True
            self.server.write_device(to_device)
            if control:
                self.server.drain(peer, now)
                self.server.wake_if_sooner(peer)
            if out:
                await self.server.transmit(out)

    async def writer(self, peer: Peer) -> None:
        link, receive = peer.tcp, peer.tcp_recv
        assert link is not None and receive is not None
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await link.send_packets(batch)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.server.remove_peer(peer, "connection_reset", detail=str(exc))
