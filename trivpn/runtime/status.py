"""OpenVPN-compatible status output (``status FILE [SECONDS]``, management ``status [n]``).

Formats, as OpenVPN 2.6 prints them (``multi_print_status`` for a server, ``print_status`` for
a client), so tooling written for OpenVPN's status file keeps working:

- server, version 1: ``OpenVPN CLIENT LIST`` / ``Updated,…`` / a client table, ``ROUTING TABLE``
  with its table, ``GLOBAL STATS``, ``END``;
- server, versions 2 and 3: ``TITLE``, ``TIME``, ``HEADER,CLIENT_LIST,…`` and ``CLIENT_LIST``
  rows, ``HEADER,ROUTING_TABLE,…`` and ``ROUTING_TABLE`` rows, ``GLOBAL_STATS`` and ``END`` —
  comma-separated for 2, tab-separated for 3;
- client (any version): the ``OpenVPN STATISTICS`` block.

Times are local time as ``YYYY-MM-DD HH:MM:SS`` (OpenVPN's ``time_string``) plus ``time_t``
columns. The file is written atomically: a temporary file in the same directory, then rename.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trivpn import __version__ as _version
from trivpn.runtime import files

TITLE = f"trivpn {_version} (OpenVPN 2.6 compatible) [status]"
UNDEF = "UNDEF"

CLIENT_LIST_HEADER = ("Common Name", "Real Address", "Virtual Address", "Virtual IPv6 Address",
                      "Bytes Received", "Bytes Sent", "Connected Since",
                      "Connected Since (time_t)", "Username", "Client ID", "Peer ID",
                      "Data Channel Cipher")
ROUTING_TABLE_HEADER = ("Virtual Address", "Common Name", "Real Address", "Last Ref",
                        "Last Ref (time_t)")


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One client instance of a server."""

    common_name: str | None
    real_address: str
    virtual_address: str | None
    bytes_received: int
    bytes_sent: int
    connected_since: int  # unix time
    client_id: int
    peer_id: int
    cipher: str | None
    last_ref: int  # unix time of the last packet from the client
    username: str | None = None
    virtual_ipv6: str | None = None  # with server-ipv6


@dataclass(frozen=True, slots=True)
class ServerStatus:
    clients: tuple[ClientRow, ...]
    routes: tuple[tuple[str, ClientRow], ...]  # (virtual address or MAC, owner)
    max_bcast_queue: int = 0


@dataclass(frozen=True, slots=True)
class ClientStatus:
    tun_read_bytes: int
    tun_write_bytes: int
    link_read_bytes: int
    link_write_bytes: int
    auth_read_bytes: int


def time_string(unix_time: float) -> str:
    """OpenVPN's ``time_string``: local time, ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_time))


def _v1(status: ServerStatus, now: float) -> list[str]:
    lines = ["OpenVPN CLIENT LIST", f"Updated,{time_string(now)}",
             "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since"]
    for c in status.clients:
        lines.append(f"{c.common_name or UNDEF},{c.real_address},{c.bytes_received},"
                     f"{c.bytes_sent},{time_string(c.connected_since)}")
    lines += ["ROUTING TABLE", "Virtual Address,Common Name,Real Address,Last Ref"]
    for address, c in status.routes:
        lines.append(f"{address},{c.common_name or UNDEF},{c.real_address},"
                     f"{time_string(c.last_ref)}")
    lines += ["GLOBAL STATS", f"Max bcast/mcast queue length,{status.max_bcast_queue}", "END"]
    return lines


def _v23(status: ServerStatus, now: float, sep: str) -> list[str]:
    def row(*fields: object) -> str:
        return sep.join(str(f) for f in fields)

    lines = [row("TITLE", TITLE), row("TIME", time_string(now), int(now)),
             row("HEADER", "CLIENT_LIST", *CLIENT_LIST_HEADER)]
    for c in status.clients:
        lines.append(row("CLIENT_LIST", c.common_name or UNDEF, c.real_address,
                         c.virtual_address or "", c.virtual_ipv6 or "", c.bytes_received,
                         c.bytes_sent,
                         time_string(c.connected_since), c.connected_since,
                         c.username or UNDEF, c.client_id, c.peer_id, c.cipher or "none"))
    lines.append(row("HEADER", "ROUTING_TABLE", *ROUTING_TABLE_HEADER))
    for address, c in status.routes:
        lines.append(row("ROUTING_TABLE", address, c.common_name or UNDEF, c.real_address,
                         time_string(c.last_ref), c.last_ref))
    lines += [row("GLOBAL_STATS", "Max bcast/mcast queue length", status.max_bcast_queue),
              row("GLOBAL_STATS", "dco_enabled", 0), "END"]
    return lines


def server_status_lines(status: ServerStatus, version: int, now: float) -> list[str]:
    """A server's status in format ``version`` (1, 2 or 3), one string per line."""
    if version == 1:
        return _v1(status, now)
    if version in (2, 3):
        return _v23(status, now, "\t" if version == 3 else ",")
    return ["ERROR: bad status format version number"]


def client_status_lines(status: ClientStatus, now: float) -> list[str]:
    """A client's ``OpenVPN STATISTICS`` block (the same for every status version)."""
    return ["OpenVPN STATISTICS", f"Updated,{time_string(now)}",
            f"TUN/TAP read bytes,{status.tun_read_bytes}",
            f"TUN/TAP write bytes,{status.tun_write_bytes}",
            f"TCP/UDP read bytes,{status.link_read_bytes}",
            f"TCP/UDP write bytes,{status.link_write_bytes}",
            f"Auth read bytes,{status.auth_read_bytes}", "END"]


def write_atomically(path: Path, lines: Sequence[str]) -> None:
    """Replace ``path`` with ``lines`` (``\\n``-terminated) so readers never see half a file;
    never through a symlink (:func:`trivpn.runtime.files.write_atomically`)."""
    files.write_atomically(path, "".join(line + "\n" for line in lines).encode())


class StatusFile:
    """A status file opened once, before privileges are dropped, and rewritten in place.

    OpenVPN does the same: after ``user nobody`` the process can no longer create files in the
    config's directory, so a temp-file-and-rename writer would stop working. Readers may
    briefly see a partly written file, exactly as with OpenVPN. A symlink at the path is
    refused (not followed); a new file gets OpenVPN's mode 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = files.open_nofollow(path)

    def write(self, lines: Sequence[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
