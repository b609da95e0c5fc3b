"""Files the runtime writes for operators (status, ``ifconfig-pool-persist``), never through a
symlink.

A status or persist file often lives in a directory other users can write (``/tmp``, a shared
state directory). Writing there by a predictable name would let anyone plant a symlink and make
the (root) process overwrite a file of their choice. So:

- :func:`write_atomically` writes a temporary file created with ``mkstemp`` in the same
  directory (``O_CREAT | O_EXCL``: it never opens an existing path, link or not), sets its mode
  on the descriptor, and renames it over the target (a symlink at the target is replaced, not
  followed);
- :func:`open_nofollow` opens a file to be rewritten in place with ``O_NOFOLLOW``: a symlink at
  the path is refused (ELOOP) instead of followed.

New files get mode 0600, as OpenVPN's ``status_open`` creates status and persist files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600


def write_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_nofollow(path: Path, mode: int = FILE_MODE) -> int:
    """A descriptor for writing ``path`` (created if missing); a symlink there is refused."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
