"""A client of the management interface (OpenVPN's management-notes.txt; trivpn's own in
trivpn/runtime/management.py speaks the same protocol).

:func:`connect_management` opens a TCP address or a unix socket, answers the
``ENTER PASSWORD:`` prompt (a prompt without a line end) and returns a
:class:`ManagementConnection` that sends commands and yields the lines the other side writes:
answers (``SUCCESS:`` / ``ERROR:`` / multi-line blocks ending ``END``) and real-time
notifications (lines starting with ``>``), in the order they arrive. Used by
``trivpn doctor --watch`` (trivpn/diagnostics/watch.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import trio

MAX_LINE = 64 * 1024
"""Longest line accepted from the other side (a longer one ends the connection)."""
PASSWORD_PROMPT = b"ENTER PASSWORD:"


class ManagementClientError(Exception):
    """The management interface cannot be reached, refused the password or sent garbage."""


@dataclass(frozen=True, slots=True)
class ManagementAddress:
    """Where a management interface listens: ``host``/``port``, or a unix socket path in
    ``host`` with ``port`` None; ``password_file`` holds the password on its first line."""

    host: str
    port: int | None
    password_file: Path | None = None

    @property
    def unix(self) -> bool:
        return self.port is None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_address(text: str, password_file: Path | None = None) -> ManagementAddress:
    """``HOST:PORT`` (``[V6]:PORT`` too) or a unix socket path (anything with a ``/``, or
    without a port). Raises ValueError for a port that is not a number from 1 to 65535."""
    if "/" in text or ":" not in text:
        return ManagementAddress(text, None, password_file)
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port number: {port!r}")
    return ManagementAddress(host or "127.0.0.1", int(port), password_file)


def read_password_file(path: Path) -> str:
    """The first line of a management password file (OSError propagates)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


class ManagementConnection:
    """One open management connection: :meth:`send` a command, iterate :meth:`lines`."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes = b"") -> None:
        self.stream = stream
        self._buffer = buffered
        self.closed = False

    async def send(self, command: str) -> None:
        if "\n" in command or "\r" in command:
            raise ValueError("a management command is one line")
        try:
            await self.stream.send_all(command.encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.closed = True
            raise ManagementClientError(f"management connection lost: {exc}") from exc

    async def _fill(self) -> bool:
        """Read more into the buffer; False once the other side closed."""
        try:
            chunk = await self.stream.receive_some(4096)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        if len(self._buffer) > MAX_LINE and b"\n" not in self._buffer:
            raise ManagementClientError("management interface sent an over-long line")
        return True

    async def read_line(self) -> str | None:
        """The next line without its CRLF; None once the connection closed."""
        while b"\n" not in self._buffer:
            if self._buffer.startswith(PASSWORD_PROMPT):
                self._buffer = self._buffer[len(PASSWORD_PROMPT):]
                return PASSWORD_PROMPT.decode()
            if not await self._fill():
                return None
        raw, self._buffer = self._buffer.split(b"\n", 1)
        return raw.decode("utf-8", "replace").rstrip("\r")

    async def aclose(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            await self.stream.aclose()


async def connect_management(address: ManagementAddress, *, timeout: float = 5.0
                             ) -> ManagementConnection:
    """Connect and give the password if one is asked for. Raises
    :class:`ManagementClientError` (cannot connect, no password file for a prompt, password
    refused, nothing answered within ``timeout``)."""
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream
            if address.unix:
                stream = await trio.open_unix_socket(address.host)
            else:
                assert address.port is not None
                stream = await trio.open_tcp_stream(address.host, address.port)
    except (OSError, trio.TooSlowError) as exc:
        raise ManagementClientError(f"cannot connect to the management interface at "
                                    f"{address}: {getattr(exc, 'strerror', None) or exc}"
                                    ) from exc
    conn = ManagementConnection(stream)
    try:
        with trio.fail_after(timeout):
            await _login(conn, address)
    except trio.TooSlowError as exc:
        await conn.aclose()
        raise ManagementClientError(f"the management interface at {address} did not greet "
                                    f"within {timeout:g} s") from exc
    except ManagementClientError:
        await conn.aclose()
        raise
    return conn


async def _login(conn: ManagementConnection, address: ManagementAddress) -> None:
    """Wait for the greeting (``>INFO:``), answering a password prompt on the way."""
    while True:
        line = await conn.read_line()
        if line is None:
            raise ManagementClientError(f"the management interface at {address} closed the "
                                        "connection (another client may be attached: OpenVPN "
                                        "serves one at a time)")
        if line == PASSWORD_PROMPT.decode():
            if address.password_file is None:
                raise ManagementClientError(f"the management interface at {address} asks for "
                                            "a password: give its password file")
            try:
                password = read_password_file(address.password_file)
            except OSError as exc:
                raise ManagementClientError(f"cannot read the management password file "
                                            f"{address.password_file}: {exc.strerror}") from exc
            await conn.send(password)
        elif line.startswith("ERROR: bad password"):
            raise ManagementClientError(f"the management interface at {address} refused the "
                                        f"password from {address.password_file}")
        elif line.startswith(">INFO:"):
            return


__all__ = ["ManagementAddress", "ManagementClientError", "ManagementConnection",
           "connect_management", "parse_address", "read_password_file"]
