"""Check types that run another gate: ``load-test`` (the load-test library, in this
process) and ``test-suite`` (``minerva-ai test suite`` in a subprocess, or a stored run of
the suite on the live models and prompts)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from minerva_ai.core.errors import MinervaError
from minerva_ai.readiness.model import CheckError, Outcome, Status
from minerva_ai.readiness.service import service_errors
from minerva_ai.readiness.spec import CheckSpec, Context

CLI_MODULE = "minerva_ai.commands.main"
# `minerva-ai test suite` exit codes (docs/readiness.md, the suites' contract)
SUITE_EXITS = {
    0: Status.PASS,
    1: Status.FAIL,
    5: Status.ERROR,
    2: Status.ERROR,
    4: Status.ERROR,
}
SUITE_EXIT_MEANING = {
    1: "a case failed",
    5: "every non-passing case is an error",
    2: "bad suite file or flag",
    4: "the service could not be reached",
}


def check_load_test(spec: CheckSpec, ctx: Context) -> Outcome:
    import asyncio

    from minerva_ai.loadtest import scenario as scenarios
    from minerva_ai.loadtest.engine import LoadConfig, Runner
    from minerva_ai.loadtest.prepare import fetch_data, probe
    from minerva_ai.loadtest.report import build_report
    from minerva_ai.loadtest.thresholds import check_tags

    url = ctx.client().url
    try:
        plan = (
            scenarios.load_scenario(ctx.path(spec["scenario"]))
            if spec["scenario"]
            else scenarios.default_scenario((0.0, 0.0))
        )
        thresholds = spec["thresholds"]
        check_tags(thresholds, [(s.name, s.tags) for s in plan.steps if s.kind != "think"])
    except MinervaError as exc:
        raise CheckError(str(exc)) from None

    async def prepare() -> dict[str, list[Any]]:
        await probe(url)
        return await fetch_data(url, ctx.token, plan)

    with service_errors():
        data = asyncio.run(prepare())
    config = LoadConfig(
        url,
        ctx.token,
        plan,
        users=spec["users"],
        ramp_up_s=spec["ramp_up"],
        duration_s=spec["duration"],
        data=data,
    )
    runner = Runner(config)
    with asyncio.Runner() as loop_runner:
        loop = loop_runner.get_loop()

        def cancel() -> None:
            loop.call_soon_threadsafe(runner.interrupt)

        with ctx.cancel_with(cancel):
            result = loop_runner.run(runner.run())
    model = {
        "type": "closed",
        "users": spec["users"],
        "duration_s": spec["duration"],
        "scenario": plan.name,
    }
    report = build_report(result, thresholds, model)
    if result.lost:
        raise CheckError(f"the target was lost mid-run: {result.lost}")
    failed = [t for t in report["thresholds"] if not t["ok"]]
    observed = {t["expr"]: t["observed"] for t in report["thresholds"]}
    requests = int((report.get("http_reqs") or {}).get("count") or 0)
    details = {
        "requests": requests,
        "thresholds": report["thresholds"],
        "duration_s": report["duration_s"],
        "scenario": plan.name,
    }
    exprs = [t.expr for t in thresholds]
    if failed:
        shown = ", ".join(f"{t['expr']} (observed {t['observed']})" for t in failed)
        return Outcome(
            Status.FAIL,
            f"{len(failed)} of {len(exprs)} threshold(s) failed: {shown}",
            observed,
            exprs,
            "see the load-test report (`minerva-ai load-test ... -o json`)",
            details,
        )
    return Outcome(
        Status.PASS,
        f"{len(exprs)} threshold(s) met over {requests:,} requests",
        observed,
        exprs,
        None,
        details,
    )


def check_test_suite(spec: CheckSpec, ctx: Context) -> Outcome:
    if spec["stored"]:
        return _stored_suite(spec, ctx)
    from minerva_ai.readiness.checks_local import run_process, tail

    argv = [sys.executable, "-m", CLI_MODULE, "test", "suite", str(ctx.path(spec["file"]))]
    # The service and token go through the environment, never argv (`ps` would show it).
    env = {**os.environ, "MINERVA_URL": ctx.url or "", "MINERVA_TOKEN": ctx.token or ""}
    env = {k: v for k, v in env.items() if v or k not in ("MINERVA_URL", "MINERVA_TOKEN")}
    code, output, errors = run_process(ctx, [*argv, "-o", "json"], spec.timeout_s, env, split=True)
    report = _report(output)
    status = SUITE_EXITS.get(code)
    details: dict[str, Any] = {"exit_code": code, "file": spec["file"]}
    if report:
        details.update(
            {k: report.get(k) for k in ("id", "feature", "suite_hash", "status", "totals")}
        )
    observed = report.get("pass_rate") if report else None
    threshold = report.get("required_pass_rate") if report else None
    if status is None or status is Status.ERROR:
        meaning = SUITE_EXIT_MEANING.get(code, f"exited {code}")
        raise CheckError(
            f"the suite could not be evaluated ({meaning}): {tail(errors or output, 3)}",
            "run `minerva-ai test suite " + spec["file"] + "` to see why",
        )
    totals = (report or {}).get("totals") or {}
    counted = f"{totals.get('passed', '?')}/{totals.get('cases', '?')} cases passed"
    if status is Status.PASS:
        return Outcome(
            Status.PASS, f"{counted} (pass rate {observed}%)", observed, threshold, None, details
        )
    return Outcome(
        Status.FAIL,
        f"{counted}: pass rate {observed}% below {threshold}%",
        observed,
        threshold,
        "run `minerva-ai test suite " + spec["file"] + "` and fix the failing cases",
        details,
    )


def _report(output: bytes) -> dict[str, Any] | None:
    text = output.decode("utf-8", "replace")
    start = text.find("{")
    if start < 0:
        return None
    try:
        found = json.JSONDecoder().raw_decode(text[start:])[0]
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _stored_suite(spec: CheckSpec, ctx: Context) -> Outcome:
    import importlib

    # minerva_ai.suites (issue 13's library): load(path) -> Suite(.feature, .hash)
    suites: Any = importlib.import_module("minerva_ai.suites")
    path = ctx.path(spec["file"])
    try:
        suite = suites.load(path)
    except (suites.SuiteError, MinervaError) as exc:
        raise CheckError(str(exc)) from None
    with service_errors():
        feature = ctx.client().features.get(suite.feature)
        params = {
            "feature_id": feature["id"],
            "suite_hash": suite.hash,
            "fingerprint": "live",
            "status": "passed",
            "limit": 1,
        }
        runs = ctx.client().request("GET", "/test-runs", params=params).get("data") or []
    details = {"feature": suite.feature, "suite_hash": suite.hash, "file": spec["file"]}
    if not runs:
        return Outcome(
            Status.FAIL,
            f"no passed run of {spec['file']} on {suite.feature}'s live models and prompts",
            None,
            "passed",
            f"run `minerva-ai test suite {spec['file']}` (it stores the run)",
            details,
        )
    run = runs[0]
    details.update({"run": run.get("id"), "created_at": run.get("created_at")})
    return Outcome(
        Status.PASS,
        f"run {run.get('id')} of {run.get('created_at')} passed on the live settings "
        f"(pass rate {run.get('pass_rate')}%)",
        run.get("pass_rate"),
        run.get("required_pass_rate"),
        None,
        details,
    )
