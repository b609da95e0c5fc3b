"""Doctor output: human lines in the style of ``flutter doctor``, or one JSON object.

Human form: one ``[✓] id: summary`` line per check (``[!]`` warn, ``[✗]`` fail, ``[-]`` skip,
``[?]`` error); under each warning, failure or error its evidence (compact ``key: value``
lines), the explanation and the fix; a verdict line at the end. Colour only when asked for
(:func:`use_color`: a terminal and no ``NO_COLOR``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

from trivpn.diagnostics.model import CheckResult, Status
from trivpn.diagnostics.runner import DoctorReport

MARKS: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-", "error": "?"}
_COLORS: dict[str, str] = {"ok": "32", "warn": "33", "fail": "31", "skip": "90", "error": "35"}
_DETAILED: frozenset[str] = frozenset({"warn", "fail", "error"})
INDENT = "    "
MAX_VALUE_CHARS = 400


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour when ``stream`` is a terminal, unless ``NO_COLOR`` is set (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _compact(value: Any) -> str:
    """One line for a dict (``k=v, k=v``) or a list of scalars (``a, b``)."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return _scalar(value)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "…"


def evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    """``key: value`` lines; a list of dicts/lists gets one indented line per item."""
    lines: list[str] = []
    for key, value in evidence.items():
        if isinstance(value, list | tuple) and any(isinstance(v, Mapping | list | tuple)
                                                  for v in value):
            lines.append(f"{key}:")
            lines.extend(f"  - {_clip(_compact(v))}" for v in value)
        elif isinstance(value, list | tuple) and len(", ".join(map(_scalar, value))) > 80:
            lines.append(f"{key}:")
            lines.extend(f"  - {_clip(_scalar(v))}" for v in value)
        elif isinstance(value, list | tuple):
            lines.append(f"{key}: {', '.join(map(_scalar, value)) or '(none)'}")
        else:
            lines.append(f"{key}: {_clip(_compact(value))}")
    return lines


def render_result(result: CheckResult, *, color: bool = False) -> list[str]:
    mark = _paint(f"[{MARKS[result.status]}]", _COLORS[result.status], color)
    out = [f"{mark} {result.id}: {result.summary}"]
    if result.status not in _DETAILED:
        return out
    for line in evidence_lines(result.evidence):
        out.append(INDENT + _paint(line, "2", color))
    if result.explanation:
        out.append(INDENT + _paint("Why: ", "1", color) + result.explanation)
    if result.fix:
        out.append(INDENT + _paint("Fix: ", "1", color) + result.fix)
    return out


def render_human(report: DoctorReport, *, color: bool = False) -> str:
    header = f"trivpn doctor {report.version}"
    if report.config is not None:
        header += f" — {report.config}"
    if report.role is not None:
        header += f" ({report.role})"
    lines = [header, ""]
    for result in report.checks:
        lines.extend(render_result(result, color=color))
    counts = {s: sum(1 for r in report.checks if r.status == s) for s in MARKS}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = _paint(report.verdict, _COLORS[report.verdict], color)
    lines += ["", f"Verdict: {verdict} ({tally or 'no checks'}) in {report.duration_s:.1f} s"]
    return "\n".join(lines) + "\n"


def render_json(report: DoctorReport) -> str:
    """The ``--json`` object on one line (evidence values that are not JSON become strings)."""
    return json.dumps(report.as_json(), ensure_ascii=False, default=str) + "\n"
