"""Summaries over rounds: median and min-max per contender, ratios of medians."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    median: float
    low: float
    high: float
    count: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.count}


def summarize(values: Iterable[float]) -> Summary | None:
    """None when there are no values (a contender that failed every round)."""
    data = sorted(values)
    if not data:
        return None
    return Summary(statistics.median(data), data[0], data[-1], len(data))


def ratio(numerator: Summary | None, denominator: Summary | None) -> float | None:
    """Ratio of medians; None when either side is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator.median == 0:
        return None
    return numerator.median / denominator.median


def collect(rounds: Sequence[Mapping[str, Mapping[str, float]]], contender: str,
            metric: str) -> list[float]:
    """Values of ``metric`` for ``contender`` across rounds (rounds where it is absent skip)."""
    out: list[float] = []
    for rnd in rounds:
        value = rnd.get(contender, {}).get(metric)
        if value is not None:
            out.append(value)
    return out
