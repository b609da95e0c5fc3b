"""Run doctor checks: concurrently under one nursery, each under its own timeout, in
dependency order, never letting one check crash the doctor.

A check starts once every dependency has finished; it is skipped (with the dependency's status
and ``state`` evidence as the reason) unless each dependency ended ``ok`` or ``warn``. A check
also waits for the checks in its ``after`` (when they run) and sees their results, but is not
skipped because of them. A check
that raises becomes an ``error`` result carrying the exception text; one that overruns its
timeout becomes an ``error`` result with the timeout as evidence. Results come back in the
order the checks were given (the registry order), whatever order they finished in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import trio

from trivpn import __version__
from trivpn.diagnostics.checks_static import is_static, mode_skip
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, Role

Verdict = Literal["ok", "warn", "fail"]
PASSING = frozenset({"ok", "warn"})
_STATUS_WORDS = {"fail": "failed", "error": "ended in an error", "skip": "was skipped"}


class UnknownCheckError(ValueError):
    """``--check`` named ids that no registered check has."""

    def __init__(self, unknown: Sequence[str], known: Iterable[str]) -> None:
        self.unknown = tuple(unknown)
        super().__init__(f"unknown check id(s): {', '.join(self.unknown)} "
                         f"(known: {', '.join(known)})")


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """The outcome of one doctor run (``--json`` prints :meth:`as_json`)."""

    version: str
    config: str | None
    role: Role | None
    verdict: Verdict
    duration_s: float
    checks: tuple[CheckResult, ...]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 when a check failed."""
        return 1 if self.verdict == "fail" else 0

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "config": self.config, "role": self.role,
                "verdict": self.verdict, "duration_s": round(self.duration_s, 3),
                "checks": [c.as_json() for c in self.checks]}


def verdict_of(results: Iterable[CheckResult]) -> Verdict:
    """``fail`` if any check failed; ``warn`` if any warned or ended in an error; else ``ok``."""
    statuses = {r.status for r in results}
    if "fail" in statuses:
        return "fail"
    if statuses & {"warn", "error"}:
        return "warn"
    return "ok"


def make_report(results: Sequence[CheckResult], *, config: str | None, role: Role | None,
                duration_s: float) -> DoctorReport:
    return DoctorReport(__version__, config, role, verdict_of(results), duration_s,
                        tuple(results))


def select_checks(checks: Sequence[Check], role: Role,
                  only: Sequence[str] | None = None) -> tuple[Check, ...]:
    """The checks that apply to ``role``, restricted to ``only`` plus everything they depend on
    (transitively). Order is kept. Raises :class:`UnknownCheckError` for ids not registered.
    An ``opt_in`` check runs only when ``only`` names it: never in the default run, never
    pulled in as a dependency."""
    by_id = {c.id: c for c in checks}
    if only is None:
        return tuple(c for c in checks if role in c.roles and not c.opt_in)
    unknown = [i for i in only if i not in by_id]
    if unknown:
        raise UnknownCheckError(unknown, by_id)
    wanted: set[str] = set()
    stack = list(only)
    while stack:
        cid = stack.pop()
        if cid in wanted or cid not in by_id:
            continue
        if by_id[cid].opt_in and cid not in only:
            continue
        wanted.add(cid)
        stack.extend(by_id[cid].depends_on)
    return tuple(c for c in checks if c.id in wanted and role in c.roles)


def _skip_reason(dep: CheckResult) -> str:
    reason = f"skipped: {dep.id} {_STATUS_WORDS.get(dep.status, dep.status)}"
    state = dep.evidence.get("state")
    if state is not None:
        reason += f" (state={state})"
    if dep.evidence.get("mode") == "static-key":
        reason += " (static-key mode: no TLS)"
    return reason


def _error_result(check_id: str, summary: str, explanation: str, fix: str,
                  **evidence: Any) -> CheckResult:
    return CheckResult(check_id, "error", summary, evidence, explanation, fix)


