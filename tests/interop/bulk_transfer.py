"""A tiny TCP bulk transfer for tunnel tests: ``recv HOST PORT`` or ``send HOST PORT NBYTES``.

Both print the SHA-256 of the bytes they moved and the byte count as ``HEX COUNT``. The sender's
bytes are pseudo-random (a SHA-256 counter stream), so a corrupted or reordered byte changes
the receiver's hash. Bounded: the receiver gives up after 60 s, the sender after 60 s.
"""

from __future__ import annotations

import hashlib
import socket
import sys

CHUNK = 64 * 1024


def _stream(nbytes: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < nbytes:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:nbytes])


def receive(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1)
        listener.settimeout(60)
        print("listening", flush=True)
        conn, _ = listener.accept()
        conn.settimeout(60)
        digest = hashlib.sha256()
        count = 0
        with conn:
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    break
                digest.update(data)
                count += len(data)
    print(digest.hexdigest(), count, flush=True)


def send(host: str, port: int, nbytes: int) -> None:
    data = _stream(nbytes)
    with socket.create_connection((host, port), timeout=60) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    print(hashlib.sha256(data).hexdigest(), len(data), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        receive(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
