"""Prometheus metrics: the text exposition format 0.0.4 at ``/metrics`` over a tiny HTTP server.

``trivpn run CONFIG --metrics-listen 127.0.0.1:PORT``. Only ``GET /metrics`` (and ``HEAD``) is
served; every response closes the connection. Metric names and their meaning are listed in
docs/events.md (section "Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
import trio

from trivpn.logging import RateLimitedLog

Log = structlog.stdlib.BoundLogger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PeerTraffic:
    cn: str
    peer_id: int
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything exposed, taken at one moment."""

    role: str
    start_time: float
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    connected: int
    handshakes: int
    renegotiations: int
    reconnects: int
    unauthenticated: int = 0
    handshake_failures: Mapping[str, int] = field(default_factory=dict)
    drops: Mapping[str, int] = field(default_factory=dict)
    peers: tuple[PeerTraffic, ...] = ()
    # When things stop working, unix time: "cert" (our own) and "ca" (the earliest CA)
    # certificate's notAfter; the earliest nextUpdate of the crl-verify CRLs.
    cert_expiry: Mapping[str, float] = field(default_factory=dict)
    crl_next_update: float | None = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, object]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[tuple[tuple[str, object], ...], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = repr(float(value)) if isinstance(value, float) else str(value)
            self.lines.append(f"{name}{_labels(labels)} {number}")


def render_metrics(s: MetricsSnapshot) -> str:
    """The exposition text for one snapshot."""
    w = _Writer()
    directions = (("in", s.bytes_in, s.packets_in), ("out", s.bytes_out, s.packets_out))
    w.family("trivpn_link_bytes_total", "counter",
             "Bytes received (in) and sent (out) on the link, all peers.",
             [((("direction", d),), b) for d, b, _ in directions])
    w.family("trivpn_link_packets_total", "counter",
             "Packets received (in) and sent (out) on the link, all peers.",
             [((("direction", d),), p) for d, _, p in directions])
    w.family("trivpn_peer_link_bytes_total", "counter",
             "Bytes received from (in) and sent to (out) one connected peer.",
             [((("cn", p.cn), ("peer_id", p.peer_id), ("direction", d)), v)
              for p in s.peers for d, v in (("in", p.bytes_in), ("out", p.bytes_out))])
    w.family("trivpn_peer_link_packets_total", "counter",
             "Packets received from (in) and sent to (out) one connected peer.",
             [((("cn", p.cn), ("peer_id", p.peer_id), ("direction", d)), v)
              for p in s.peers for d, v in (("in", p.packets_in), ("out", p.packets_out))])
    w.family("trivpn_connected_clients" if s.role == "server" else "trivpn_tunnel_up", "gauge",
             "Clients currently connected." if s.role == "server"
             else "1 while the tunnel is up, else 0.", [((), s.connected)])
    if s.role == "server":
        w.family("trivpn_unauthenticated_sessions", "gauge",
                 "Server: TCP connections and sessions not yet authenticated (the "
                 "pre-authentication quota in use).", [((), s.unauthenticated)])
    w.family("trivpn_handshakes_total", "counter",
             "Completed key negotiations (initial and renegotiations).", [((), s.handshakes)])
    w.family("trivpn_handshake_failures_total", "counter",
             "Failed handshakes by cause.",
             [((("cause", c),), n) for c, n in sorted(s.handshake_failures.items())])
    w.family("trivpn_packets_dropped_total", "counter", "Dropped packets by reason.",
             [((("reason", r),), n) for r, n in sorted(s.drops.items())])
    w.family("trivpn_reconnects_total", "counter",
             "Client: reconnect attempts. Server: connections of a common name seen before.",
             [((), s.reconnects)])
    w.family("trivpn_key_renegotiations_total", "counter",
             "Completed data channel key renegotiations.", [((), s.renegotiations)])
    w.family("trivpn_certificate_expiry_timestamp_seconds", "gauge",
             "When a certificate expires, unix time: cert = this process's own certificate, "
             "ca = the earliest-expiring ca certificate.",
             [((("certificate", k),), v) for k, v in sorted(s.cert_expiry.items())])
    if s.crl_next_update is not None:
        w.family("trivpn_crl_next_update_timestamp_seconds", "gauge",
                 "The crl-verify CRL's nextUpdate (the earliest, with several CRLs), unix "
                 "time: after it every peer is refused.", [((), s.crl_next_update)])
    w.family("process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.", [((), s.start_time)])
    return "\n".join(w.lines) + "\n"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) for ``--metrics-listen``; ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host.strip("[]"), number


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head: bool = False) -> bytes:
    header = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return header + (b"" if head else body)


async def _read_request(stream: trio.abc.Stream) -> bytes | None:
    data = b""
    with trio.move_on_after(REQUEST_TIMEOUT):
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                return None
        return data
    return None


class MetricsServer:
    """Serves ``render_metrics(snapshot())`` at ``/metrics``."""

    def __init__(self, host: str, port: int, snapshot: Callable[[], MetricsSnapshot],
                 log: Log) -> None:
        self.host = host
        self.port = port
        self.snapshot = snapshot
        self.log = log
        self.errors = RateLimitedLog(log)
        self.bound_port: int | None = None
        self._listeners: list[trio.SocketListener] | None = None

    async def open(self) -> None:
        """Bind and listen (idempotent; before privileges are dropped). Raises OSError."""
        if self._listeners is None:
            self._listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.bound_port = int(self._listeners[0].socket.getsockname()[1])

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        await self.open()
        listeners = self._listeners
        assert listeners is not None and self.bound_port is not None
        self.log.info("metrics_listening", address=f"{self.host}:{self.bound_port}")
        task_status.started(self.bound_port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            request = await _read_request(stream)
            try:
                answer = self._answer(request)
            except Exception as exc:  # a bug costs this request, never the VPN
                self.errors.exception("metrics_request_failed", time.monotonic(),
                                      error=repr(exc))
                answer = _response("500 Internal Server Error", b"internal error\n")
            await stream.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    def _answer(self, request: bytes | None) -> bytes:
        if request is None:
            return _response("400 Bad Request", b"bad request\n")
        parts = request.split(b"\r\n", 1)[0].split()
        if len(parts) < 2:
            return _response("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"only GET\n")
        if target != b"/metrics":
            return _response("404 Not Found", b"see /metrics\n", head=method == b"HEAD")
        body = render_metrics(self.snapshot()).encode()
        return _response("200 OK", body, CONTENT_TYPE, head=method == b"HEAD")