async def _run_one(check: Check, ctx: DoctorContext, timeout: float) -> CheckResult:
    try:
        with trio.move_on_after(timeout) as scope:
            result = await check.run(ctx)
        if scope.cancelled_caught:
            return _error_result(
                check.id, f"did not finish within {timeout:g} s",
                f"The check {check.id} was stopped after {timeout:g} seconds, so this aspect "
                "was not verified.",
                "Run 'trivpn doctor' again with a larger '--timeout' (seconds per check), or "
                f"with '--check {check.id}' alone.",
                timeout_s=timeout)
    except Exception as exc:  # a broken check must never crash the doctor
        return _error_result(
            check.id, f"check crashed: {type(exc).__name__}: {exc}",
            f"The check {check.id} itself failed, so this aspect was not verified.",
            "Report this as a trivpn bug, including the exception shown in the evidence.",
            exception=type(exc).__name__, message=str(exc))
    return replace(result, id=check.id) if result.id != check.id else result


async def run_checks(checks: Sequence[Check], ctx_base: DoctorContext, *,
                     only: Sequence[str] | None = None) -> DoctorReport:
    """Run the checks for ``ctx_base.role`` (or ``only`` and their dependencies) and report.

    Each check gets ``ctx_base`` with ``results`` holding its finished dependencies (direct and
    transitive). Dependencies on ids that are not part of this run are ignored.
    """
    static = is_static(ctx_base.options)
    selected = tuple(c for c in select_checks(checks, ctx_base.role, only)
                     if static or not c.static_only or (only is not None and c.id in only))
    ids = {c.id for c in selected}
    done: dict[str, trio.Event] = {c.id: trio.Event() for c in selected}
    results: dict[str, CheckResult] = {}
    start = trio.current_time()

    def deps_of(check: Check) -> list[str]:
        return [d for d in check.depends_on if d in ids and d != check.id]

    def waits_for(check: Check) -> list[str]:
        return deps_of(check) + [d for d in check.after if d in ids and d != check.id]

    def closure(check: Check) -> dict[str, CheckResult]:
        seen: dict[str, CheckResult] = {}
        stack = waits_for(check)
        while stack:
            dep = stack.pop()
            if dep in seen or dep not in results:
                continue
            seen[dep] = results[dep]
            stack.extend(waits_for(by_id[dep]))
        return seen

    by_id = {c.id: c for c in selected}
    _reject_cycles(by_id, waits_for)

    async def runner(check: Check) -> None:
        try:
            for dep in waits_for(check):
                await done[dep].wait()
            blocking = next((results[d] for d in deps_of(check)
                             if results[d].status not in PASSING), None)
            t0 = trio.current_time()
            if check.needs_tls and static and ctx_base.options is not None:
                result = mode_skip(check.id, ctx_base.options)
            elif blocking is not None:
                result = CheckResult(check.id, "skip", _skip_reason(blocking),
                                     {"depends_on": blocking.id,
                                      "dependency_status": blocking.status})
            else:
                ctx = replace(ctx_base, results=_frozen(closure(check)))
                timeout = check.timeout if check.timeout is not None else ctx_base.timeout
                result = await _run_one(check, ctx, timeout)
                result = replace(result, duration_s=trio.current_time() - t0)
            results[check.id] = result
        finally:
            done[check.id].set()

    async with trio.open_nursery() as nursery:
        for check in selected:
            nursery.start_soon(runner, check)

    ordered = [results[c.id] for c in selected]
    return make_report(ordered, config=str(ctx_base.config_path)
                       if ctx_base.config_path is not None else None,
                       role=ctx_base.role, duration_s=trio.current_time() - start)


def _frozen(mapping: dict[str, CheckResult]) -> Mapping[str, CheckResult]:
    return MappingProxyType(mapping)


def _reject_cycles(by_id: Mapping[str, Check],
                   deps_of: Callable[[Check], list[str]]) -> None:
    """A dependency cycle would leave checks waiting forever: refuse it up front."""
    state: dict[str, int] = {}

    def visit(cid: str, path: list[str]) -> None:
        if state.get(cid) == 2:
            return
        if state.get(cid) == 1:
            raise ValueError("check dependency cycle: " + " -> ".join([*path, cid]))
        state[cid] = 1
        for dep in deps_of(by_id[cid]):
            visit(dep, [*path, cid])
        state[cid] = 2

    for cid in by_id:
        visit(cid, [])


def default_timeout(value: float) -> float:
    """Validate a ``--timeout`` value (positive, finite seconds)."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {value}")
    return value
