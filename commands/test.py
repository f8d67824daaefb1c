"""``minerva-ai test``: run a model or prompt test, and read, compare and export past ones."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .options import (
    HelpGroup,
    State,
    limit_option,
    output_options,
    parsed_by,
    pass_state,
    render_list,
    sigterm_as_exit,
)

STATUSES = ("success", "error", "timeout")
EXPORT_FORMATS = ("json", "jsonl", "csv")


@click.group(name="test", cls=HelpGroup)
def test() -> None:
    """Run model and prompt tests and suites through the service; read, compare and export them.

    \b
    Examples:
      minerva-ai test run photo-tagging --input "a dog on a beach"
      minerva-ai test run summarizer --prompt summarize@3 --var agent_name=Ada --input-file t.txt
      minerva-ai test run photo-tagging --image cat.png --model suite-sim -o json
      minerva-ai test run photo-tagging --settings candidate.yaml --input "try me"
      minerva-ai test compare ID1 ID2
      minerva-ai test suite examples/suites/support-summarizer.yaml --junit report.xml
      minerva-ai test runs list --feature support-summarizer --fingerprint live
    """


def _history_filters(
    status: str | None, model: str | None, prompt: str | None, since: datetime | None
) -> dict[str, Any]:
    return {"status": status, "model": model, "prompt": prompt, "since": since}


def history_options(func: Any) -> Any:
    """``--status --model --prompt --since``: the filters of history and export."""
    for option in reversed(
        [
            click.option("--status", type=click.Choice(STATUSES), help="Only tests that ended so."),
            click.option("--model", metavar="MODEL", help="Only tests MODEL answered (or ended)."),
            click.option(
                "--prompt", metavar="NAME[@N]", help="Only tests of this prompt (any version)."
            ),
            click.option(
                "--since",
                metavar="TIME",
                callback=parsed_by("minerva_ai.core.timeparse:parse_time"),
                help="Only tests since TIME: 30s, 10m, 2h, 7d, or ISO 8601.",
            ),
        ]
    ):
        func = option(func)
    return func


@test.command(name="run")
@click.argument("feature")
@click.option("--input", "text", metavar="TEXT", help="The text to send (or the prompt's input).")
@click.option("--input-file", metavar="FILE", help="Read the text to send from FILE.")
@click.option(
    "--image",
    metavar="FILE|URL",
    help="An image: a local PNG/JPEG/GIF/WebP file (at most 5 MiB, sent as data), or an "
    "http(s) URL passed to the provider untouched.",
)
@click.option(
    "--prompt", metavar="NAME[@N]", help="Render this prompt of the settings (@N: of version N)."
)
@click.option(
    "--var",
    "variables",
    metavar="NAME=VALUE",
    multiple=True,
    callback=parsed_by("minerva_ai.cli.testrun:parse_var"),
    help="A prompt variable (repeatable).",
)
@click.option("--vars-file", metavar="FILE", help="Prompt variables from a YAML or JSON mapping.")
@click.option(
    "--model", metavar="MODEL", help="Test this model alone (default: primary, fallbacks)."
)
@click.option(
    "--settings",
    "settings_file",
    metavar="FILE",
    help="Candidate models/prompts sections (YAML or JSON) to try, not stored.",
)
@output_options
@pass_state
def test_run(
    state: State,
    feature: str,
    text: str | None,
    input_file: str | None,
    image: str | None,
    prompt: str | None,
    variables: list[tuple[str, str]] | None,
    vars_file: str | None,
    model: str | None,
    settings_file: str | None,
) -> None:
    """Call FEATURE's model once, through the service (which holds the provider keys).

    The response goes to stdout; the model, latency, tokens, cost and whether it was
    simulated to stderr (and what failed before the answer). -o json prints the whole
    result. Exit 0 when the model answered, 1 when it answered with an error or timed out
    (a failed test), 2 for a bad flag or local file, 3 when the service refused the test.
    """
    from minerva_ai.cli.testrun import (
        EXPORT_COLUMNS,
        build_request,
        check,
        read_input_file,
        summary,
    )

    if text is not None and input_file is not None:
        raise click.UsageError("give --input or --input-file, not both")
    if text is None and input_file is None and image is None and prompt is None:
        raise click.UsageError("say what to test: --input, --input-file, --image or --prompt")
    body = build_request(
        content=read_input_file(input_file) if input_file else text,
        image=image,
        prompt=prompt,
        variables=variables or [],
        vars_file=vars_file,
        model=model,
        settings_file=settings_file,
    )
    result = state.client().tests.run(feature, body)
    if state.output_format == "table":
        response = result["output"]["response"]
        if response is not None:
            click.echo(response)
        state.info(summary(result))
    else:
        state.output().item(result, EXPORT_COLUMNS)
    sys.stdout.flush()
    check(result)


@test.command(name="history")
@click.argument("feature")
@history_options
@limit_option
@output_options
@pass_state
def test_history(
    state: State,
    feature: str,
    status: str | None,
    model: str | None,
    prompt: str | None,
    since: datetime | None,
    limit: int | None,
) -> None:
    """FEATURE's tests, newest first."""
    from minerva_ai.cli.testrun import HISTORY_COLUMNS

    filters = _history_filters(status, model, prompt, since)
    render_list(
        state,
        lambda n: state.client().tests.history(feature, filters, limit=n),
        HISTORY_COLUMNS,
        state.limit(limit),
        empty="no tests match" if any(filters.values()) else "no tests yet",
    )


