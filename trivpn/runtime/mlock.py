"""``mlock``: keep the whole process in RAM (no key material ever paged to swap), as OpenVPN
does at start (platform.c, platform_mlockall(), called by init.c, init_instance())."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from typing import Any

MCL_CURRENT = 1  # <sys/mman.h> on Linux
MCL_FUTURE = 2
MIN_LOCKED_BYTES = 100 * 1024 * 1024  # OpenVPN's MIN_LOCKED_MEM_MB


class MlockError(Exception):
    """The locked-memory limit could not be raised (OpenVPN: fatal, "setrlimit() failed")."""


def lock_memory(log: Any) -> bool:
    """Raise RLIMIT_MEMLOCK to at least 100 MB (a failure is fatal: :class:`MlockError`), then
    ``mlockall(MCL_CURRENT | MCL_FUTURE)``: a failure there only warns, as in OpenVPN.
    Whether the memory is locked."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    log.info("mlock_limit", soft_kb=_kb(soft), hard_kb=_kb(hard))
    if soft != resource.RLIM_INFINITY and soft < MIN_LOCKED_BYTES:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= MIN_LOCKED_BYTES \
            else MIN_LOCKED_BYTES
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (MIN_LOCKED_BYTES, new_hard))
        except (OSError, ValueError) as exc:
            raise MlockError(f"cannot raise the locked-memory limit (RLIMIT_MEMLOCK) to "
                             f"{MIN_LOCKED_BYTES // (1024 * 1024)} MB for 'mlock': {exc}; "
                             "run with CAP_SYS_RESOURCE or raise LimitMEMLOCK") from exc
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        log.warning("mlockall_failed", error=os.strerror(err))
        return False
    log.info("mlockall_succeeded")
    return True


def _kb(limit: int) -> int:
    return -1 if limit == resource.RLIM_INFINITY else limit // 1024
