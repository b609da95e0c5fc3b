"""The doctor runner: concurrency, timeouts, dependencies, errors, selection and verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, Role, ok, problem
from trivpn.diagnostics.runner import (
    UnknownCheckError,
    run_checks,
    select_checks,
    verdict_of,
)

CTX = DoctorContext(Path("t.conf"), None, "client", timeout=5.0)


def sleeper(cid: str, seconds: float, log: list[str] | None = None) -> Check:
    async def run(ctx: DoctorContext) -> CheckResult:
        if log is not None:
            log.append(f"start {cid}")
        await trio.sleep(seconds)
        if log is not None:
            log.append(f"end {cid}")
        return ok(cid, "slept")
    return Check(cid, run)


def fixed(cid: str, result: CheckResult, *, depends_on: tuple[str, ...] = (),
          roles: tuple[Role, ...] = ("client", "server")) -> Check:
    async def run(ctx: DoctorContext) -> CheckResult:
        return result
    return Check(cid, run, roles=roles, depends_on=depends_on)


def failing(cid: str, **evidence: object) -> CheckResult:
    return problem(cid, "fail", "broken", explanation="it is broken", fix="fix it", **evidence)


async def test_checks_run_concurrently(autojump_clock: trio.abc.Clock) -> None:
    report = await run_checks([sleeper("a", 3), sleeper("b", 3), sleeper("c", 3)], CTX)
    assert [r.status for r in report.checks] == ["ok", "ok", "ok"]
    assert report.duration_s == pytest.approx(3, abs=0.01)


async def test_overrunning_check_becomes_error_with_timeout_evidence(
        autojump_clock: trio.abc.Clock) -> None:
    slow = Check("slow", sleeper("slow", 100).run, timeout=2.0)
    report = await run_checks([slow, sleeper("quick", 1)], CTX)
    result = report.checks[0]
    assert result.status == "error"
    assert result.evidence == {"timeout_s": 2.0}
    assert "2 s" in result.summary
    assert report.checks[1].status == "ok"
    assert report.duration_s == pytest.approx(2, abs=0.01)


async def test_context_timeout_is_the_default_per_check_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    report = await run_checks([sleeper("slow", 100)], CTX)
    assert report.checks[0].status == "error"
    assert report.checks[0].evidence["timeout_s"] == 5.0


async def test_exception_in_a_check_becomes_error_not_a_crash() -> None:
    async def boom(ctx: DoctorContext) -> CheckResult:
        raise RuntimeError("kaput")
    report = await run_checks([Check("boom", boom), fixed("fine", ok("fine", "ok"))], CTX)
    boom_result, fine = report.checks
    assert boom_result.status == "error"
    assert "RuntimeError: kaput" in boom_result.summary
    assert boom_result.evidence == {"exception": "RuntimeError", "message": "kaput"}
    assert boom_result.explanation and boom_result.fix
    assert fine.status == "ok"


async def test_dependent_starts_only_after_its_dependency_finished(
        autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    first = sleeper("first", 2, log)
    second = Check("second", sleeper("second", 1, log).run, depends_on=("first",))
    await run_checks([second, first], CTX)
    assert log == ["start first", "end first", "start second", "end second"]


async def test_dependent_is_skipped_with_the_dependency_status_and_state() -> None:
    port = fixed("port.reachable", failing("port.reachable", state="filtered"))
    tls = fixed("tls.handshake", ok("tls.handshake", "fine"), depends_on=("port.reachable",))
    report = await run_checks([port, tls], CTX)
    skipped = report.checks[1]
    assert skipped.status == "skip"
    assert skipped.summary == "skipped: port.reachable failed (state=filtered)"
    assert skipped.evidence == {"depends_on": "port.reachable", "dependency_status": "fail"}


@pytest.mark.parametrize("status", ["ok", "warn"])
async def test_dependent_runs_when_dependency_passed(status: str) -> None:
    dep_result = (ok("dep", "fine") if status == "ok" else
                  problem("dep", "warn", "meh", explanation="e", fix="f"))
    seen: dict[str, CheckResult] = {}

    async def child(ctx: DoctorContext) -> CheckResult:
        seen.update(ctx.results)
        return ok("child", "ran")
    report = await run_checks([fixed("dep", dep_result), Check("child", child,
                                                               depends_on=("dep",))], CTX)
    assert report.checks[1].status == "ok"
    assert list(seen) == ["dep"]
    assert seen["dep"].status == status


async def test_skip_propagates_down_a_chain() -> None:
    a = fixed("a", failing("a"))
    b = fixed("b", ok("b", "x"), depends_on=("a",))
    c = fixed("c", ok("c", "x"), depends_on=("b",))
    report = await run_checks([a, b, c], CTX)
    assert [r.summary for r in report.checks[1:]] == ["skipped: a failed",
                                                       "skipped: b was skipped"]


async def test_results_keep_registry_order_not_finish_order(
        autojump_clock: trio.abc.Clock) -> None:
    report = await run_checks([sleeper("z", 3), sleeper("y", 1), sleeper("x", 2)], CTX)
    assert [r.id for r in report.checks] == ["z", "y", "x"]


async def test_checks_of_the_other_role_do_not_run() -> None:
    checks = [fixed("both", ok("both", "x")),
              fixed("srv", ok("srv", "x"), roles=("server",)),
              fixed("cli", ok("cli", "x"), roles=("client",))]
    report = await run_checks(checks, CTX)
    assert [r.id for r in report.checks] == ["both", "cli"]
    assert report.role == "client"


async def test_dependency_outside_the_run_is_ignored() -> None:
    checks = [fixed("cli", failing("cli"), roles=("client",)),
              fixed("srv", ok("srv", "x"), roles=("server",), depends_on=("cli",))]
    server_ctx = DoctorContext(Path("s.conf"), None, "server", timeout=5.0)
    report = await run_checks(checks, server_ctx)
    assert [(r.id, r.status) for r in report.checks] == [("srv", "ok")]


def test_only_selects_the_named_checks_and_their_dependencies() -> None:
    checks = [fixed("a", ok("a", "")), fixed("b", ok("b", ""), depends_on=("a",)),
              fixed("c", ok("c", "")), fixed("d", ok("d", ""), depends_on=("b",))]
    assert [c.id for c in select_checks(checks, "client", ["d"])] == ["a", "b", "d"]
    assert [c.id for c in select_checks(checks, "client", ["c"])] == ["c"]


def test_only_rejects_unknown_ids() -> None:
    with pytest.raises(UnknownCheckError, match="nope"):
        select_checks([fixed("a", ok("a", ""))], "client", ["a", "nope"])


async def test_dependency_cycle_is_refused() -> None:
    checks = [fixed("a", ok("a", ""), depends_on=("b",)),
              fixed("b", ok("b", ""), depends_on=("a",))]
    with pytest.raises(ValueError, match="cycle"):
        await run_checks(checks, CTX)


async def test_wrong_result_id_is_corrected_to_the_check_id() -> None:
    report = await run_checks([fixed("real", ok("other", "x"))], CTX)
    assert report.checks[0].id == "real"


async def test_duration_is_measured_per_check(autojump_clock: trio.abc.Clock) -> None:
    report = await run_checks([sleeper("a", 1.5)], CTX)
    assert report.checks[0].duration_s == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(("statuses", "verdict", "exit_code"), [
    ([], "ok", 0),
    (["ok", "skip"], "ok", 0),
    (["ok", "warn"], "warn", 0),
    (["ok", "error"], "warn", 0),
    (["warn", "fail", "error"], "fail", 1),
])
async def test_verdict_and_exit_code(statuses: list[str], verdict: str,
                                     exit_code: int) -> None:
    results = [CheckResult(f"c{i}", s, "x") for i, s in enumerate(statuses)]  # type: ignore[arg-type]
    assert verdict_of(results) == verdict
    checks = [fixed(r.id, r) for r in results]
    report = await run_checks(checks, CTX)
    assert (report.verdict, report.exit_code) == (verdict, exit_code)


async def test_report_json_has_exactly_the_documented_keys() -> None:
    report = await run_checks([fixed("a", failing("a", state="closed"))], CTX)
    data = report.as_json()
    assert set(data) == {"version", "config", "role", "verdict", "duration_s", "checks"}
    assert data["config"] == "t.conf"
    assert set(data["checks"][0]) == {"id", "status", "summary", "evidence", "explanation",
                                      "fix", "duration_s"}
    assert data["checks"][0]["evidence"] == {"state": "closed"}


async def test_a_check_runs_after_a_failed_after_check_and_sees_its_result(
        autojump_clock: trio.abc.Clock) -> None:
    seen: list[str] = []

    async def slow_fail(ctx: DoctorContext) -> CheckResult:
        await trio.sleep(2)
        return failing("port", state="closed")

    async def later(ctx: DoctorContext) -> CheckResult:
        seen.append(ctx.results["port"].evidence["state"])
        return ok("keys", "ran")

    report = await run_checks([Check("port", slow_fail), Check("keys", later, after=("port",))],
                              CTX)

    assert [r.status for r in report.checks] == ["fail", "ok"]
    assert seen == ["closed"]
