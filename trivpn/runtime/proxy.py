"""Reaching the server through an HTTP or SOCKS5 proxy (``http-proxy``, ``socks-proxy``).

The handshakes are :mod:`trivpn.protocol.proxy_http` and :mod:`trivpn.protocol.proxy_socks`;
this module moves their bytes over a trio stream, reading never past the end of a reply, so
the stream can carry OpenVPN's framed packets afterwards. For ``proto udp`` through SOCKS5
the client's datagrams go to the proxy's UDP relay with the SOCKS UDP header added and
removed by :class:`SocksUdpLink` (a :class:`~trivpn.runtime.transport.DatagramLink`); the TCP
connection that set the association up stays open as long as the link (RFC 1928: the
association ends with it).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace

import trio

from trivpn.config.errors import ConfigError
from trivpn.config.options import FileSource, HttpProxy, SocksProxy
from trivpn.protocol.ntlm import NEGOTIATE, NtlmError, authenticate
from trivpn.protocol.proxy_http import (
    ConnectReply,
    ConnectResult,
    HttpProxyRequest,
    ProxyError,
    connect_request,
    digest_authorization,
)
from trivpn.protocol.proxy_socks import SocksHandshake, SocksResult, unwrap_udp, wrap_udp
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import Address, LinkCounters
from trivpn.runtime.transport import DatagramLink

__all__ = ["ProxyCredentials", "ProxyRefused", "SocksUdpLink", "http_connect",
           "read_proxy_credentials", "socks_connect"]


class ProxyRefused(RuntimeSetupError):
    """The HTTP proxy answered CONNECT with a status other than 200."""

    def __init__(self, what: str, where: str, status: int,
                 digest_challenge: str | None = None) -> None:
        super().__init__(what, where)
        self.status = status
        self.digest_challenge = digest_challenge  # a 407's Proxy-Authenticate: Digest params


class ProxyCredentials:
    """Username and password for a proxy (never shown in repr)."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return "ProxyCredentials(<hidden>)"


def read_proxy_credentials(source: FileSource) -> ProxyCredentials:
    """Username on the first line, password on the second (OpenVPN misc.c get_user_pass_cr()
    reading a file); a ConfigError naming the directive's line otherwise."""
    lines = source.read_text().splitlines()
    if len(lines) < 2 or not lines[0]:
        raise ConfigError(f"{source.directive} {source.describe()} must hold the username on "
                          "line 1 and the password on line 2", source.config_path, source.line)
    return ProxyCredentials(lines[0], lines[1])


async def http_connect(stream: trio.abc.Stream, proxy: HttpProxy, host: str, port: int,
                       credentials: ProxyCredentials | None, *,
                       digest: str | None = None) -> None:
    """Ask the HTTP proxy to connect to ``host``:``port``; RuntimeSetupError if it refuses.

    Raises :class:`ProxyRefused` (with the status) when the proxy says no; for ``auth
    auto``/``auto-nct`` the caller then retries a ``407`` on a new connection with
    credentials, as OpenVPN does."""
    basic = credentials is not None and proxy.auth == "basic"
    ntlm = credentials is not None and proxy.auth in ("ntlm", "ntlm2")
    request = HttpProxyRequest(
        host, port, version=proxy.version, agent=proxy.agent, headers=proxy.headers,
        username=credentials.username if basic and credentials else None,
        password=credentials.password if basic and credentials else None,
        authorization=f"NTLM {NEGOTIATE}" if ntlm else None, keep_alive=ntlm)
    where = f"http proxy {proxy.host}:{proxy.port}"
    if digest is not None and credentials is not None:
        # auto: the Digest challenge of the previous connection's 407 (proxy.c: a new
        # connection, CONNECT with the answer; cnonce = base64 of 8 random bytes)
        cnonce = base64.b64encode(secrets.token_bytes(8)).decode("ascii")
        try:
            request = replace(request, authorization=digest_authorization(
                digest, credentials.username, credentials.password, host=host, port=port,
                cnonce=cnonce))
        except ProxyError as exc:
            raise RuntimeSetupError(f"bad Digest challenge from the HTTP proxy: {exc.what}",
                                    where) from exc
    await stream.send_all(connect_request(request))
    result = await _read_reply(stream, where)
    if ntlm and result.status == 407 and credentials is not None:
        # NTLM phase 2 → 3 on the same connection (proxy.c, establish_http_proxy_passthru)
        challenge = result.ntlm_challenge()
        if challenge is None:
            raise ProxyRefused("HTTP proxy answered 407 without an NTLM challenge", where, 407)
        await _discard(stream, result.content_length, where)
        try:
            answer = authenticate(challenge, credentials.username, credentials.password,
                                  v2=proxy.auth == "ntlm2", unix_time=int(time.time()),
                                  nonce=secrets.token_bytes(8))
        except NtlmError as exc:
            raise RuntimeSetupError(f"bad NTLM challenge from the HTTP proxy: {exc.what}",
                                    where) from exc
        await stream.send_all(connect_request(replace(
            request, authorization=f"NTLM {answer}")))
        result = await _read_reply(stream, where)
    if not result.ok:
        hint = (" (proxy authentication required: give credentials in the http-proxy line "
                "or <http-proxy-user-pass>)" if result.status == 407 and not basic else "")
        raise ProxyRefused(f"HTTP proxy refused CONNECT {host}:{port}: {result.status} "
                           f"{result.reason}{hint}", where, result.status,
                           result.digest_challenge() if result.status == 407 else None)


