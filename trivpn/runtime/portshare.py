"""``port-share HOST PORT [DIR]``: relay a foreign TCP connection to HOST:PORT.

The TCP server decides with :func:`trivpn.protocol.portshare.classify` on a connection's first
bytes; a foreign one is handed here. As OpenVPN's proxy does (src/openvpn/ps.c): connect to
HOST:PORT, send the bytes already read, then copy both ways until either side closes or fails,
then close both. With DIR, a journal file named after the relay connection's local
``ip:port`` holds the real client's ``ip:port`` while the connection lasts (ps.c, journal_add()),
so the server behind can tell where its client really came from.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import trio

from trivpn.config.options import PortShare
from trivpn.runtime.link import TCP_READ_SIZE, Address


def sockaddr_text(address: Address) -> str:
    """``ip:port`` as OpenVPN prints a socket address (socket.c, print_sockaddr_ex())."""
    return f"{address[0]}:{address[1]}"


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope,
                counted: list[int], index: int) -> None:
    try:
        while data := await source.receive_some(TCP_READ_SIZE):
            await sink.send_all(data)
            counted[index] += len(data)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()  # one side is gone: close both, as ps.c does


def _write_journal(directory: Path, relay_local: Address, origin: Address) -> Path:
    path = directory / sockaddr_text(relay_local)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o640)
    try:
        os.write(fd, sockaddr_text(origin).encode())
    finally:
        os.close(fd)
    return path


async def relay(client: trio.abc.Stream, head: bytes, share: PortShare, origin: Address,
                log: Any) -> tuple[int, int]:
    """Relay ``client`` (which sent ``head`` so far) to the port-share target until either
    side closes; returns the bytes copied (client → target, target → client). A target that
    cannot be reached closes the client (logged)."""
    try:
        backend = await trio.open_tcp_stream(share.host, share.port)
    except OSError as exc:
        log.warning("port_share_connect_failed", client=sockaddr_text(origin),
                    target=f"{share.host}:{share.port}", error=str(exc))
        return 0, 0
    journal: Path | None = None
    counted = [len(head), 0]
    try:
        if share.journal is not None:
            try:
                journal = _write_journal(share.journal, backend.socket.getsockname(), origin)
            except OSError as exc:
                log.warning("port_share_journal_failed", directory=str(share.journal),
                            error=str(exc))
        log.info("port_share_proxied", client=sockaddr_text(origin),
                 target=f"{share.host}:{share.port}")
        try:
            await backend.send_all(head)
        except (OSError, trio.BrokenResourceError):
            return counted[0], counted[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, backend, nursery.cancel_scope, counted, 0)
            nursery.start_soon(_pump, backend, client, nursery.cancel_scope, counted, 1)
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()
        if journal is not None:
            with contextlib.suppress(OSError):
                journal.unlink()
    return counted[0], counted[1]



