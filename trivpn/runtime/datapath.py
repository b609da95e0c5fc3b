"""Data-path settings derived once per connection (never per packet)."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Literal, cast

import trio

from trivpn.config import Options
from trivpn.protocol.datachannel import CIPHERS, normalize_cipher
from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.mss import data_overhead, mss_limit
from trivpn.runtime.errors import RuntimeSetupError


def mss_limit_for(options: Options, ciphers: tuple[str, ...], transport: str) -> int | None:
    """The TCP MSS to clamp SYNs to for ``options.mssfix`` (None: off), with the largest data
    overhead among ``ciphers`` (a server may serve peers with different ciphers)."""
    try:
        hmac_len = digest_info(options.auth)[1]
    except (ProtocolError, ValueError, KeyError):
        hmac_len = 20
    overhead = 0
    for name in ciphers or ("AES-256-GCM",):
        try:
            aead = CIPHERS[normalize_cipher(name)][1]
        except ProtocolError:
            continue
        overhead = max(overhead, data_overhead(aead, hmac_len=hmac_len))
    m = options.mssfix
    return mss_limit(m.max, mtu_mode=m.mtu, fixed=m.fixed, overhead=overhead or 24,
                     transport="udp" if transport == "udp" else "tcp")


def link_socket_of(link: object) -> socket.socket | trio.socket.SocketType | None:
    """The OS socket under a client link (UDP, TCP, or a SOCKS UDP relay's), or None for a
    link without one (in memory)."""
    inner = getattr(link, "inner", None)  # SocksUdpLink: its own UDP socket
    if inner is not None:
        return link_socket_of(inner)
    stream = getattr(link, "stream", None)  # TcpLink
    if stream is not None:
        return cast("trio.socket.SocketType", stream.socket)
    sock = getattr(link, "socket", None)  # UdpLink
    return cast("socket.socket | None", sock)


class PassTos:
    """``passtos``: the link socket's IP_TOS follows the TOS byte of the IPv4 packets read
    from the TUN (OpenVPN forward.c, process_ip_header() with PIPV4_PASSTOS records the
    byte of each IPv4 packet; process_outgoing_link() then calls socket.h
    link_socket_set_tos(), a ``setsockopt(IP_TOS)`` before each send, its result ignored).
    A non-IPv4 packet leaves the last byte in place, so do control packets, which go out
    with whatever the socket holds.

    OpenVPN sends one datagram per system call; trivpn sends batches (GSO). A batch is cut
    into runs of one TOS (:meth:`take`) and the socket option is set before each run only
    when the byte changes, so every datagram carries its own packet's TOS (the usual batch
    of one flow is one run, one send). Only built when ``passtos`` is on: the default
    data path never looks at the TOS."""

    def __init__(self, sock: socket.socket | trio.socket.SocketType | None) -> None:
        self.sock = sock
        self.tos: int | None = None  # the last IPv4 TOS seen (OpenVPN's ptos)
        self.applied: int | None = None  # what the socket holds
        self.marks: list[tuple[int | None, int]] = []  # (TOS, wire datagrams) of a batch

    def note(self, packet: bytes, count: int) -> None:
        """``count`` wire datagrams were made from TUN ``packet``."""
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            self.tos = packet[1]
        marks = self.marks
        if marks and marks[-1][0] == self.tos:
            marks[-1] = (self.tos, marks[-1][1] + count)
        else:
            marks.append((self.tos, count))

    def take(self, wire: list[bytes]) -> list[tuple[int | None, list[bytes]]]:
        """The encrypted batch ``wire`` cut into runs of one TOS (in order)."""
        marks, self.marks = self.marks, []
        out: list[tuple[int | None, list[bytes]]] = []
        i = 0
        for tos, n in marks:
            if n:
                out.append((tos, wire[i:i + n]))
            i += n
        return out

    def apply(self, tos: int | None) -> None:
        """Set IP_TOS to ``tos`` when it differs from what the socket holds (None: keep)."""
        if tos is None or tos == self.applied or self.sock is None:
            return
        self.applied = tos
        with contextlib.suppress(OSError):  # OpenVPN ignores setsockopt's result too
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


# IP_MTU_DISCOVER / IPV6_MTU_DISCOVER values (linux/in.h, linux/in6.h)
_PMTUDISC = {"no": 0, "maybe": 1, "yes": 2}  # IP_PMTUDISC_DONT, _WANT, _DO
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23


@dataclass(frozen=True, slots=True)
class LinkSocketOptions:
    """Options a client sets on its link socket before it connects (OpenVPN socket.c,
    create_socket() and socket_set_flags()/set_mtu_discover_type()): ``bind-dev``
    (SO_BINDTODEVICE), ``mtu-disc`` (IP_MTU_DISCOVER on UDP, IPV6_MTU_DISCOVER for IPv6)
    and ``socket-flags TCP_NODELAY`` (TCP only)."""

    bind_dev: str | None = None
    mtu_disc: Literal["no", "maybe", "yes"] | None = None
    tcp_nodelay: bool = False

    @classmethod
    def of(cls, options: Options) -> LinkSocketOptions:
        return cls(options.bind_dev, options.mtu_disc, options.socket_flags_nodelay)

    @property
    def any(self) -> bool:
        return self.bind_dev is not None or self.mtu_disc is not None or self.tcp_nodelay

    def apply(self, sock: socket.socket | trio.socket.SocketType, where: str) -> None:
        """Set what is configured; RuntimeSetupError when the kernel refuses (OpenVPN:
        bind-dev failing is fatal, "SO_BINDTODEVICE")."""
        try:
            if self.bind_dev is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                self.bind_dev.encode())
            if self.mtu_disc is not None and sock.type == socket.SOCK_DGRAM:
                if sock.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER,
                                    _PMTUDISC[self.mtu_disc])
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER,
                                    _PMTUDISC[self.mtu_disc])
            if self.tcp_nodelay and sock.type == socket.SOCK_STREAM:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            what = (f"cannot bind the link socket to device {self.bind_dev}"
                    if self.bind_dev is not None else "cannot set the link socket's options")
            raise RuntimeSetupError(what, where, errno=exc.errno) from exc
