"""Open many TCP connections to a server, from inside a test namespace (run as a process).

``python tcp_opener.py HOST PORT --sources A,B,... --idle N --garbage M``:

1. opens ``N`` idle connections (connect, send nothing, keep them open), spread over the
   source addresses;
2. makes ``M`` garbage openings: connect, send random bytes (a random length prefix, a framed
   packet of noise, an HTTP request) or only a FIN, and wait for the server to close it;
3. prints one JSON line with what happened, then keeps the idle connections open for
   ``--hold`` seconds (the server may close them earlier).

Plain non-blocking ``connect`` calls, at most ``--batch`` pending at once, so no raw sockets and
bounded descriptors (RLIMIT_NOFILE is raised to what the idle set needs). Everything stops at
``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import resource
import selectors
import socket
import struct
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_TIMEOUT = 8.0  # longer than the server's 5 s first-packet timeout
IDLE_PAUSE = 0.03


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _start(host: str, port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(code, "connect failed")
    return sock


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        body = rng.randbytes(rng.randrange(1, 120))
        return struct.pack(">H", len(body)) + body
    if kind == 2:
        return b"GET / HTTP/1.1\r\nHost: vpn\r\n\r\n"
    return b""


def _spray(sock: socket.socket, rng: random.Random) -> None:
    data = _garbage(rng)
    with contextlib.suppress(OSError):
        if data:
            sock.send(data)
        else:
            sock.shutdown(socket.SHUT_WR)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while sock.recv(4096, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _open_many(host: str, port: int, sources: list[str], total: int, in_flight: int,
               deadline: float, rng: random.Random | None) -> tuple[list[socket.socket], int]:
    """Connect ``total`` times, at most ``in_flight`` at once: (idle sockets, failures).

    Without ``rng`` every connection is kept idle, ``in_flight`` connects per pause of
    ``IDLE_PAUSE``. With ``rng`` each one sends garbage (or only its FIN) and counts as done when
    the server has closed it, which paces the openings to the server's speed instead of
    overflowing its accept queue (a dropped SYN stalls a connect for a second).
    """
    idle: list[socket.socket] = []
    failed = started = finished = 0
    pending: dict[socket.socket, float] = {}

    def done(sock: socket.socket, *, ok: bool) -> None:
        nonlocal failed, finished
        sel.unregister(sock)
        del pending[sock]
        finished += 1
        if not ok:
            failed += 1
            sock.close()

    with selectors.DefaultSelector() as sel:
        while finished < total and time.monotonic() < deadline:
            burst = 0
            while started < total and len(pending) < in_flight:
                started += 1
                try:
                    sock = _start(host, port, sources[started % len(sources)])
                except OSError:
                    failed += 1
                    finished += 1
                    continue
                sel.register(sock, selectors.EVENT_WRITE)
                pending[sock] = time.monotonic()
                burst += 1
            if rng is None and burst:
                time.sleep(IDLE_PAUSE)
            for key, event in sel.select(0.2):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                sock = ready
                if event & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        done(sock, ok=False)
                    elif rng is None:
                        done(sock, ok=True)
                        idle.append(sock)
                    else:
                        _spray(sock, rng)
                        sel.modify(sock, selectors.EVENT_READ)
                elif _closed_by_peer(sock):  # what a garbage opening should get
                    done(sock, ok=True)
                    sock.close()
            now = time.monotonic()
            for sock in [s for s, t in pending.items() if now - t > CONNECT_TIMEOUT]:
                done(sock, ok=False)
        for sock in pending:
            sock.close()
    return idle, failed + len(pending)


def _still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--sources", required=True)
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--garbage", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--deadline", type=float, default=30.0)
    ap.add_argument("--hold", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1194)
    args = ap.parse_args(argv)
    sources = args.sources.split(",")
    _raise_fd_limit(args.idle + args.batch + 256)
    rng = random.Random(args.seed)
    started = time.monotonic()
    end = started + args.deadline

    idle, failed = _open_many(args.host, args.port, sources, args.idle, args.batch, end, None)
    idle_seconds = time.monotonic() - started
    _, bad = _open_many(args.host, args.port, sources, args.garbage, args.batch, end, rng)
    print(json.dumps({
        "idle": len(idle), "garbage": args.garbage - bad, "failed": failed + bad,
        "idle_seconds": round(idle_seconds, 2),
        "seconds": round(time.monotonic() - started, 2),
        "idle_still_open": sum(1 for s in idle if _still_open(s)),
    }), flush=True)
    time.sleep(args.hold)
    for sock in idle:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
