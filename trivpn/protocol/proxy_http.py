"""The HTTP proxy handshake a client runs before OpenVPN's TCP stream: ``CONNECT`` and its reply.

Bytes only (sans-IO): :func:`connect_request` builds the request OpenVPN 2.6 sends
(OpenVPN src/openvpn/proxy.c, establish_http_proxy_passthru() and add_proxy_headers()):

    CONNECT host:port HTTP/1.0
    <custom headers, in the order given>
    Host: host                      (unless a custom header already is ``Host``)
    User-Agent: AGENT               (http-proxy-option AGENT)
    Proxy-Authorization: Basic ...  (basic auth)
    <empty line>

:class:`ConnectReply` reads the proxy's reply one chunk at a time and says when the header is
complete and whether the tunnel is open (status 200, as OpenVPN requires). The runtime reads
the reply in small pieces and never past the end of the header (:meth:`ConnectReply.want`), so
the first byte after it is the OpenVPN server's.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from trivpn.protocol.errors import PeerViolation

MAX_REPLY_HEADER = 8192
"""Longest reply header accepted from a proxy (OpenVPN reads it line by line into 512-byte
buffers; a proxy that sends more than this is not answering a CONNECT)."""


class ProxyError(PeerViolation):
    """The proxy's reply is not a valid answer to CONNECT."""

    reason = "bad_proxy_reply"


@dataclass(frozen=True, slots=True)
class HttpProxyRequest:
    """What goes into the CONNECT request (``http-proxy`` and ``http-proxy-option``)."""

    host: str
    port: int
    version: str = "1.0"
    agent: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    """``http-proxy-option CUSTOM-HEADER name [value]``: (name, value); a None value means
    the name is the whole header line."""
    username: str | None = None
    password: str | None = None
    """Basic auth credentials (never logged)."""
    authorization: str | None = None
    """Another ``Proxy-Authorization`` value (``NTLM <message>``), sent after the headers."""
    keep_alive: bool = False
    """``Proxy-Connection: Keep-Alive`` right after the CONNECT line (NTLM: proxy.c)."""

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (f"HttpProxyRequest(host={self.host!r}, port={self.port}, "
                f"version={self.version!r}, auth={'basic' if self.username else 'none'})")


