"""The SOCKS5 client handshake (RFC 1928, RFC 1929) as OpenVPN 2.6 runs it, and the UDP
relay header.

Bytes only (sans-IO), following OpenVPN src/openvpn/socks.c:

* greeting: one method offered, ``05 01 00`` (no auth) or ``05 01 02`` (username/password
  when ``socks-proxy`` names an auth file), socks_handshake();
* username/password sub-negotiation ``01 ULEN USER PLEN PASS``, reply ``01 00`` on success,
  socks_username_password_auth();
* TCP: ``CONNECT`` with the server's name as a DOMAINNAME address (ATYP 3),
  establish_socks_proxy_passthru();
* UDP: ``UDP ASSOCIATE`` with address 0.0.0.0:0; the reply's IPv4 address and port is the
  relay every datagram goes to, wrapped in the 10-byte header ``00 00 00 01 A.B.C.D PORT``
  (socks_process_outgoing_udp(), socks_process_incoming_udp()).

:class:`SocksHandshake` is driven by the runtime: send :meth:`~SocksHandshake.start`'s
bytes, then read at most :meth:`~SocksHandshake.want` bytes at a time and :meth:`feed` them,
sending whatever ``feed`` returns, until :attr:`~SocksHandshake.done`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from trivpn.protocol.proxy_http import ProxyError

SOCKS_VERSION = 5
METHOD_NONE = 0x00
METHOD_USERPASS = 0x02
CMD_CONNECT = 0x01
CMD_UDP_ASSOCIATE = 0x03
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
UDP_HEADER_LEN = 10

REPLY_MESSAGES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}

__all__ = ["ProxyError", "SocksHandshake", "SocksResult", "unwrap_udp", "wrap_udp"]


class _State(Enum):
    METHOD = "method"
    AUTH = "auth"
    REPLY_HEAD = "reply_head"
    REPLY_ADDR = "reply_addr"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class SocksResult:
    """The proxy's bound address: for UDP ASSOCIATE, the relay to send datagrams to."""

    host: str
    port: int


