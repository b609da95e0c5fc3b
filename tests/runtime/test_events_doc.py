"""Every event name the runtime and the commands log is documented in docs/events.md."""

from __future__ import annotations

import re
from pathlib import Path

from trivpn.runtime import events as rt

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "trivpn" / "logging.py", *sorted((ROOT / "trivpn" / "runtime").rglob("*.py")),
           *sorted((ROOT / "trivpn" / "commands").rglob("*.py"))]
LOG_CALL = re.compile(r"\.(?:debug|info|warning|error|exception|critical)\(\s*\"([a-z0-9_]+)\"")
DOCUMENTED = re.compile(r"^\| `([a-z0-9_]+)` \|", re.M)


def logged_events() -> dict[str, str]:
    """Event name → first file logging it (a log call, or a typed runtime event, which the
    event bus logs under its name)."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for name in LOG_CALL.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    for kind in _subclasses(rt.RuntimeEvent):
        found.setdefault(kind.name, "trivpn/runtime/events.py")
    return found


def _subclasses(kind: type[rt.RuntimeEvent]) -> list[type[rt.RuntimeEvent]]:
    out = []
    for sub in kind.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def documented_events() -> set[str]:
    return set(DOCUMENTED.findall((ROOT / "docs" / "events.md").read_text()))


def test_every_logged_event_is_documented():
    documented = documented_events()
    missing = {name: where for name, where in logged_events().items()
               if name not in documented}
    assert not missing, f"add these events to docs/events.md: {missing}"


def test_the_scan_finds_the_runtime_events():
    events = logged_events()
    for name in ("peer_connected", "peer_disconnected", "packet_dropped", "link_open",
                 "trivpn_starting"):
        assert name in events
