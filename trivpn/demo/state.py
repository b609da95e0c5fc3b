"""What a ``trivpn demo --keep`` left running, so that ``trivpn demo --stop`` can remove it.

One JSON file per kept demo in ``/run/trivpn-demo/``: its namespaces, the PIDs of its
``trivpn run`` processes and its directory. Stopping checks that each PID still runs trivpn
before signalling it (a PID may have been reused since), deletes the namespaces and the
directory. Namespaces named ``tvpn-demo-<pid>-*`` whose demo process is gone and that no state
file claims (a demo killed with SIGKILL) are removed too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trivpn.demo.lab import (
    PREFIX,
    LabError,
    delete_namespace,
    demo_namespaces,
    namespace_pids,
    stop_pids,
)
from trivpn.netlab import pid_alive

STATE_DIR = Path("/run/trivpn-demo")
_OWNER = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


@dataclass(frozen=True, slots=True)
class KeptDemo:
    tag: str
    namespaces: tuple[str, ...]
    pids: tuple[int, ...]
    workdir: Path

    def to_json(self) -> str:
        return json.dumps({"tag": self.tag, "namespaces": list(self.namespaces),
                           "pids": list(self.pids), "workdir": str(self.workdir)})

    @staticmethod
    def from_json(text: str) -> KeptDemo:
        data = json.loads(text)
        return KeptDemo(str(data["tag"]), tuple(str(n) for n in data["namespaces"]),
                        tuple(int(p) for p in data["pids"]), Path(data["workdir"]))


def state_path(tag: str, state_dir: Path = STATE_DIR) -> Path:
    return state_dir / f"{tag}.json"


def save(demo: KeptDemo, state_dir: Path = STATE_DIR) -> Path:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_path(demo.tag, state_dir)
    path.write_text(demo.to_json() + "\n", encoding="utf-8")
    return path


def load_all(state_dir: Path = STATE_DIR) -> list[tuple[Path, KeptDemo]]:
    found: list[tuple[Path, KeptDemo]] = []
    try:
        paths = sorted(state_dir.glob(f"{PREFIX}*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            found.append((path, KeptDemo.from_json(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def runs_trivpn(pid: int) -> bool:
    """Whether PID ``pid`` is (still) a trivpn process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"trivpn" in cmdline


def _owner_alive(namespace: str) -> bool:
    match = _OWNER.match(namespace)
    if match is None:
        return True  # not a name we made: never touch it
    return pid_alive(int(match.group(1)))


def stop_kept(demo: KeptDemo, say: Callable[[str], None]) -> list[str]:
    """Stop one kept demo; returns the errors."""
    errors: list[str] = []
    pids = [pid for pid in demo.pids if runs_trivpn(pid)]
    if pids:
        say(f"==> stopping trivpn processes {', '.join(map(str, pids))}")
        stop_pids(pids)
    errors += _remove_namespaces(demo.namespaces, say)
    if demo.workdir.name.startswith(PREFIX) and demo.workdir.is_dir():
        say(f"==> removing {demo.workdir}")
        shutil.rmtree(demo.workdir, ignore_errors=True)
    return errors


def stop_all(say: Callable[[str], None], state_dir: Path = STATE_DIR) -> tuple[int, list[str]]:
    """Stop every kept demo and remove orphaned demo namespaces; returns (how many demos or
    orphaned namespaces were removed, errors)."""
    errors: list[str] = []
    count = 0
    claimed: set[str] = set()
    for path, demo in load_all(state_dir):
        errors += stop_kept(demo, say)
        claimed.update(demo.namespaces)
        path.unlink(missing_ok=True)
        count += 1
    orphans = [n for n in demo_namespaces() if n not in claimed and not _owner_alive(n)]
    if orphans:
        errors += _remove_namespaces(orphans, say)
        count += len(orphans)
    return count, errors


def _remove_namespaces(names: tuple[str, ...] | list[str], say: Callable[[str], None]
                       ) -> list[str]:
    errors: list[str] = []
    for name in names:
        try:
            inside = namespace_pids(name)
            if inside:
                stop_pids(inside)
            say(f"==> deleting namespace {name}")
            delete_namespace(name)
        except LabError as exc:
            errors.append(str(exc))
    return errors