def basic_credentials(username: str, password: str) -> str:
    """The ``Proxy-Authorization: Basic`` value: base64 of ``user:pass``."""
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def connect_request(req: HttpProxyRequest) -> bytes:
    """The whole CONNECT request, CRLF line ends, ending with the empty line."""
    lines = [f"CONNECT {req.host}:{req.port} HTTP/{req.version}"]
    if req.keep_alive:
        lines.append("Proxy-Connection: Keep-Alive")
    host_sent = False
    for name, value in req.headers:
        if value is not None:
            lines.append(f"{name}: {value}")
            host_sent = host_sent or name.lower() == "host"
        else:
            lines.append(name)
            host_sent = host_sent or name[:5].lower() == "host:"
    if not host_sent:
        lines.append(f"Host: {req.host}")
    if req.agent is not None:
        lines.append(f"User-Agent: {req.agent}")
    if req.username is not None:
        lines.append("Proxy-Authorization: Basic "
                     + basic_credentials(req.username, req.password or ""))
    if req.authorization is not None:
        lines.append(f"Proxy-Authorization: {req.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """The reply's verdict: ``status`` 200 means the tunnel to the server is open."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    """The reply's header lines as (name, value), in order."""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def content_length(self) -> int:
        """The body's length (0 without a valid Content-Length)."""
        for value in self.header_values("Content-Length"):
            if value.strip().isdigit():
                return min(int(value.strip()), 1 << 20)
        return 0

    def digest_challenge(self) -> str | None:
        """The parameters of ``Proxy-Authenticate: Digest <params>``, if the proxy asks."""
        for value in self.header_values("Proxy-Authenticate"):
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "digest":
                return rest.strip()
        return None

    def ntlm_challenge(self) -> str | None:
        """The base64 type 2 message of ``Proxy-Authenticate: NTLM <challenge>``."""
        for value in self.header_values("Proxy-Authenticate"):
            scheme, _, rest = value.strip().partition(" ")
            if scheme.upper() == "NTLM" and rest.strip():
                return rest.strip()
        return None


class ConnectReply:
    """Accumulates the proxy's reply to CONNECT up to the end of its header."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.result: ConnectResult | None = None

    def want(self) -> int:
        """How many bytes may be read now without reading past the header's end (which is
        ``\\r\\n\\r\\n`` or ``\\n\\n``): one after a line-end byte, otherwise two."""
        if self.result is not None:
            return 0
        return 1 if self._buf.endswith((b"\r", b"\n")) else 2

    def feed(self, data: bytes) -> ConnectResult | None:
        """Add bytes read from the proxy; the result once the header is complete.

        Raises :class:`ProxyError` for a reply that is not HTTP, or a header that is too
        long. Bytes after the header's end are an error too (the caller reads with
        :meth:`want`, so a well-behaved proxy never sends them before the server does).
        """
        if self.result is not None:
            raise ProxyError("data after the proxy's reply header", "http proxy reply")
        self._buf += data
        buf = bytes(self._buf)
        end = _header_end(buf)
        if end is None:
            if len(buf) > MAX_REPLY_HEADER:
                raise ProxyError(f"reply header longer than {MAX_REPLY_HEADER} bytes",
                                 "http proxy reply")
            return None
        if end != len(buf):
            raise ProxyError("bytes after the reply header arrived with it", "http proxy reply")
        status_line = buf.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProxyError(f"not an HTTP status line: {status_line[:80]!r}",
                             "http proxy reply")
        headers: list[tuple[str, str]] = []
        for raw in buf[:end].split(b"\n")[1:]:
            line = raw.rstrip(b"\r").decode("latin-1")
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip(), value.strip()))
        self.result = ConnectResult(int(parts[1]), parts[2] if len(parts) > 2 else "",
                                    tuple(headers))
        return self.result


def _header_end(buf: bytes) -> int | None:
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else None


# --- Digest (RFC 2617), which OpenVPN 2.6 uses only under 'auto' (proxy.c, PROXY_DIGEST_AUTH)

def digest_params(challenge: str) -> dict[str, str]:
    """The ``key=value`` / ``key="value"`` pairs of a ``Digest`` challenge (keys lowercase)."""
    out: dict[str, str] = {}
    i, n = 0, len(challenge)
    while i < n:
        while i < n and challenge[i] in " ,\t":
            i += 1
        eq = challenge.find("=", i)
        if eq < 0:
            break
        key = challenge[i:eq].strip().lower()
        i = eq + 1
        if i < n and challenge[i] == '"':
            end = challenge.find('"', i + 1)
            end = n if end < 0 else end
            out[key] = challenge[i + 1:end]
            i = end + 1
        else:
            end = challenge.find(",", i)
            end = n if end < 0 else end
            out[key] = challenge[i:end].strip()
            i = end
    return out


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(params: dict[str, str], username: str, password: str, uri: str,
                    cnonce: str, *, method: str = "CONNECT", nc: str = "00000001") -> str:
    """RFC 2617's request-digest with qop=auth (OpenVPN: DigestCalcHA1/DigestCalcResponse,
    ``md5-sess`` when the proxy asks for it)."""
    realm, nonce = params["realm"], params["nonce"]
    ha1 = _md5_hex(f"{username}:{realm}:{password}")
    if params.get("algorithm", "").lower() == "md5-sess":
        ha1 = _md5_hex(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5_hex(f"{method}:{uri}")
    return _md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def digest_authorization(challenge: str, username: str, password: str, *, host: str,
                         port: int, cnonce: str) -> str:
    """The ``Proxy-Authorization`` value answering ``Proxy-Authenticate: Digest
    <challenge>`` for ``CONNECT host:port``, in OpenVPN's field order; ProxyError without
    realm or nonce."""
    params = digest_params(challenge)
    if "realm" not in params or "nonce" not in params:
        raise ProxyError("Digest challenge without realm= or nonce=", "http proxy reply")
    uri = f"{host}:{port}"
    response = digest_response(params, username, password, uri, cnonce)
    opaque = f', opaque="{params["opaque"]}"' if "opaque" in params else ""
    return (f'Digest username="{username}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", qop=auth, nc=00000001, '
            f'cnonce="{cnonce}", response="{response}"{opaque}')
