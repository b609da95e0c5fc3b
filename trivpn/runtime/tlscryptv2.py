"""``tls-crypt-v2-verify CMD``: the operator's command judges a client key's metadata.

As OpenVPN ``tls_crypt.c`` ``tls_crypt_v2_verify_metadata`` does: the metadata (without its
type byte) goes to a temporary file, and the command runs with exactly three environment
variables, ``script_type=tls-crypt-v2-verify``, ``metadata_type`` (0 user data, 1 timestamp)
and ``metadata_file``; exit status 0 accepts the client. Like every external command it needs
``script-security 2`` or higher (OpenVPN ``openvpn_execve_allowed``): below that no client is
accepted. The command runs in a task of its own, so other peers are not held up.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import structlog
import trio

SCRIPT_SECURITY_SCRIPTS = 2


async def verify_client_key(command: str, metadata: bytes, *, script_security: int,
                            log: structlog.stdlib.BoundLogger,
                            tmp_dir: Path | None = None) -> bool:
    """Run ``command`` for ``metadata`` (type byte first); True when it exits 0."""
    if script_security < SCRIPT_SECURITY_SCRIPTS:
        log.warning("tls_crypt_v2_verify_not_allowed", script_security=script_security,
                    needed=SCRIPT_SECURITY_SCRIPTS)
        return False
    if not metadata:
        log.warning("tls_crypt_v2_verify_refused", reason="no metadata type")
        return False
    fd, name = tempfile.mkstemp(prefix="tls_crypt_v2_metadata_", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(metadata[1:])
        env = {"script_type": "tls-crypt-v2-verify", "metadata_type": str(metadata[0]),
               "metadata_file": name}
        try:
            result = await trio.run_process(shlex.split(command), env=env, check=False,
                                            stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.warning("tls_crypt_v2_verify_failed", command=command, error=exc.strerror)
            return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    ok = result.returncode == 0
    log.info("tls_crypt_v2_verify", accepted=ok, metadata_type=metadata[0],
             status=result.returncode)
    return ok
