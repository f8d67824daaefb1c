"""Run checks in parallel (``jobs`` at a time), each within its timeout; Ctrl-C stops the
run with what was gathered (the processes still running are killed with their group)."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minerva_ai.readiness.model import (
    CheckError,
    Outcome,
    Result,
    Status,
    docs_url,
    exit_code,
)
from minerva_ai.readiness.registry import TYPES
from minerva_ai.readiness.spec import CheckSpec, Context

SCHEMA_VERSION = 1
# A check that reports its own timeout (a command: with its output) gets this long past it
# before the runner gives up on it.
GRACE_S = 2.0


@dataclass
class Run:
    results: list[Result]
    started_at: datetime
    duration_ms: int
    interrupted: bool = False
    url: str | None = None
    commit: str | None = None
    config: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def exit_code(self, fail_on: str = "fail") -> int:
        return exit_code(self.results, fail_on=fail_on, interrupted=self.interrupted)

    def as_dict(self) -> dict[str, Any]:
        from minerva_ai.readiness.model import counts

        return {
            "schema_version": SCHEMA_VERSION,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_ms": self.duration_ms,
            "url": self.url,
            "commit": self.commit,
            "config": self.config,
            "interrupted": self.interrupted,
            "summary": counts(self.results),
            "checks": [r.as_dict() for r in self.results],
        }


def select(
    specs: list[CheckSpec], only: list[str], skip: list[str]
) -> tuple[list[CheckSpec], list[Result]]:
    """The checks to run, and a ``skip`` result for each left out by --only / --skip.
    An unknown name is a ``ConfigError`` listing the valid ones."""
    from minerva_ai.core.errors import ConfigError

    known = {s.name for s in specs} | {s.id for s in specs}
    for name in [*only, *skip]:
        if name not in known:
            valid = ", ".join(s.name for s in specs)
            raise ConfigError(f"no check named {name!r} (checks: {valid})")
    chosen, skipped = [], []
    for spec in specs:
        names = {spec.name, spec.id}
        if (only and not names & set(only)) or names & set(skip):
            flag = "--skip" if names & set(skip) else "--only"
            skipped.append(_result(spec, Outcome(Status.SKIP, f"left out by {flag}"), 0))
        else:
            chosen.append(spec)
    return chosen, skipped


def _result(spec: CheckSpec, outcome: Outcome, duration_ms: int) -> Result:
    status = outcome.status
    details = dict(outcome.details)
    if status is Status.FAIL and spec.severity == "warn":
        status = Status.WARN
        details["severity"] = "warn"
    return Result(
        spec.id,
        spec.name,
        spec.type,
        status,
        outcome.message,
        outcome.observed,
        outcome.threshold,
        outcome.remediation,
        duration_ms,
        details,
        docs_url(spec.type),
    )


def evaluate(spec: CheckSpec, ctx: Context) -> Outcome:
    """One check, its failures to evaluate as an ``error`` outcome, never an exception."""
    try:
        return TYPES[spec.type].run(spec, ctx)
    except CheckError as exc:
        return Outcome(Status.ERROR, str(exc), remediation=exc.remediation)
    except Exception as exc:  # a bug in a check must not take the run down with it
        return Outcome(Status.ERROR, f"the check crashed: {type(exc).__name__}: {exc}")


def run_checks(
    specs: list[CheckSpec],
    ctx: Context,
    *,
    jobs: int = 4,
    skipped: list[Result] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Run:
    """Every check, ``jobs`` at a time; results in the order of the file."""
    started_at = datetime.now(UTC)
    started = time.monotonic()
    done: queue.Queue[tuple[int, Outcome, int]] = queue.Queue()
    results: dict[int, Result] = {}
    pending = list(enumerate(specs))
    running: dict[int, float] = {}  # index -> deadline
    interrupted = False

    def work(index: int, spec: CheckSpec) -> None:
        begun = time.monotonic()
        outcome = evaluate(spec, ctx)
        done.put((index, outcome, int((time.monotonic() - begun) * 1000)))

    def record(index: int, outcome: Outcome, duration_ms: int) -> None:
        results[index] = _result(specs[index], outcome, duration_ms)
        running.pop(index, None)
        if on_result:
            on_result(results[index])

    try:
        while pending or running:
            while pending and len(running) < jobs:
                index, spec = pending.pop(0)
                running[index] = time.monotonic() + spec.timeout_s + GRACE_S
                threading.Thread(
                    target=work, args=(index, spec), name=thread_name(spec), daemon=True
                ).start()
            wait = max(0.0, min(running.values()) - time.monotonic())
            try:
                index, outcome, duration_ms = done.get(timeout=wait)
            except queue.Empty:
                now = time.monotonic()
                for late in [i for i, deadline in running.items() if deadline <= now]:
                    spec = specs[late]
                    ctx.stop(thread_name(spec))
                    message = f"timed out after {spec.timeout_s:g} s"
                    hint = f"raise its timeout (now {spec.timeout_s:g} s)"
                    record(
                        late,
                        Outcome(Status.ERROR, message, remediation=hint),
                        int(spec.timeout_s * 1000),
                    )
                continue
            if index in running:
                record(index, outcome, duration_ms)
    except KeyboardInterrupt:
        interrupted = True
        ctx.stop()
        for index in list(running):
            record(index, Outcome(Status.ERROR, "interrupted while running"), 0)
        for index, _spec in pending:
            results[index] = _result(specs[index], Outcome(Status.SKIP, "not run: interrupted"), 0)
    finally:
        ctx.close()
    ordered = [results[i] for i in sorted(results)]
    return Run(
        [*ordered, *(skipped or [])],
        started_at,
        int((time.monotonic() - started) * 1000),
        interrupted,
        ctx.url,
        git_commit(ctx),
    )


def thread_name(spec: CheckSpec) -> str:
    return f"check-{spec.id}"


def git_commit(ctx: Context) -> str | None:
    """The commit checked out where the config lives, when it is a git work tree."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ctx.base_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip() or None
    return None
