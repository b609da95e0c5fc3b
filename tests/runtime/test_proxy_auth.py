"""http-proxy ... ntlm / ntlm2 (the NTLM exchange on one proxy connection) and Digest under
``auto``, in memory (a proxy double that checks the answer to its challenge, then hands the
stream to the peer)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import SERVER, Lab
from trivpn.protocol.ntlm import NEGOTIATE, ntlmv1_response, ntlmv2_hash
from trivpn.protocol.proxy_http import digest_params, digest_response
from trivpn.runtime.link import FramedLink

PROXY = ("198.18.0.80", 3128)
CHALLENGE = bytes.fromhex("0123456789abcdef")


def _type2() -> str:
    msg = bytearray(48)
    msg[0:8] = b"NTLMSSP\0"
    msg[8] = 2
    struct.pack_into("<I", msg, 0x14, 0x00000202)
    msg[24:32] = CHALLENGE
    return base64.b64encode(bytes(msg)).decode()


def _field(raw: bytes, offset: int) -> bytes:
    length, _, pos = struct.unpack_from("<HHI", raw, offset)
    return raw[pos:pos + length]


async def _head(stream: trio.abc.Stream) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await stream.receive_some(1)
    return head


@pytest.mark.directive("http-proxy")
@pytest.mark.parametrize("method", ["ntlm", "ntlm2"])
async def test_http_proxy_ntlm_answers_the_challenge_on_the_same_connection(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, method: str) -> None:
    (tmp_path / "proxy-auth.txt").write_text("Domain\\User\nPassword\n")
    lab = Lab.create(tmp_path, f"http-proxy {PROXY[0]} {PROXY[1]} proxy-auth.txt {method}\n",
                     proto="tcp-client")
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, peer_recv = trio.open_memory_channel[FramedLink](4)
    seen: list[bytes] = []
    connections = 0

    async def proxy() -> None:
        nonlocal connections
        async for stream in accept_recv:
            connections += 1
            seen.append(await _head(stream))
            await stream.send_all(b"HTTP/1.0 407 Proxy Authentication Required\r\n"
                                  b"Proxy-Authenticate: NTLM " + _type2().encode()
                                  + b"\r\nContent-Length: 6\r\n\r\ndenied")
            seen.append(await _head(stream))
            await stream.send_all(b"HTTP/1.0 200 Connection established\r\n\r\n")
            await peer_send.send(FramedLink(stream, peer=("198.18.0.2", 40000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        nursery.start_soon(lab.peer.serve_tcp, peer_recv)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert connections == 1
    first, second = seen[0].decode(), seen[1].decode("latin-1")
    for request in (first, second):
        assert request.startswith(f"CONNECT {SERVER[0]}:{SERVER[1]} HTTP/1.0\r\n"
                                  "Proxy-Connection: Keep-Alive\r\n")
    assert f"Proxy-Authorization: NTLM {NEGOTIATE}\r\n" in first
    found = re.search(r"Proxy-Authorization: NTLM (\S+)\r\n", second)
    assert found is not None
    raw = base64.b64decode(found.group(1))
    assert (_field(raw, 0x24), _field(raw, 0x1C)) == (b"User", b"Domain")
    nt = _field(raw, 0x14)
    if method == "ntlm":
        assert nt == ntlmv1_response("Password", CHALLENGE)
    else:  # HMAC-MD5(NTOWFv2, challenge + blob) + blob
        blob = nt[16:]
        assert nt[:16] == hmac.new(ntlmv2_hash("User", "Domain", "Password"),
                                   CHALLENGE + blob, hashlib.md5).digest()
    assert "Password" not in lab.log.stream.getvalue()


@pytest.mark.directive("http-proxy", "http-proxy-user-pass")
async def test_http_proxy_auto_answers_a_digest_challenge_on_a_new_connection(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab.create(tmp_path, f"http-proxy {PROXY[0]} {PROXY[1]} auto\n"
                               "<http-proxy-user-pass>\nMufasa\nCircle Of Life\n"
                               "</http-proxy-user-pass>\n", proto="tcp-client")
    accept_send, accept_recv = trio.open_memory_channel[trio.abc.Stream](4)
    lab.host.stream_accept[PROXY] = accept_send
    peer_send, peer_recv = trio.open_memory_channel[FramedLink](4)
    seen: list[bytes] = []
    challenge = 'realm="lab", nonce="n0nce", qop="auth", opaque="op"'

    async def proxy() -> None:
        async for stream in accept_recv:
            head = await _head(stream)
            seen.append(head)
            found = re.search(rb'response="([0-9a-f]+)"', head)
            cnonce = re.search(rb'cnonce="([^"]+)"', head)
            target = f"{SERVER[0]}:{SERVER[1]}"
            if found is None or cnonce is None or found.group(1).decode() != digest_response(
                    digest_params(challenge), "Mufasa", "Circle Of Life", target,
                    cnonce.group(1).decode()):
                await stream.send_all(b"HTTP/1.0 407 Proxy Authentication Required\r\n"
                                      b"Proxy-Authenticate: Digest " + challenge.encode()
                                      + b"\r\n\r\n")
                await stream.aclose()
                continue
            await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\n")
            await peer_send.send(FramedLink(stream, peer=("198.18.0.2", 40000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        nursery.start_soon(lab.peer.serve_tcp, peer_recv)
        await lab.start(nursery, serve=False)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert len(seen) == 2
    assert b"Proxy-Authorization" not in seen[0]
    assert b'Proxy-Authorization: Digest username="Mufasa", realm="lab"' in seen[1]
    assert b'opaque="op"' in seen[1]
