"""Writing and reading PKI files with the right permissions.

Private material is created with mode 0600 from the first byte (never written world-readable
and chmod-ed afterwards); overwriting replaces the file atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from trivpn.pki.errors import AlreadyExistsError, PkiError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
PUBLIC_DIR_MODE = 0o755


def ensure_dir(path: Path, mode: int) -> None:
    """Create ``path`` (and parents) if needed and set its mode to exactly ``mode``."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        os.chmod(path, mode)
    except OSError as exc:
        raise PkiError(f"cannot create directory: {exc.strerror}", str(path)) from None


def write_file(path: Path, data: bytes, *, mode: int, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with permission bits ``mode``.

    Without ``overwrite`` an existing file is an error and is left untouched.
    """
    if not overwrite:
        _create_exclusive(path, data, mode)
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PkiError(f"cannot write: {exc.strerror}", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PkiError(f"cannot write: {exc.strerror}", str(path)) from None


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise AlreadyExistsError("already exists; refusing to overwrite", str(path)) from None
    except OSError as exc:
        raise PkiError(f"cannot create: {exc.strerror}", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have cleared bits of ``mode``
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise PkiError(f"cannot write: {exc.strerror}", str(path)) from None


def read_text(path: Path, what: str) -> str:
    """The file's text; a missing or unreadable file is a :class:`PkiError` naming ``what``."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise PkiError(f"{what} not found", str(path)) from None
    except OSError as exc:
        raise PkiError(f"cannot read {what}: {exc.strerror}", str(path)) from None