@test.command(name="show")
@click.argument("test_id", metavar="ID")
@output_options
@pass_state
def test_show(state: State, test_id: str) -> None:
    """One test: its result, prompt, model and attempts."""
    from minerva_ai.cli.testrun import EXPORT_COLUMNS

    state.output().item(state.client().tests.get(test_id), EXPORT_COLUMNS)


@test.command(name="compare")
@click.argument("left", metavar="ID")
@click.argument("right", metavar="ID")
@output_options
@pass_state
def test_compare(state: State, left: str, right: str) -> None:
    """Two tests side by side: model, status, latency, tokens, cost, and the output diff."""
    from minerva_ai.cli.output import Column
    from minerva_ai.cli.testrun import compare_rows, response_diff

    client = state.client()
    a, b = client.tests.get(left), client.tests.get(right)
    rows = compare_rows(a, b)
    diff = response_diff(a, b)
    out = state.output()
    if state.output_format in ("json", "yaml"):
        out.item({"left": a, "right": b, "fields": rows, "diff": diff}, [])
        return
    out.items(rows, [Column("field", "FIELD"), Column("left", left), Column("right", right)])
    if state.output_format == "table":
        out.write("\n".join(diff) if diff else "(the two responses are the same)")


@test.command(name="export")
@click.argument("feature")
@click.option(
    "-o",
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default=None,
    help="json (one array), jsonl (one result per line) or csv (a header row, one row per "
    "test). Default: from the --out suffix, else jsonl.",
)
@history_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to FILE instead of stdout: complete or not at all.",
)
@pass_state
def test_export(
    state: State,
    feature: str,
    fmt: str | None,
    status: str | None,
    model: str | None,
    prompt: str | None,
    since: datetime | None,
    out: Path | None,
) -> None:
    """Export FEATURE's tests, newest first, as JSON, JSONL or CSV.

    CSV cells that a spreadsheet would run as formulas (= + - @ tab CR) get a leading '.
    With --out, FILE appears only when the export is complete (written beside it under a
    temporary name, then renamed).
    """
    from minerva_ai.cli.logexport import AtomicFile
    from minerva_ai.cli.testrun import export_format, write_tests

    fmt = export_format(fmt, out)
    results = state.client().tests.history(
        feature, _history_filters(status, model, prompt, since), limit=None
    )
    with sigterm_as_exit():
        if out is not None:
            with AtomicFile(out) as sink:
                write_tests(sink, results, fmt)
        else:
            sys.stdout.flush()
            write_tests(sys.stdout.buffer, results, fmt)
            sys.stdout.buffer.flush()
    noun = "test" if len(results) == 1 else "tests"
    state.info(f"exported {len(results)} {noun}" + (f" to {out}" if out is not None else ""))


