"""``minerva-ai readiness-check``: run the checks of a readiness.yaml; gate a release."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from minerva_ai.core.errors import ConfigError

from .options import State, output_options, pass_state

if TYPE_CHECKING:
    from minerva_ai.readiness.model import Result, Status
    from minerva_ai.readiness.runner import Run

REPORTS = ("json", "junit", "md", "github")
COLORS = {"pass": "green", "warn": "yellow", "fail": "red", "error": "magenta", "skip": "dim"}


def _report(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, Path | None]]:
    parsed: list[tuple[str, Path | None]] = []
    for value in values:
        kind, _, target = value.partition("=")
        if kind not in REPORTS:
            raise click.BadParameter(f"{value!r}: one of junit=FILE, json=FILE, md=FILE, github")
        if kind == "github":
            if target:
                raise click.BadParameter("github takes no file: annotations go to the log")
            parsed.append((kind, None))
        elif not target:
            raise click.BadParameter(f"{kind} needs a file: --report {kind}=FILE")
        else:
            parsed.append((kind, Path(target)))
    return parsed


def _names(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@click.group(name="readiness-check", invoke_without_command=True)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The checks to run (default: readiness.yaml in the current directory).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Checks run at once.",
)
@click.option(
    "--only",
    multiple=True,
    callback=_names,
    metavar="NAME",
    help="Run only these checks (repeatable, or comma-separated).",
)
@click.option(
    "--skip",
    multiple=True,
    callback=_names,
    metavar="NAME",
    help="Leave these checks out (repeatable, or comma-separated).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="warn: a warning fails the gate too.",
)
@click.option(
    "--report",
    "reports",
    multiple=True,
    callback=_report,
    metavar="KIND[=FILE]",
    help="Also report as junit=FILE, json=FILE, md=FILE, or github (annotations, and the "
    "Markdown summary appended to $GITHUB_STEP_SUMMARY when set); repeatable.",
)
@output_options
@pass_state
@click.pass_context
def readiness_check(
    ctx: click.Context,
    state: State,
    config: Path | None,
    jobs: int,
    only: list[str],
    skip: list[str],
    fail_on: str,
    reports: list[tuple[str, Path | None]],
) -> None:
    """Run release checks from a readiness.yaml; pass, warn, fail or error for each.

    Checks: build, coverage, docs, sizes, the live service's health, SLOs and alerts,
    suites, load, settings drift, dependency audit.

    Checks run in parallel (-j), each within its timeout (a command that hangs is killed
    with its process group). The table goes to stdout, ending with "N passed, N warnings,
    N failed, N errors"; -o json prints the JSON report instead. Ctrl-C stops the run and
    prints what was gathered. File format, check types, reporters: docs/readiness.md.

    \b
    Examples:
      minerva-ai readiness-check
      minerva-ai readiness-check -c ci/readiness.yaml --skip load --report junit=readiness.xml
      minerva-ai readiness-check --report github --report md=readiness.md --fail-on warn
      minerva-ai readiness-check init          # write a commented readiness.yaml

    \b
    Exit: 0 ready (warnings allowed unless --fail-on warn); 1 a check failed; 5 nothing
    failed but a check could not be evaluated (error); 2 a bad config (before any check
    runs); 130 Ctrl-C (after the partial report). An unreachable service is an error of
    the checks that need it, never exit 4.
    """
    if ctx.invoked_subcommand is not None:
        return
    from minerva_ai.readiness.config import find_config, load_config
    from minerva_ai.readiness.registry import needs_service
    from minerva_ai.readiness.runner import run_checks, select
    from minerva_ai.readiness.spec import Context

    if state.output_format not in ("table", "json"):
        raise click.BadParameter("readiness-check prints table or json", param_hint="'-o'")
    path = find_config(config)
    loaded = load_config(path)
    chosen, skipped = select(loaded.checks, only, skip)
    context = Context(Path.cwd())
    if any(needs_service(spec) for spec in chosen):
        resolved = state.resolved()
        context.url, context.token = resolved.url, resolved.token
    state.info(f"readiness-check: {len(chosen)} check(s) from {path}, {jobs} at a time")
    run = run_checks(chosen, context, jobs=jobs, skipped=skipped, on_result=_progress(state))
    run.config = str(path)
    _emit(state, run, fail_on, reports)
    code = run.exit_code(fail_on)
    if run.interrupted:
        click.echo("interrupted", err=True)
    raise click.exceptions.Exit(code)


def _progress(state: State) -> Callable[[Result], None]:
    def show(result: Result) -> None:
        if state.verbose:
            click.echo(
                f"  {result.status.value}: {result.name} ({result.duration_ms} ms)", err=True
            )

    return show


def _emit(state: State, run: Run, fail_on: str, reports: list[tuple[str, Path | None]]) -> None:
    from minerva_ai.readiness import reporters

    json_out = state.output_format == "json"
    for kind, target in reports:
        if kind == "github":
            click.echo(reporters.github_annotations(run), nl=False, err=json_out)
            summary = os.environ.get("GITHUB_STEP_SUMMARY")
            if summary:
                _write(Path(summary), reporters.markdown_report(run, fail_on), append=True)
            continue
        assert target is not None
        if kind == "json":
            _write(target, reporters.json_report(run))
        elif kind == "junit":
            _write(target, reporters.junit_report(run))
        else:
            _write(target, reporters.markdown_report(run, fail_on))
    if json_out:
        click.echo(reporters.json_report(run), nl=False)
    else:
        click.echo(reporters.text_report(run, fail_on, _painter(state)))
    sys.stdout.flush()


def _painter(state: State) -> Callable[[str, Status], str] | None:
    from minerva_ai.cli.output import color_enabled, style

    if not color_enabled(sys.stdout, no_color=state.no_color):
        return None

    def paint(text: str, status: Status) -> str:
        return style(text, COLORS[status.value], enabled=True)

    return paint


def _write(path: Path, text: str, *, append: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if append else "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror or exc}") from None


@readiness_check.command(name="init")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("readiness.yaml"),
    show_default=True,
    help="Where to write it ('-' for stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def readiness_init(out: Path, force: bool) -> None:
    """Write a commented starter readiness.yaml."""
    from minerva_ai.readiness.starter import STARTER

    if str(out) == "-":
        click.echo(STARTER, nl=False)
        return
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: give --force to overwrite it, or --out FILE")
    _write(out, STARTER)
    click.echo(f"wrote {out}: edit it, then run `minerva-ai readiness-check`", err=True)
