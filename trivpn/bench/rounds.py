"""Interleaved rounds: every round runs every contender once, alternating the order, so that
drift of the machine hits all contenders alike."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from trivpn.bench.contenders import CLIENT_LINK_IP, SERVER_LINK_IP, write_pki
from trivpn.bench.lab import Lab, LabError
from trivpn.bench.measure import MeasureError

Progress = Callable[[str], None]
Values = dict[str, float]


class Measure(Protocol):
    """One contender's measurement in one round: its metric values (e.g. a benchmark's
    ``measure_contender`` with its options bound by :func:`functools.partial`)."""

    def __call__(self, lab: Lab, server_ns: str, client_ns: str, contender: str, *,
                 workdir: Path) -> Values: ...


def run_rounds(contenders: Sequence[str], rounds: int, measure: Measure,
               summary: Callable[[Values], str],
               progress: Progress) -> tuple[list[dict[str, Values]], list[str]]:
    """Two namespaces joined by a veth and a throwaway PKI, then ``rounds`` rounds of
    ``measure`` per contender. A contender that fails in a round is recorded in the errors and
    left out of that round; the others still run."""
    results: list[dict[str, Values]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trivpn-bench-") as tmp, Lab() as lab:
        workdir = Path(tmp)
        write_pki(workdir)
        server_ns, client_ns = lab.add("srv"), lab.add("cli")
        lab.veth(server_ns, client_ns, f"{SERVER_LINK_IP}/24", f"{CLIENT_LINK_IP}/24")
        for n in range(rounds):
            order = tuple(contenders) if n % 2 == 0 else tuple(reversed(contenders))
            rnd: dict[str, Values] = {}
            for contender in order:
                progress(f"round {n + 1}/{rounds}: {contender}")
                try:
                    rnd[contender] = measure(lab, server_ns, client_ns, contender, workdir=workdir)
                except (LabError, MeasureError, subprocess.TimeoutExpired, OSError) as exc:
                    errors.append(f"round {n + 1} {contender}: {exc}")
                    progress(f"  failed: {exc}")
                    continue
                progress(f"  {summary(rnd[contender])}")
            results.append(rnd)
    return results, errors
