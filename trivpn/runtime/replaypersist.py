"""``replay-persist FILE``: the control-channel replay state kept across restarts.

OpenVPN (packet_id.c, packet_id_persist_load()/packet_id_persist_save(); init.c) keeps the
highest ``(time, id)`` of the peer's tls-auth/tls-crypt packets in FILE, opened (created
0600) and locked once at start, and starts every new session's receive window from it, so a
control packet recorded in an earlier session is refused as a replay. The file holds
OpenVPN's ``struct packet_id_persist_file_image``: a native ``time_t`` and a 32-bit id, padded
to 16 bytes on 64-bit Linux. It is written when the state changed, every 60 s and when a
connection ends.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from trivpn.runtime.errors import RuntimeSetupError

_IMAGE = struct.Struct("=qI4x")  # time_t time; packet_id_type id; (padding)
SAVE_INTERVAL = 60.0  # OpenVPN forward.c: the packet_id_persist_interval timer


class ReplayPersist:
    """The open, locked file and the last state read or written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise RuntimeSetupError(f"Cannot open --replay-persist file {path} for "
                                    f"read/write: {exc.strerror}", "replay-persist") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise RuntimeSetupError(f"Cannot obtain exclusive lock on --replay-persist file "
                                    f"{path}", "replay-persist") from None
        data = os.pread(self._fd, _IMAGE.size, 0)
        self.state: tuple[int, int] | None = None
        if len(data) == _IMAGE.size:
            timestamp, packet_id = _IMAGE.unpack(data)
            self.state = (timestamp, packet_id)
        self._written = self.state

    def save(self, state: tuple[int, int]) -> bool:
        """Keep ``state`` ((time, id); time 0 = nothing received) and write it if it changed.
        True if written."""
        if not state[0]:
            return False
        self.state = state
        if state == self._written:
            return False
        os.pwrite(self._fd, _IMAGE.pack(*state), 0)
        self._written = state
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
