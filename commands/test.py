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
    """Run model and prompt tests through the service; read, compare and export them.

    \b
    Examples:
      minerva-ai test run photo-tagging --input "a dog on a beach"
      minerva-ai test run summarizer --prompt summarize@3 --var agent_name=Ada --input-file t.txt
      minerva-ai test run photo-tagging --image cat.png --model suite-sim -o json
      minerva-ai test run photo-tagging --settings candidate.yaml --input "try me"
      minerva-ai test compare ID1 ID2
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
