"""``minerva-ai test suite``: load and check a suite, run it through the service, show what
happened (progress on stderr, a summary table, totals), store it, and say how it ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minerva_ai.cli.output import Column, Output, style
from minerva_ai.client.http import AsyncClient
from minerva_ai.core.errors import ConfigError, MinervaError, ServiceError, UnreachableError
from minerva_ai.suites import Suite, SuiteError, load
from minerva_ai.suites import report as reports
from minerva_ai.suites.runner import Outcome, Plan, prepare, run

CANDIDATE_SECTIONS = ("models", "prompts")
STATUS_STYLES = {"pass": "green", "fail": "red", "error": "yellow"}
SUMMARY_COLUMNS = [
    Column("label", "CASE"),
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("failure", "FAILED ASSERTION / ERROR"),
    Column("latency_ms", "MS", render=lambda v: "" if v is None else f"{v:.0f}"),
    Column("cost", "COST", render=lambda v: "" if v is None else f"{v:.6f}"),
    Column("model", "MODEL"),
    Column("note", "NOTE"),
]
RUN_COLUMNS = [
    Column("id", "ID"),
    Column("created_at", "CREATED", kind="time"),
    Column("feature", "FEATURE"),
    Column("status", "STATUS", styles={"passed": "green", "failed": "red", "error": "yellow"}),
    Column("pass_rate", "PASS_RATE"),
    Column("required_pass_rate", "REQUIRED"),
    Column("totals.cases", "CASES"),
    Column("totals.cached", "CACHED"),
    Column("live", "LIVE"),
    Column("suite_hash", "SUITE", render=lambda v: str(v)[:12]),
    Column("fingerprint", "FINGERPRINT", render=lambda v: str(v)[:12]),
]


@dataclass(frozen=True)
class Options:
    path: Path
    concurrency: int
    filters: list[str]
    candidate: Mapping[str, Any] | None
    cache: bool
    pass_rate: float | None
    max_wait: float
    store: bool = True


def candidate_sections(settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A ``--settings`` file's models and prompts (anything else is refused: a suite tries
    models and prompts only)."""
    other = sorted(set(settings) - set(CANDIDATE_SECTIONS))
    if other:
        raise ConfigError(
            f"{source}: a suite can try the models and prompts sections only, "
            f"not {', '.join(other)}"
        )
    if not settings:
        raise ConfigError(f"{source}: has neither models nor prompts")
    return dict(settings)


@dataclass
class Finished:
    run: dict[str, Any]
    results: list[reports.CaseResult]
    interrupted: bool
    stored_error: str | None = None


def _progress(info: Callable[[str], None], color: bool) -> Callable[[Outcome, int, int], None]:
    def show(outcome: Outcome, done: int, total: int) -> None:
        job = outcome.job
        combo = reports.combination_label(job.combination)
        name = job.case.name + (f" [{combo}]" if combo else "")
        if job.case.repeat > 1:
            name += f" (run {job.repeat + 1}/{job.case.repeat})"
        extra = " (cached)" if outcome.cached else ""
        if outcome.waited_s:
            extra += f" (waited {outcome.waited_s:g} s for the rate limit)"
        status = style(outcome.status, STATUS_STYLES[outcome.status], enabled=color)
        info(f"[{done}/{total}] {status} {name}{extra}")

    return show


async def _run(
    url: str,
    token: str | None,
    opts: Options,
    suite: Suite,
    progress: Callable[[Outcome, int, int], None],
    log: Callable[[str], None] | None,
) -> Finished:
    started = time.monotonic()
    async with AsyncClient(url, token, log=log) as client:
        try:
            plan: Plan = await prepare(client, suite, opts.candidate)
        except SuiteError as exc:
            raise ConfigError(str(exc)) from None
        outcomes, interrupted = await run(
            client,
            suite,
            plan.jobs,
            concurrency=opts.concurrency,
            cache=opts.cache,
            candidate=opts.candidate,
            max_wait=opts.max_wait,
            progress=progress,
        )
        results = reports.cases(suite, plan.jobs, outcomes)
        # The fingerprint the service reported for the calls, else the one computed from
        # the settings read before the run (no call got an answer).
        seen = [o.fingerprint for o in outcomes if o.fingerprint]
        fingerprint = seen[0] if seen else plan.fingerprint
        required = suite.pass_rate if opts.pass_rate is None else opts.pass_rate
        document = reports.document(
            suite,
            results,
            fingerprint=fingerprint,
            required=required,
            duration_ms=int((time.monotonic() - started) * 1000),
            interrupted=interrupted,
        )
        finished = Finished(document, results, interrupted)
        if opts.store and not interrupted:
            try:
                stored = await client.test_runs.create(_stored_body(document))
                document["id"] = stored["id"]
            except (ServiceError, UnreachableError) as exc:
                finished.stored_error = str(exc)
        return finished


def _stored_body(document: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "feature",
        "suite",
        "description",
        "suite_hash",
        "fingerprint",
        "status",
        "pass_rate",
        "required_pass_rate",
        "totals",
        "duration_ms",
        "cases",
    )
    return {k: document[k] for k in keys}


def load_suite(opts: Options) -> Suite:
    try:
        suite = load(opts.path)
    except SuiteError as exc:
        raise ConfigError(str(exc)) from None
    suite = suite.filtered(opts.filters)
    if not suite.cases:
        raise ConfigError(f"{opts.path}: no case matches --filter {', '.join(opts.filters)}")
    return suite


def execute(
    url: str,
    token: str | None,
    opts: Options,
    *,
    info: Callable[[str], None],
    color: bool,
    log: Callable[[str], None] | None = None,
) -> Finished:
    """Run the suite; an interrupt (Ctrl-C) ends the run with the cases that finished."""
    suite = load_suite(opts)
    progress = _progress(info, color)
    return asyncio.run(_run(url, token, opts, suite, progress, log))


def summary_rows(finished: Finished) -> list[dict[str, Any]]:
    rows = []
    for result in finished.results:
        view = result.view()
        notes = []
        if view["cached"]:
            notes.append("cached" if view["cached"] == view["runs"] else f"{view['cached']} cached")
        if view["repeat"] > 1:
            notes.append(
                f"{view['passed_runs']}/{view['repeat']} passed"
                + (" (flaky)" if view["flaky"] else "")
            )
        rows.append(
            {
                **view,
                "label": result.label,
                "failure": reports.failure_text(view),
                "note": ", ".join(notes),
            }
        )
    return rows


def totals_line(run: Mapping[str, Any]) -> str:
    t = run["totals"]
    line = (
        f"{t['cases']} cases: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors"
        f" · pass rate {run['pass_rate']:.1f}% (required {run['required_pass_rate']:g}%)"
        f" · {t['cached']} from the cache · {run['duration_ms'] / 1000:.1f} s · {run['status']}"
    )
    return line


def write_junit(path: Path, run: Mapping[str, Any]) -> None:
    try:
        path.write_bytes(reports.junit(dict(run)))
    except OSError as exc:
        raise MinervaError(f"cannot write {path}: {exc.strerror or exc}") from None


def show(out: Output, finished: Finished, output_format: str) -> None:
    if output_format == "json":
        out.item(finished.run, [])
        return
    out.items(summary_rows(finished), SUMMARY_COLUMNS)


def check_writable(path: Path | None) -> None:
    """--junit's folder exists (a bad flag is exit 2 before any case runs)."""
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"--junit: the folder {path.parent} does not exist")
