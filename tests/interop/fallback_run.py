"""``trivpn run`` with the readiness fallback forced: ``python fallback_run.py CONFIG LOG``.

The same client or server runtime as ``trivpn run CONFIG --log-format json --log-file LOG``,
constructed with ``direct_wait=False`` so its UDP data path always waits through trio's
scheduler (``trivpn/runtime/readiness.py``), the path a trio upgrade would fall back to.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import trio

from trivpn.commands.run import configure_for, open_log_file
from trivpn.config import load_config
from trivpn.logging import get_logger
from trivpn.runtime.client import run_client
from trivpn.runtime.server import run_server


def main(config: Path, log_path: Path) -> int:
    options = load_config(config)
    with open_log_file(log_path, append=True) as stream:
        configure_for(options, stream=stream, fmt="json")
        log = get_logger()
        run = run_server if options.role == "server" else run_client
        code: int = trio.run(functools.partial(run, options, log, None, direct_wait=False))
        return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