@test.command(name="suite")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Cases in flight at once (the feature's rate limits still apply).",
)
@click.option(
    "--filter",
    "filters",
    metavar="NAME_OR_TAG",
    multiple=True,
    help="Only the cases with this name (a glob: * ?) or tag (repeatable).",
)
@click.option(
    "--settings",
    "settings_file",
    metavar="FILE",
    help="Candidate models/prompts sections (YAML or JSON) to run the suite on: validated by "
    "the service, not stored, the live settings unchanged.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Call the models for every case: the shared cache is neither read nor written.",
)
@click.option(
    "--pass-rate",
    type=click.FloatRange(0, 100),
    metavar="PERCENT",
    help="Cases that must pass, in percent (default: the suite's pass_rate, else 100).",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(0, 3600),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="How long a case waits in all for the rate limit (429 Retry-After) before it is an error.",
)
@click.option(
    "--junit",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    metavar="FILE",
    help="Also write JUnit XML for CI (a testcase per case and matrix combination).",
)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(("table", "json")),
    default=None,
    help="table (the summary; default) or json (the whole run, one object).",
)
@pass_state
def test_suite(
    state: State,
    file: Path,
    concurrency: int,
    filters: tuple[str, ...],
    settings_file: str | None,
    no_cache: bool,
    pass_rate: float | None,
    max_wait: float,
    junit: Path | None,
    fmt: str | None,
) -> None:
    """Run the YAML test suite FILE through the service and gate on its pass rate.

    Cases run concurrently through POST /features/{id}/test, within the feature's limits;
    answers come from the service's shared cache unless --no-cache. Progress goes to stderr,
    a summary table (or -o json) to stdout. The run is stored (`test runs list`). The file
    format: docs/testing.md.

    \b
    Exit codes:
      0  the pass rate is met
      1  it is not, and at least one case failed its assertions
      5  it is not, and every case that did not pass is an error (no answer)
      2  a bad suite file or flag (before any case runs)
      4  the service cannot be reached at the start
      130  interrupted (after a partial summary)
    """
    from minerva_ai.cli.settings_edit import load_settings_file
    from minerva_ai.cli.suiterun import (
        Options,
        candidate_sections,
        check_writable,
        execute,
        show,
        totals_line,
        write_junit,
    )
    from minerva_ai.core.errors import GateError, GateFailed

    output_format = fmt or ("json" if state.output_format == "json" else "table")
    check_writable(junit)
    candidate = (
        candidate_sections(load_settings_file(settings_file), settings_file)
        if settings_file
        else None
    )
    opts = Options(
        path=file,
        concurrency=concurrency,
        filters=list(filters),
        candidate=candidate,
        cache=not no_cache,
        pass_rate=pass_rate,
        max_wait=max_wait,
    )
    resolved = state.resolved()
    finished = execute(
        resolved.url,
        resolved.token,
        opts,
        info=state.info,
        color=state.stderr_color(),
        log=state.debug if state.verbose else None,
    )
    from minerva_ai.cli.output import Output

    show(Output.create(output_format, sys.stdout, no_color=state.no_color), finished, output_format)
    sys.stdout.flush()
    if junit is not None:
        write_junit(junit, finished.run)
    if finished.stored_error:
        state.warn(f"the run was not stored: {finished.stored_error}")
    state.info(totals_line(finished.run))
    if finished.interrupted:
        state.info("interrupted: the summary shows the cases that finished")
        raise click.exceptions.Exit(130)
    status = finished.run["status"]
    if status == "failed":
        raise GateFailed("the suite failed: its pass rate is below the required one")
    if status == "error":
        raise GateError("the suite could not get answers for the cases it needs (errors only)")


@test.group(name="runs", cls=HelpGroup)
def test_runs() -> None:
    """Stored suite runs: list and show them."""


@test_runs.command(name="list")
@click.option("--feature", metavar="FEATURE", help="Only this feature's runs (name or id).")
@click.option("--suite-hash", metavar="HEX", help="Only runs of the suite with this hash.")
@click.option("--status", type=click.Choice(("passed", "failed", "error")))
@click.option(
    "--fingerprint",
    metavar="HEX|live",
    help="Only runs on these models and prompts; `live`: on the feature's current ones "
    "(needs --feature).",
)
@limit_option
@output_options
@pass_state
def test_runs_list(
    state: State,
    feature: str | None,
    suite_hash: str | None,
    status: str | None,
    fingerprint: str | None,
    limit: int | None,
) -> None:
    """Suite runs, newest first."""
    from minerva_ai.cli.suiterun import RUN_COLUMNS

    filters = {
        "feature_id": feature,
        "suite_hash": suite_hash,
        "status": status,
        "fingerprint": fingerprint,
    }
    render_list(
        state,
        lambda n: state.client().test_runs.list(filters, limit=n),
        RUN_COLUMNS,
        state.limit(limit),
        empty="no suite runs match" if any(filters.values()) else "no suite runs yet",
    )


@test_runs.command(name="show")
@click.argument("run_id", metavar="ID")
@output_options
@pass_state
def test_runs_show(state: State, run_id: str) -> None:
    """One suite run: its verdict, totals and every case."""
    from minerva_ai.cli.suiterun import RUN_COLUMNS

    state.output().item(state.client().test_runs.get(run_id), RUN_COLUMNS)
