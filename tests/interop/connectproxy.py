"""A minimal HTTP CONNECT proxy for interop tests: ``python connectproxy.py PORT LOG``.

Listens on every address of its namespace, writes each request head to LOG (one JSON string
a line), answers ``200 Connection established`` and relays bytes both ways. Only for tests
(one thread per direction, no limits beyond the test's own lifetime).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(conn: socket.socket, log: str) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(1)
        if not chunk:
            conn.close()
            return
        head += chunk
    with open(log, "a") as f:
        f.write(json.dumps(head.decode("latin-1")) + "\n")
    target = head.split(b" ")[1].decode()
    host, _, port = target.rpartition(":")
    upstream = socket.create_connection((host, int(port)), timeout=5)
    upstream.settimeout(None)
    conn.sendall(b"HTTP/1.0 200 Connection established\r\n\r\n")
    threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()
    _pipe(upstream, conn)


def main() -> None:
    port, log = int(sys.argv[1]), sys.argv[2]
    listener = socket.create_server(("0.0.0.0", port), reuse_port=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn, log), daemon=True).start()


if __name__ == "__main__":
    main()
