"""Debian's openresolv, relocated into a test directory: its ``resolvconf`` and its ``libc``
subscriber with every system path (/etc, /lib/resolvconf, /run/resolvconf) rewritten to the
test's own, so the resolv.conf it writes is a file of the test's. scripts/test unpacks the
package into ``.cache/openresolv`` (never installs it). Running as root, the program also runs
in a private mount namespace with a scratch file bound over /etc/resolv.conf, so a path the
rewrite missed could still not reach the machine's resolver."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import _unavailable

ROOT = Path(__file__).resolve().parents[2]
OPENRESOLV = Path(os.environ.get("TRIVPN_TEST_OPENRESOLV", ROOT / ".cache" / "openresolv"))


@dataclass(frozen=True)
class Openresolv:
    program: Path
    """What to run as ``resolvconf``."""
    resolv_conf: Path
    """The resolv.conf it maintains."""
    state: Path
    """Its state directory (one file per interface record under ``interfaces/``)."""


def _relocate(text: str, etc: Path, lib: Path, run: Path) -> str:
    return (text.replace("SYSCONFDIR=/etc", f"SYSCONFDIR={etc}")
            .replace('"/etc"/resolvconf.conf', f'"{etc}"/resolvconf.conf')
            .replace("LIBEXECDIR=/lib/resolvconf", f"LIBEXECDIR={lib}")
            .replace("VARDIR=/run/resolvconf", f"VARDIR={run}"))


def openresolv(directory: Path) -> Openresolv:
    source = OPENRESOLV / "sbin" / "resolvconf"
    if not source.is_file():
        _unavailable(f"needs Debian's openresolv unpacked in {OPENRESOLV} (scripts/test)")
    etc, lib, run = directory / "etc", directory / "lib", directory / "run"
    for d in (etc, lib, run):
        d.mkdir(parents=True, exist_ok=True)
    resolv_conf = directory / "resolv.conf"
    resolv_conf.write_text("nameserver 198.18.255.1\n")  # the "upstream" before the tunnel
    (etc / "resolvconf.conf").write_text(f"resolv_conf={resolv_conf}\n")
    program = directory / "resolvconf.real"
    program.write_text(_relocate(source.read_text(), etc, lib, run))
    subscriber = lib / "libc"
    subscriber.write_text(_relocate((OPENRESOLV / "lib" / "resolvconf" / "libc").read_text(),
                                    etc, lib, run))
    for path in (program, subscriber):
        path.chmod(0o755)
    assert "/etc/resolv.conf" not in (etc / "resolvconf.conf").read_text()
    wrapper = directory / "resolvconf"
    if os.geteuid() == 0 and shutil.which("unshare"):
        guard = directory / "guard-resolv.conf"
        guard.write_text("")
        wrapper.write_text(
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c "
            f"'mount --bind {guard} /etc/resolv.conf && exec {program} \"$@\"' "
            "resolvconf \"$@\"\n")
    else:
        wrapper.write_text(f"#!/bin/sh\nexec {program} \"$@\"\n")
    wrapper.chmod(0o755)
    return Openresolv(wrapper, resolv_conf, run)