class SocksHandshake:
    """One SOCKS5 negotiation: CONNECT to ``host``:``port`` (``udp=False``) or UDP ASSOCIATE."""

    def __init__(self, host: str, port: int, *, udp: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        if len(host.encode()) > 255:
            raise ValueError("host name longer than 255 bytes")
        self.host = host
        self.port = port
        self.udp = udp
        self._username = username
        self._password = password
        self._state = _State.METHOD
        self._buf = bytearray()
        self._need = 2
        self._atyp = ATYP_IPV4
        self.result: SocksResult | None = None

    def __repr__(self) -> str:
        return f"SocksHandshake({self.host!r}, {self.port}, udp={self.udp}, state={self._state})"

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def method(self) -> int:
        return METHOD_USERPASS if self._username is not None else METHOD_NONE

    def start(self) -> bytes:
        """The greeting: version 5, one method."""
        return bytes([SOCKS_VERSION, 1, self.method])

    def want(self) -> int:
        """How many more bytes the current reply needs (never more than it has)."""
        return 0 if self.done else self._need - len(self._buf)

    def feed(self, data: bytes) -> bytes:
        """Add bytes from the proxy; return what to send next (may be empty).

        Raises :class:`ProxyError` when the proxy refuses or answers out of protocol."""
        if self.done:
            raise ProxyError("data after the SOCKS handshake", "socks reply")
        self._buf += data
        out = b""
        while not self.done and len(self._buf) >= self._need:
            out += self._step()
        return out

    def _take(self) -> bytes:
        chunk = bytes(self._buf[:self._need])
        del self._buf[:self._need]
        return chunk

    def _step(self) -> bytes:
        state = self._state
        if state is _State.METHOD:
            return self._method_reply()
        if state is _State.AUTH:
            return self._auth_reply()
        if state is _State.REPLY_HEAD:
            return self._reply_head()
        return self._reply_addr()

    def _method_reply(self) -> bytes:
        ver, method = self._take()
        if ver != SOCKS_VERSION:
            raise ProxyError(f"not a SOCKS5 proxy (version {ver})", "socks method reply")
        if method != self.method:
            raise ProxyError("the proxy did not accept the authentication method offered "
                             f"({'username/password' if self._username else 'none'}; "
                             f"it chose {method:#04x})", "socks method reply")
        if self._username is not None:
            self._state, self._need = _State.AUTH, 2
            return self._auth_request()
        return self._command()

    def _auth_reply(self) -> bytes:
        ver, status = self._take()
        if ver != 1 or status != 0:
            raise ProxyError("the proxy rejected the username/password",
                             "socks auth reply", reason="proxy_auth_failed")
        return self._command()

    def _reply_head(self) -> bytes:
        head = self._take()
        if head[0] != SOCKS_VERSION:
            raise ProxyError(f"bad version {head[0]} in the reply", "socks reply")
        if head[1] != 0:
            message = REPLY_MESSAGES.get(head[1], f"error {head[1]}")
            raise ProxyError(f"the proxy refused: {message}", "socks reply",
                             reason="proxy_refused")
        atyp = head[3]
        if atyp == ATYP_IPV4:
            self._need = 4 + 2
        elif atyp == ATYP_IPV6:
            self._need = 16 + 2
        elif atyp == ATYP_DOMAIN:
            self._need = 1 + head[4] + 2
        else:
            raise ProxyError(f"unknown address type {atyp}", "socks reply")
        self._buf[0:0] = head[4:5]  # the address's first byte is part of it
        self._atyp = atyp
        self._state = _State.REPLY_ADDR
        return b""

    def _reply_addr(self) -> bytes:
        body = self._take()
        addr, port = body[:-2], int.from_bytes(body[-2:], "big")
        if self._atyp == ATYP_IPV4:
            host = str(ipaddress.IPv4Address(addr))
        elif self._atyp == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(addr))
        else:
            host = addr[1:].decode("ascii", errors="replace")
        self.result = SocksResult(host, port)
        self._state = _State.DONE
        return b""

    def _auth_request(self) -> bytes:
        user = (self._username or "").encode()
        password = (self._password or "").encode()
        if len(user) > 255 or len(password) > 255:
            raise ValueError("SOCKS username and password are at most 255 bytes each")
        return bytes([1, len(user)]) + user + bytes([len(password)]) + password

    def _command(self) -> bytes:
        # the reply header: VER REP RSV ATYP and the first address byte (enough to size it)
        self._state, self._need = _State.REPLY_HEAD, 5
        if self.udp:
            return bytes([SOCKS_VERSION, CMD_UDP_ASSOCIATE, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
        name = self.host.encode()
        return (bytes([SOCKS_VERSION, CMD_CONNECT, 0, ATYP_DOMAIN, len(name)]) + name
                + self.port.to_bytes(2, "big"))


def wrap_udp(payload: bytes, host: str, port: int) -> bytes:
    """``payload`` for the relay, addressed to the IPv4 ``host``:``port``."""
    return (b"\x00\x00\x00\x01" + ipaddress.IPv4Address(host).packed
            + port.to_bytes(2, "big") + payload)


def unwrap_udp(datagram: bytes) -> tuple[bytes, tuple[str, int]]:
    """(payload, source) of a datagram from the relay; :class:`ProxyError` for a short,
    fragmented or non-IPv4 one (OpenVPN drops those too)."""
    if len(datagram) < UDP_HEADER_LEN:
        raise ProxyError(f"{len(datagram)}-byte datagram is shorter than the SOCKS UDP "
                         "header", "socks udp", reason="truncated")
    if datagram[2] != 0:
        raise ProxyError("fragmented SOCKS UDP datagram", "socks udp", reason="fragmented")
    if datagram[3] != ATYP_IPV4:
        raise ProxyError(f"SOCKS UDP address type {datagram[3]} (IPv4 expected)",
                         "socks udp", reason="bad_address_type")
    host = str(ipaddress.IPv4Address(datagram[4:8]))
    port = int.from_bytes(datagram[8:10], "big")
    return datagram[UDP_HEADER_LEN:], (host, port)
