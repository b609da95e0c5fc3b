"""What a diagnostic check is and what it returns.

A check is an independent unit with a stable ``id`` (``port.reachable``), the ids it depends on,
the roles it applies to, and an async ``run(ctx)`` returning a :class:`CheckResult`. Every
non-ok result carries evidence (what was observed), an explanation in the user's terms and a fix
naming the file, directive or command involved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trivpn.config.errors import ConfigError
from trivpn.config.options import Options

if TYPE_CHECKING:
    from trivpn.diagnostics.tunnel_session import TunnelBroker

Status = Literal["ok", "warn", "fail", "skip", "error"]
Role = Literal["client", "server"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    id: str
    status: Status
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    explanation: str = ""
    fix: str = ""
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "summary": self.summary,
                "evidence": dict(self.evidence), "explanation": self.explanation,
                "fix": self.fix, "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True, slots=True)
class DoctorContext:
    """Inputs every check may read. ``options`` is None when the config did not parse at all;
    ``config_errors`` lists the lines left out to build ``options`` (config.syntax reports
    them, the network checks still run with what parsed)."""

    config_path: Path | None
    options: Options | None
    role: Role
    timeout: float
    results: Mapping[str, CheckResult] = field(default_factory=dict)  # finished dependencies
    netns: str | None = None  # run network probes inside this namespace (tests)
    config_errors: tuple[ConfigError, ...] = ()
    # The doctor run's shared post-handshake session (tunnel_session.py); None: a check that
    # needs one opens a private one (tunnel_lease()).
    tunnel: TunnelBroker | None = None
    # Hosts the user wants reached through the tunnel ('trivpn doctor --target HOST').
    targets: tuple[str, ...] = ()


CheckFn = Callable[[DoctorContext], Awaitable[CheckResult]]


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    run: CheckFn
    roles: tuple[Role, ...] = ("client", "server")
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None  # default: the doctor's --timeout
    # Run after these (when they are part of the run) and see their results, whatever their
    # status: unlike depends_on, a failed one does not skip this check.
    after: tuple[str, ...] = ()
    # Not part of the default run (it waits minutes, or sends more than a quick probe): it
    # runs only when named with '--check ID' (runner.select_checks), never as a dependency.
    opt_in: bool = False
    # Needs TLS (a handshake, certificates, TLS resets): on a static-key config ('secret')
    # the runner skips it with the mode as the reason (checks_static.mode_skip()).
    needs_tls: bool = False
    # Only for static-key configs: left out of the run for any other config.
    static_only: bool = False


def ok(id: str, summary: str, **evidence: Any) -> CheckResult:
    return CheckResult(id, "ok", summary, evidence)


def skip(id: str, summary: str, **evidence: Any) -> CheckResult:
    return CheckResult(id, "skip", summary, evidence)


def problem(id: str, status: Status, summary: str, *, explanation: str, fix: str,
            **evidence: Any) -> CheckResult:
    """A warn or fail result: explanation and fix are required."""
    if not explanation or not fix:
        raise ValueError(f"check {id}: a {status} result needs an explanation and a fix")
    return CheckResult(id, status, summary, evidence, explanation, fix)