async def _read_reply(stream: trio.abc.Stream, where: str) -> ConnectResult:
    reply = ConnectReply()
    try:
        while reply.result is None:
            data = await stream.receive_some(reply.want())
            if not data:
                raise RuntimeSetupError("the HTTP proxy closed the connection before "
                                        "answering CONNECT", where)
            reply.feed(bytes(data))
    except ProxyError as exc:
        raise RuntimeSetupError(f"bad reply from the HTTP proxy: {exc.what}", where) from exc
    return reply.result


async def _discard(stream: trio.abc.Stream, length: int, where: str) -> None:
    """Read and drop the body of a 407 reply (its Content-Length bytes)."""
    while length > 0:
        data = await stream.receive_some(min(length, 4096))
        if not data:
            raise RuntimeSetupError("the HTTP proxy closed the connection during NTLM "
                                    "authentication", where)
        length -= len(data)


async def socks_connect(stream: trio.abc.Stream, proxy: SocksProxy, host: str, port: int,
                        credentials: ProxyCredentials | None, *,
                        udp: bool = False) -> SocksResult:
    """Run the SOCKS5 handshake (CONNECT, or UDP ASSOCIATE with ``udp``); the proxy's bound
    address. RuntimeSetupError when the proxy refuses."""
    where = f"socks proxy {proxy.host}:{proxy.port}"
    hs = SocksHandshake(host, port, udp=udp,
                        username=credentials.username if credentials else None,
                        password=credentials.password if credentials else None)
    try:
        await stream.send_all(hs.start())
        while not hs.done:
            data = await stream.receive_some(hs.want())
            if not data:
                raise RuntimeSetupError("the SOCKS proxy closed the connection during the "
                                        "handshake", where)
            out = hs.feed(bytes(data))
            if out:
                await stream.send_all(out)
    except ProxyError as exc:
        raise RuntimeSetupError(f"SOCKS proxy: {exc.what}", where) from exc
    assert hs.result is not None
    return hs.result


class SocksUdpLink:
    """A connected datagram link through a SOCKS5 UDP relay (a DatagramLink).

    Every datagram to the server gets the 10-byte SOCKS UDP header naming ``target``; every
    datagram from the relay loses it (malformed ones, and any not from ``target``, are
    dropped and counted in :attr:`dropped`)."""

    def __init__(self, inner: DatagramLink, relay: Address, target: tuple[str, int],
                 control: trio.abc.Stream) -> None:
        self._inner = inner
        self._relay = relay
        self._target = target
        self._control = control
        self.dropped = 0
        inner.connect(relay)

    @property
    def counters(self) -> LinkCounters:
        return self._inner.counters

    @property
    def inner(self) -> DatagramLink:
        """The UDP link to the relay (its socket carries the datagrams)."""
        return self._inner

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    def connect(self, addr: Address) -> None:
        """Only the relay is ever a peer; ``addr`` names the server behind it."""
        if addr is not None:
            self._target = (str(addr[0]), int(addr[1]))

    def _wrap(self, data: bytes) -> bytes:
        return wrap_udp(data, self._target[0], self._target[1])

    def send_nowait(self, data: bytes, addr: Address | None = None) -> bool | None:
        return self._inner.send_nowait(self._wrap(data))

    def try_send(self, data: bytes, addr: Address | None = None) -> bool:
        return self._inner.try_send(self._wrap(data))

    def try_send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        return self._inner.try_send_many([self._wrap(d) for d in datagrams])

    async def send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        return await self._inner.send_many([self._wrap(d) for d in datagrams])

    async def recv_batch(self, max_packets: int = 64) -> list[tuple[bytes, Address]]:
        while True:
            out = []
            for datagram, _ in await self._inner.recv_batch(max_packets):
                try:
                    payload, source = unwrap_udp(datagram)
                except ProxyError:
                    self.dropped += 1
                    continue
                if source != self._target:
                    self.dropped += 1
                    continue
                out.append((payload, source))
            if out:
                return out

    def close(self) -> None:
        self._inner.close()
        # the association ends with its TCP connection (closing a socket stream needs no I/O)
        close = getattr(self._control, "socket", None)
        if close is not None:
            close.close()
