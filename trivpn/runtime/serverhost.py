"""The server's real host: the UDP socket or TCP listener and the TUN/TAP device (tests give
the server in-memory doubles instead, :class:`~trivpn.runtime.transport.ServerHost`)."""

from __future__ import annotations

from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import PktinfoUdpLink, UdpLink, apply_sndbuf_rcvbuf, open_tcp_listener
from trivpn.runtime.transport import DatagramLink, PacketListener, TunnelHandle
from trivpn.runtime.tunnel import Tunnel, TunnelPlan


class SystemServerHost:
    """The real host: sockets and TUN/TAP devices (a
    :class:`~trivpn.runtime.transport.ServerHost`)."""

    def open_tunnel(self, plan: TunnelPlan) -> TunnelHandle:
        return Tunnel.open(plan)

    def open_udp(self, host: str, port: int, sndbuf: int | None,
                 rcvbuf: int | None, *, multihome: bool = False) -> DatagramLink:
        link = (PktinfoUdpLink.bind_multihome(host, port) if multihome
                else UdpLink.bind(host, port))
        try:
            apply_sndbuf_rcvbuf(link.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            link.close()
            raise
        return link

    async def open_tcp_listener(self, host: str, port: int, sndbuf: int | None,
                                rcvbuf: int | None) -> PacketListener:
        listener = await open_tcp_listener(host, port)
        try:
            # accepted connections inherit the listening socket's buffer sizes
            apply_sndbuf_rcvbuf(listener.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            await listener.aclose()
            raise
        return listener
