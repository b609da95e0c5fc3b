"""HTTP CONNECT as OpenVPN 2.6 sends it (proxy.c) and the reply parser."""

from __future__ import annotations

import base64

import pytest

from trivpn.protocol.proxy_http import (
    ConnectReply,
    HttpProxyRequest,
    ProxyError,
    connect_request,
)


@pytest.mark.directive("http-proxy")
def test_connect_request_names_server_and_host_header_without_auth() -> None:
    data = connect_request(HttpProxyRequest("vpn.example.net", 1194))
    assert data == (b"CONNECT vpn.example.net:1194 HTTP/1.0\r\n"
                    b"Host: vpn.example.net\r\n\r\n")


@pytest.mark.directive("http-proxy")
def test_connect_request_carries_basic_credentials() -> None:
    data = connect_request(HttpProxyRequest("198.18.0.1", 443, username="alice",
                                            password="s3cr:et"))
    line = next(x for x in data.split(b"\r\n") if x.startswith(b"Proxy-Authorization"))
    assert base64.b64decode(line.split()[-1]) == b"alice:s3cr:et"


@pytest.mark.directive("http-proxy-option")
def test_connect_request_version_agent_and_custom_headers_in_openvpn_order() -> None:
    data = connect_request(HttpProxyRequest(
        "h", 1, version="1.1", agent="Mozilla/5.0",
        headers=(("X-One", "1"), ("X-Two: 2", None))))
    assert data.split(b"\r\n") == [
        b"CONNECT h:1 HTTP/1.1", b"X-One: 1", b"X-Two: 2", b"Host: h",
        b"User-Agent: Mozilla/5.0", b"", b""]


@pytest.mark.directive("http-proxy-option")
def test_custom_host_header_replaces_the_default_one() -> None:
    data = connect_request(HttpProxyRequest("h", 1, headers=(("host", "front.example"),)))
    assert data.count(b"ost: ") == 1 and b"host: front.example" in data


def test_request_repr_hides_the_password() -> None:
    assert "pw" not in repr(HttpProxyRequest("h", 1, username="u", password="pw"))


def _feed_as_runtime(reply: ConnectReply, data: bytes) -> int:
    """Feed ``data`` in the chunk sizes want() allows; how many bytes were consumed."""
    pos = 0
    while reply.result is None:
        n = reply.want()
        reply.feed(data[pos:pos + n])
        pos += n
    return pos


def test_reply_200_opens_the_tunnel_and_never_reads_past_the_header() -> None:
    header = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\n"
    reply = ConnectReply()
    used = _feed_as_runtime(reply, header + b"\x00\x2a server bytes")
    assert used == len(header)
    assert reply.result is not None and reply.result.ok
    assert reply.result.reason == "Connection established"


def test_reply_with_bare_newlines_is_accepted() -> None:
    reply = ConnectReply()
    assert _feed_as_runtime(reply, b"HTTP/1.1 200 OK\n\nrest") == len(b"HTTP/1.1 200 OK\n\n")


def test_reply_407_is_a_refusal_with_its_status() -> None:
    reply = ConnectReply()
    _feed_as_runtime(reply, b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n")
    assert reply.result is not None and not reply.result.ok and reply.result.status == 407


def test_non_http_reply_is_an_error() -> None:
    reply = ConnectReply()
    with pytest.raises(ProxyError, match="not an HTTP status line"):
        _feed_as_runtime(reply, b"SSH-2.0-OpenSSH\r\n\r\n")


def test_endless_header_is_an_error() -> None:
    reply = ConnectReply()
    reply.feed(b"HTTP/1.0 200 OK\r\n")
    with pytest.raises(ProxyError, match="longer than"):
        for _ in range(10000):
            reply.feed(b"X: y\r")
            reply.feed(b"\n")


def test_bytes_beyond_the_header_in_one_chunk_are_an_error() -> None:
    with pytest.raises(ProxyError, match="after the reply header"):
        ConnectReply().feed(b"HTTP/1.0 200 OK\r\n\r\nextra")
