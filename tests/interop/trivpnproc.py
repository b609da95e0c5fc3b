"""Start ``trivpn run`` inside a test namespace and watch its JSON log."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.netns import Netns


@dataclass
class TrivpnProcess:
    log: Path
    pid: int

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.log.exists():
            return out
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_event(self, name: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == name and all(event.get(k) == v
                                                        for k, v in fields.items()):
                    return event
            time.sleep(0.05)
        return None

    def count(self, name: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == name)


def start_trivpn(ns: Netns, workdir: Path, name: str, lines: list[str]) -> TrivpnProcess:
    """Write ``name``.conf and run ``trivpn run`` on it in ``ns``; logs go to ``name``.log."""
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / f"{name}.log"
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     "--log-file", str(log)])
    return TrivpnProcess(log, proc.pid)
