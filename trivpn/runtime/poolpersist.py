"""``ifconfig-pool-persist FILE [SECONDS]``: the server's pool associations kept in a file.

Read once at start-up (associations given back to the same common names), written every
``SECONDS`` (600 by default) and at exit. With ``SECONDS`` 0 the file is read only and its
associations are fixed, as in OpenVPN 2.6 (``pool.c``). Before privileges are dropped the file
is opened to be rewritten in place later, as OpenVPN does, since an unprivileged process
usually cannot create the temporary file next to it; a symlink at the path is refused (see
:class:`~trivpn.runtime.status.StatusFile`). Failures are logged, never fatal.
"""

from __future__ import annotations

import math

import structlog

from trivpn.config.options import PeriodicFile
from trivpn.runtime.pool import (
    PoolAllocator,
    persist_lines,
    read_persist_file,
    write_persist_file,
)
from trivpn.runtime.status import StatusFile

Log = structlog.stdlib.BoundLogger


class PoolPersistence:
    """The persist file of one server's pool (``persist`` None: no file)."""

    __slots__ = ("_file", "allocator", "log", "next_write", "persist")

    def __init__(self, persist: PeriodicFile | None, allocator: PoolAllocator, log: Log) -> None:
        self.persist = persist
        self.allocator = allocator
        self.log = log
        self._file: StatusFile | None = None  # opened before a privilege drop
        self.next_write = math.inf

    @property
    def writes(self) -> bool:
        return self.persist is not None and self.persist.seconds > 0

    def load(self, now: float) -> None:
        """Give the file's associations to the allocator; the first write is due a period
        later."""
        persist = self.persist
        if persist is None:
            return
        if self.writes:
            self.next_write = now + persist.seconds
        try:
            associations = read_persist_file(persist.path)
        except OSError as exc:
            self.log.warning("pool_persist_unreadable", path=str(persist.path), error=str(exc))
            return
        applied = self.allocator.load(associations, now, fixed=persist.seconds == 0)
        self.log.info("pool_persist_loaded", path=str(persist.path), entries=applied)

    def open_for_drop(self) -> None:
        """Before privileges are dropped: open the file to rewrite it in place later."""
        if self.persist is None or not self.writes:
            return
        try:
            self._file = StatusFile(self.persist.path)
        except OSError as exc:
            self.log.warning("pool_persist_write_failed", path=str(self.persist.path),
                             error=str(exc))

    def write(self) -> None:
        if self.persist is None or not self.writes:
            return
        ipv6_of = self.allocator.ipv6_of if self.allocator.pool6 is not None else None
        try:
            if self._file is not None:
                self._file.write(persist_lines(self.allocator.associations(), ipv6_of))
                return
            write_persist_file(self.persist.path, self.allocator.associations(), ipv6_of)
        except OSError as exc:
            self.log.warning("pool_persist_write_failed", path=str(self.persist.path),
                             error=str(exc))

    def tick(self, now: float) -> None:
        """Housekeeping: write the file when its period has passed."""
        if self.persist is not None and now >= self.next_write:
            self.write()
            self.next_write = now + self.persist.seconds
