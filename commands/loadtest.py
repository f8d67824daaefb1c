"""``minerva-ai load-test``: scenario-driven HTTP and WebSocket load with thresholds."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from minerva_ai.core.errors import ConfigError, GateError, GateFailed, UsageError

from .options import Progress, State, output_options, parsed_by, pass_state

if TYPE_CHECKING:
    from minerva_ai.loadtest.engine import Progress as RunProgress
    from minerva_ai.loadtest.thresholds import Threshold

DEFAULT_THRESHOLD = "http_req_failed:rate<0.01"
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*$")
_RATE_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _seconds(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    if value.strip() == "0":
        return 0.0
    from minerva_ai.core.timeparse import parse_duration

    try:
        seconds = parse_duration(value).total_seconds()
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    if param.name == "duration" and seconds <= 0:
        raise click.BadParameter("the duration must be above 0")
    return seconds


def _rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    match = _RATE.match(value)
    if not match or float(match[1]) <= 0:
        raise click.BadParameter(
            f"invalid rate {value!r}: expected requests per unit above 0, e.g. 200/s, 600/m"
        )
    return float(match[1]) / _RATE_UNITS[match[2]]


def _paths(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> Any:
    from minerva_ai.loadtest.http import target_problem

    for path in value:
        if not path.startswith("/"):
            raise click.BadParameter(
                f"{path!r}: a path relative to the service root, e.g. /api/health"
            )
        problem = target_problem(path)
        if problem:
            raise click.BadParameter(f"{path!r}: {problem}")
    return list(value)


@click.command(name="load-test")
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Scenario YAML (see examples/scenarios/). Default: each user lists features, "
    "then opens a WebSocket, then thinks for 1-3 s.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Closed model: this many concurrent users, each looping over the scenario.",
)
@click.option(
    "--ramp-up",
    metavar="DURATION",
    callback=_seconds,
    help="Start users evenly over this time (default 0: all at once).",
)
@click.option(
    "--rate",
    metavar="N/s",
    callback=_rate,
    help="Open model, instead of --users: this many arrivals per second (200/s, 600/m); "
    "latency is measured from each request's intended send time.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --rate: iterations in flight at once, one connection each (default 100); "
    "an arrival that finds none free waits, and the wait counts in its latency.",
)
@click.option(
    "--duration",
    metavar="DURATION",
    default="60s",
    show_default=True,
    callback=_seconds,
    help="How long to run; always in force.",
)
@click.option(
    "--max-requests",
    type=click.IntRange(min=0),
    default=0,
    help="Stop after this many HTTP requests (0 = no cap).",
)
@click.option(
    "--threshold",
    "thresholds",
    metavar="EXPR",
    multiple=True,
    callback=parsed_by("minerva_ai.loadtest.thresholds:parse_threshold"),
    help=f"Pass/fail criterion, k6 style (repeatable; default {DEFAULT_THRESHOLD}): "
    "http_req_duration:p(95)<500, http_req_duration{step:list}:p(95)<300, "
    "ws_connecting:p(95)<200.",
)
@click.option(
    "--get",
    "get_paths",
    metavar="PATH",
    multiple=True,
    callback=_paths,
    help="Instead of a scenario, GET these paths (repeatable), like hey or wrk; spaces and "
    "non-ASCII characters are percent-encoded, escapes such as %2F kept.",
)
@click.option(
    "--think-time",
    metavar="0|MIN-MAX",
    callback=parsed_by("minerva_ai.loadtest.scenario:parse_think_time"),
    help="Pause between a user's iterations: 0, 1s, 1s-3s (overrides the scenario's; "
    "the open model's schedule is its own pacing).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Spread users (or the arrival rate) over N processes; histograms are merged exactly.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON report to this file.",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JUnit XML: one testcase per threshold.",
)
@output_options
@pass_state
def load_test(
    state: State,
    scenario: Path | None,
    users: int,
    ramp_up: float | None,
    rate: float | None,
    max_in_flight: int | None,
    duration: float,
    max_requests: int,
    thresholds: list[Threshold],
    get_paths: list[str],
    think_time: tuple[float, float] | None,
    workers: int,
    out: Path | None,
    junit: Path | None,
) -> None:
    """Put load on the service over HTTP and WebSocket; gate on thresholds.

    Closed model: --users, each running iterations back to back (--ramp-up). Open model:
    --rate instead, one iteration per arrival, latency from each arrival's intended send
    time so a slow server cannot hide its queueing (coordinated omission); --max-in-flight
    bounds it. An iteration is every step in order (flow: sequence) or one step picked by
    weight (flow: weighted). Percentiles come from HDR histograms. Progress goes to stderr
    once a second on a terminal; the summary to stdout; -o json prints the report (also
    written by --out). Scenario format, threshold grammar and the report's fields:
    docs/load-test.md.

    \b
    Examples:
      minerva-ai load-test --users 50 --duration 30s
      minerva-ai load-test --scenario examples/scenarios/demo.yaml --rate 200/s \\
          --threshold 'http_req_duration:p(95)<500' --junit load.xml
      minerva-ai load-test --scenario examples/scenarios/journey.yaml --users 20 \\
          --ramp-up 30s --duration 5m --workers 2 --out report.json
      minerva-ai load-test --get /api/health --think-time 0 --users 20 --duration 10s

    \b
    Exit: 0 every threshold passed; 1 a threshold failed; 2 bad flags or scenario (before
    any request); 4 the target cannot be reached at start; 5 the target was lost mid-run;
    130 Ctrl-C (after printing the partial summary).
    """
    from minerva_ai.loadtest import scenario as scenarios

    if state.output_format == "csv":
        raise click.BadParameter("load-test prints table, json, jsonl or yaml", param_hint="'-o'")
    if scenario is not None and get_paths:
        raise click.UsageError("--scenario and --get are alternatives: give one")
    explicit_users = (
        click.get_current_context().get_parameter_source("users")
        != click.core.ParameterSource.DEFAULT
    )
    if rate is not None and explicit_users:
        raise click.UsageError(
            "--users (closed model) and --rate (open model) are alternatives: give one; "
            "--max-in-flight caps the open model's concurrency"
        )
    if rate is not None and ramp_up:
        raise click.UsageError("--ramp-up applies to --users (closed model), not to --rate")
    if rate is None and max_in_flight is not None:
        raise click.UsageError("--max-in-flight applies to --rate (open model)")
    if rate is not None and (max_in_flight or 100) < workers:
        raise click.UsageError(
            f"--max-in-flight ({max_in_flight or 100}) is shared among the workers: "
            f"give at least one per worker ({workers})"
        )
    if get_paths:
        plan = scenarios.get_scenario(get_paths, think_time or (0.0, 0.0))
    elif scenario is not None:
        plan = scenarios.load_scenario(scenario)
        if think_time is not None:
            plan.think_time = think_time
    else:
        plan = scenarios.default_scenario(think_time or (1.0, 3.0))
    from minerva_ai.loadtest.thresholds import check_tags, parse_threshold

    check_tags(thresholds, [(s.name, s.tags) for s in plan.steps if s.kind != "think"])
    if not thresholds:
        thresholds = [parse_threshold(DEFAULT_THRESHOLD)]
    resolved = state.resolved()
    report = _run(
        state,
        plan,
        resolved.url,
        resolved.token,
        users,
        ramp_up or 0.0,
        rate,
        max_in_flight or 100,
        duration,
        max_requests,
        workers,
        thresholds,
    )
    _emit(state, report, out, junit)
    if report["interrupted"]:
        click.echo("interrupted", err=True)
        raise click.exceptions.Exit(130)
    if report["lost"]:
        raise GateError(f"the target was lost mid-run: {report['lost']}")
    failed = [c["expr"] for c in report["thresholds"] if not c["ok"]]
    if failed:
        raise GateFailed(f"{len(failed)} threshold(s) failed: {', '.join(failed)}")


def _run(
    state: State,
    plan: Any,
    url: str,
    token: str | None,
    users: int,
    ramp_up: float,
    rate: float | None,
    max_in_flight: int,
    duration: float,
    max_requests: int,
    workers: int,
    thresholds: list[Threshold],
) -> dict[str, Any]:
    import asyncio

    from minerva_ai.loadtest.engine import LoadConfig
    from minerva_ai.loadtest.prepare import fetch_data, probe
    from minerva_ai.loadtest.report import build_report
    from minerva_ai.loadtest.workers import run_load

    async def prepare() -> dict[str, list[Any]]:
        await probe(url)
        return await fetch_data(url, token, plan)

    data = asyncio.run(prepare())
    config = LoadConfig(
        url,
        token,
        plan,
        users=users,
        ramp_up_s=ramp_up,
        rate=rate,
        max_in_flight=max_in_flight,
        duration_s=duration,
        max_requests=max_requests,
        data=data,
    )
    progress = Progress(state, every=1.0)

    concurrency = "in flight" if rate else "users"

    last = [0.0, 0]  # elapsed, requests at the previous line: req/s is the current rate

    def show(snapshot: RunProgress) -> None:
        p95 = "-" if snapshot.p95_ms is None else f"{snapshot.p95_ms:,.1f} ms"
        span = snapshot.elapsed_s - last[0]
        rps = (snapshot.requests - last[1]) / span if span > 0 else 0.0
        last[:] = [snapshot.elapsed_s, snapshot.requests]
        progress.update(
            f"{snapshot.elapsed_s:5.0f}s  {concurrency} {snapshot.users}  {rps:,.0f} req/s  "
            f"p95 {p95}  errors {snapshot.failed:,}"
        )

    mode = f"{rate:g}/s (at most {max_in_flight} in flight)" if rate else f"{users} users"
    state.info(f"load-test: {mode} for {duration:g} s against {url} ({plan.name})")
    result = run_load(config, workers, show if progress.enabled else None)
    progress.clear()
    model = {
        "type": "open" if rate else "closed",
        "users": None if rate else users,
        "rate": rate,
        "max_in_flight": max_in_flight if rate else None,
        "flow": plan.flow,
        "ramp_up_s": ramp_up,
        "duration_s": duration,
        "max_requests": max_requests,
        "scenario": plan.name,
    }
    report = build_report(result, thresholds, model)
    if result.limited:
        state.warn(
            f"the generator used {result.cpu_percent:.0f}% of a core: it may have been "
            "the bottleneck (try --workers)"
        )
    if result.arrivals_dropped:
        state.warn(
            f"{result.arrivals_dropped:,} arrivals were due but still waiting or unanswered "
            "when the run ended: the server (or --max-in-flight) could not keep up with "
            "the rate, and their latency is missing from the percentiles"
        )
    if result.arrivals_waited:
        state.warn(
            f"{result.arrivals_waited:,} arrivals waited for one of the {max_in_flight} "
            "in-flight slots: their latency includes the wait (raise --max-in-flight to "
            "tell the server's queueing from the generator's)"
        )
    return report


def _emit(state: State, report: dict[str, Any], out: Path | None, junit: Path | None) -> None:
    import orjson

    from minerva_ai.loadtest.report import junit_xml, summary_text

    try:
        if out is not None:
            out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        if junit is not None:
            junit.write_text(junit_xml(report))
    except OSError as exc:
        raise UsageError(f"cannot write the report: {exc}") from None
    state.output().item(report, [], text=lambda: summary_text(report))
    sys.stdout.flush()
