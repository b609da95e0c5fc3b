"""The benchmark's result document (also written by ``--json``) and its text table.

A report is plain JSON data::

    {"benchmark": ..., "config": {...}, "contenders": ["trivpn", "openvpn"],
     "metrics": {key: {"label": ..., "unit": ...}}, "rounds": [{contender: {metric: value}}],
     "summary": {metric: {contender: {"median", "min", "max", "n"} | null}},
     "ratios": {metric: trivpn/openvpn median ratio | null}, "errors": [...]}

``ratios`` divide the first contender by the second (absent with one contender). With more
than two contenders (``trivpn@DIR``: another checkout), ``ratios_to_second`` holds every other
contender's ratio to the second one as well, e.g. before and after a change, both against
OpenVPN from the same interleaved rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trivpn.bench.stats import collect, ratio, summarize

Rounds = Sequence[Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    digits: int = 0


def build_report(benchmark: str, config: Mapping[str, Any], contenders: Sequence[str],
                 metrics: Sequence[Metric], rounds: Rounds, *,
                 errors: Sequence[str] = ()) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    ratios: dict[str, float | None] = {}
    others = _others(contenders)
    to_second: dict[str, dict[str, float | None]] = {c: {} for c in others}
    for m in metrics:
        per = {c: summarize(collect(rounds, c, m.key)) for c in contenders}
        summary[m.key] = {c: (s.as_dict() if s is not None else None) for c, s in per.items()}
        if len(contenders) >= 2:
            ratios[m.key] = ratio(per[contenders[0]], per[contenders[1]])
        for c in others:
            to_second[c][m.key] = ratio(per[c], per[contenders[1]])
    extra = {"ratios_to_second": to_second} if len(contenders) > 2 else {}
    return {
        "benchmark": benchmark,
        "config": dict(config),
        "contenders": list(contenders),
        "metrics": {m.key: {"label": m.label, "unit": m.unit} for m in metrics},
        "rounds": [{c: dict(v) for c, v in rnd.items()} for rnd in rounds],
        "summary": summary,
        "ratios": ratios,
        **extra,
        "errors": list(errors),
    }


def _others(contenders: Sequence[str]) -> list[str]:
    """Contenders compared with the second one: all but the second."""
    return [c for i, c in enumerate(contenders) if i != 1] if len(contenders) >= 2 else []


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _cell(entry: Mapping[str, Any] | None, digits: int) -> str:
    if entry is None:
        return "—"
    med = _number(entry["median"], digits)
    if entry["n"] <= 1:
        return med
    return f"{med} ({_number(entry['min'], digits)}-{_number(entry['max'], digits)})"


def format_table(report: Mapping[str, Any], metrics: Sequence[Metric]) -> str:
    """A Markdown table: one row per metric, median (min-max) per contender, then the ratio."""
    contenders: list[str] = report["contenders"]
    with_ratio = len(contenders) >= 2
    compared = _others(contenders) if len(contenders) > 2 else contenders[:1]
    header = ["metric", *contenders]
    if with_ratio:
        header += [f"{c}/{contenders[1]}" for c in compared]
    rows = [header]
    for m in metrics:
        label = f"{m.label} ({m.unit})" if m.unit else m.label
        row = [label]
        for c in contenders:
            row.append(_cell(report["summary"][m.key][c], m.digits))
        if with_ratio:
            for c in compared:
                r = (report["ratios_to_second"][c] if len(contenders) > 2
                     else report["ratios"]).get(m.key)
                row.append("—" if r is None else f"{r:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
