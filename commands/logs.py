"""``minerva-ai logs``: send log entries, tail and follow them, export them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click

from minerva_ai.cli.logview import LOG_FORMATS
from minerva_ai.cli.output import counted
from minerva_ai.core.errors import PartlyRejected
from minerva_ai.core.protocol import EXPORT_FORMATS, TRANSPORTS

from .options import (
    HelpGroup,
    Progress,
    State,
    output_options,
    parsed_by,
    pass_state,
    sigterm_as_exit,
)

if TYPE_CHECKING:
    from minerva_ai.cli.logingest import IngestSummary
    from minerva_ai.cli.logview import LogPrinter
    from minerva_ai.client import Client
    from minerva_ai.client.realtime import Notice

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LINES = 100
REJECTED_SHOWN = 50


@click.group(name="logs", cls=HelpGroup)
def logs() -> None:
    """Send, tail, follow and export log entries.

    \b
    Examples:
      minerva-ai logs tail -f --level warn+            follow warnings and worse
      minerva-ai logs tail photo-tagging -n 20 --grep 'timeout|5\\d\\d'
      tail -F app.log | minerva-ai logs ingest -       ship an NDJSON log as it grows
      minerva-ai logs export -o csv --since 1d --out logs.csv
    """


# ------------------------------------------------------------------ shared options


def filter_options(*, until: bool) -> Callable[[F], F]:
    """``--since [--until] --level --grep --source --request-id``, checked before any request."""
    options = [
        click.option(
            "--since",
            metavar="TIME",
            callback=parsed_by("minerva_ai.core.timeparse:parse_time"),
            help="Only entries timestamped at or after TIME: 30s, 10m, 2h, 7d, or ISO 8601 "
            "(no offset = local time).",
        ),
        click.option(
            "--level",
            "levels",
            metavar="LEVELS",
            callback=parsed_by("minerva_ai.core.loglevels:expand"),
            help="error,warn: exactly these levels; warn+: that level and above. Levels: "
            "debug, info, warn, error, critical (WARNING-style aliases accepted).",
        ),
        click.option(
            "--grep",
            metavar="REGEX",
            callback=parsed_by("minerva_ai.core.logregex:check", keep=True),
            help="Only messages matching REGEX (case-sensitive; the dialect of "
            "docs/api/README.md: no \\b, no (?...) groups).",
        ),
        click.option("--source", metavar="SOURCE", help="Only entries from SOURCE."),
        click.option("--request-id", metavar="ID", help="Only entries of this request id."),
    ]
    if until:
        options.insert(
            1,
            click.option(
                "--until",
                metavar="TIME",
                callback=parsed_by("minerva_ai.core.timeparse:parse_time"),
                help="Only entries before TIME.",
            ),
        )

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _filters(
    feature: str | None,
    levels: list[str] | None,
    grep: str | None,
    source: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    return {
        "feature": feature,
        "level": levels,
        "q": grep,
        "source": source,
        "request_id": request_id,
    }


# ------------------------------------------------------------------ ingest


def _summary_text(summary: IngestSummary) -> str:
    return (
        f"stored {summary.stored:,}, duplicates {summary.duplicates:,}, "
        f"rejected {len(summary.rejected):,} (of {counted(summary.entries, 'entry', 'entries')})"
    )


def _report_ingest(state: State, summary: IngestSummary, progress: Progress) -> None:
    progress.clear()
    state.info(_summary_text(summary))
    for problem in summary.rejected[:REJECTED_SHOWN]:
        where = f"line {problem['line']}" if problem["line"] else "an entry"
        field = f"{problem['field']}: " if problem["field"] else ""
        click.echo(f"  {where}: {field}{problem['error']}", err=True)
    hidden = len(summary.rejected) - REJECTED_SHOWN
    if hidden > 0:
        click.echo(f"  ... and {hidden:,} more (-o json lists them all)", err=True)


@logs.command(name="ingest")
@click.argument("file", type=click.File("rb"), metavar="FILE|-")
@output_options
@pass_state
def logs_ingest(state: State, file: BinaryIO) -> None:
    """Send log entries from an NDJSON file (- = stdin).

    FILE holds one JSON object per line. An entry: timestamp (ISO 8601 with an offset),
    feature (name or id), level, message, source, and optionally id, request_id, model,
    latency_ms, tokens_in, tokens_out, cost, status (success, error, timeout) and
    attributes (an object). Entries without an id get one before they are first sent,
    so a retried batch is never stored twice.

    Entries are sent every second or every 1,000 entries, whichever comes first:
    `tail -F app.log | minerva-ai logs ingest -` delivers a trickle promptly. Progress
    goes to stderr on a terminal (or with -v); at the end, the counts of stored,
    duplicate and rejected entries, and each rejected entry by its line number.
    -o json prints {entries, stored, duplicates, rejected: [{line, field, error}],
    cursor} on stdout instead. Exit 0 when every entry was stored or was a duplicate,
    3 when any was rejected (a malformed line rejects only itself).
    """
    from minerva_ai.cli.logingest import NdjsonIngest

    progress = Progress(state)
    ingest = NdjsonIngest(state.client(), on_progress=lambda s: progress.update(_summary_text(s)))
    try:
        summary = ingest.run(file)
    except BaseException:
        _report_ingest(state, ingest.summary, progress)
        raise
    if state.output_format in ("json", "jsonl", "yaml"):
        progress.clear()
        state.output().item(summary.as_dict(), [])
    else:
        _report_ingest(state, summary, progress)
    if summary.rejected:
        raise PartlyRejected(
            f"{len(summary.rejected):,} of {counted(summary.entries, 'entry', 'entries')} "
            + ("was" if summary.entries == 1 else "were")
            + " rejected"
        )


# ------------------------------------------------------------------ tail


def _tail_format(state: State, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    if state.output_format in ("json", "jsonl"):
        return state.output_format
    if state.output_format == "table":
        return "text"
    raise click.BadParameter(
        f"logs tail prints text, json or jsonl, not {state.output_format}",
        param_hint="'-o' / '--format'",
    )


def _history_limit(lines: int | None, since: datetime | None) -> int:
    if lines is not None:
        return lines
    return 0 if since is not None else DEFAULT_LINES


@logs.command(name="tail")
@click.argument("feature", required=False)
@click.option(
    "-f", "--follow", is_flag=True, help="Then print new entries as they commit, until Ctrl-C."
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=None,
    help=f"Print the last N entries first (default {DEFAULT_LINES}; 0 = none; with --since "
    "and no -n: every entry since then).",
)
@filter_options(until=False)
@click.option(
    "-o",
    "--format",
    "fmt",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="text (one line per entry, the default, piped or not), json or jsonl.",
)
@click.option("--utc", is_flag=True, help="Show times in UTC on a terminal too.")
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="auto",
    show_default=True,
    help="How -f follows: auto tries WebSocket, then SSE, then polling.",
)
@pass_state
def logs_tail(
    state: State,
    feature: str | None,
    follow: bool,
    lines: int | None,
    since: datetime | None,
    levels: list[str] | None,
    grep: str | None,
    source: str | None,
    request_id: str | None,
    fmt: str | None,
    utc: bool,
    transport: str,
) -> None:
    """Print the latest entries; with -f, follow new ones live.

    Prints the last entries of FEATURE (default: every feature), oldest first.

    text: time (local on a terminal, UTC otherwise or with --utc), level (coloured
    on a terminal only), feature, source, message, then latency=, tokens=in/out,
    cost= and status= when set. A message stays on one line: a newline shows as ⏎,
    other control characters as escapes (\\t, \\x1b). json: one array (with -f, one
    object per line); jsonl: one object per line: the entries as the API returns them.

    With -f, each entry is flushed as it is printed. On any disconnect it reconnects
    with backoff, says so on stderr, and resumes after the last entry printed: nothing
    is lost or repeated, across restarts and instances. Entries that retention dropped
    before they could be shown are announced as a gap (in the text, or on stderr for
    json/jsonl). Ctrl-C ends it (exit 130).
    """
    from minerva_ai.cli.logview import LogPrinter

    printer = LogPrinter.create(
        _tail_format(state, fmt),
        sys.stdout,
        no_color=state.no_color,
        utc=state.utc or utc,
        follow=follow,
    )
    filters = _filters(feature, levels, grep, source, request_id)
    try:
        client = state.client()
        start = _head(client) if follow else None
        limit = _history_limit(lines, since)
        history = [] if lines == 0 else client.logs.list({**filters, "since": since}, limit=limit)
        history.reverse()
        printer.history(history)
        if follow:
            after = str(history[-1]["cursor"]) if history else start
            _follow(state, printer, after, feature, filters, transport)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


def _head(client: Client) -> str:
    """The newest cursor before the history is read: with nothing to show, follow from it."""
    from minerva_ai.client.realtime import BEGINNING

    newest = client.logs.list(limit=1)
    return str(newest[0]["cursor"]) if newest else BEGINNING


def _follow(
    state: State,
    printer: LogPrinter,
    after: str | None,
    feature: str | None,
    filters: dict[str, Any],
    transport: str,
) -> None:
    import asyncio
    import contextlib

    from minerva_ai.client import AsyncClient
    from minerva_ai.client.realtime import follow_logs

    live_filters = {k: v for k, v in filters.items() if k != "feature"}

    def notice(event: Notice) -> None:
        if event.kind == "connected":
            state.debug(event.message)
        elif event.kind in ("lost", "overflow"):
            state.warn(event.message)
        else:
            state.info(event.message)

    def gap(data: dict[str, Any]) -> None:
        message = printer.gap(data)
        if printer.format != "text":
            state.warn(message)

    async def run() -> None:
        resolved = state.resolved()
        log = state.debug if state.verbose else None
        async with AsyncClient(resolved.url, resolved.token, log=log) as client:
            entries = follow_logs(
                client,
                after,
                feature=feature,
                filters=live_filters,
                transport=transport,
                on_notice=notice,
                on_gap=gap,
            )
            async with contextlib.aclosing(entries):
                async for entry in entries:
                    printer.entry(entry)

    asyncio.run(run())


# ------------------------------------------------------------------ export


def _export_format(state: State, fmt: str | None, out: Path | None) -> str:
    if fmt is not None:
        return fmt
    if state.output_format in EXPORT_FORMATS:
        return state.output_format
    if state.output_format != "table":
        raise click.BadParameter(
            f"logs export writes json, jsonl or csv, not {state.output_format}",
            param_hint="'-o' / '--format'",
        )
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    suffix = "jsonl" if suffix == "ndjson" else suffix
    return suffix if suffix in EXPORT_FORMATS else "jsonl"


@logs.command(name="export")
@click.argument("feature", required=False)
@click.option(
    "-o",
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default=None,
    help="json (one array), jsonl (one object per line) or csv (a header row). Default: "
    "from the --out suffix, else jsonl.",
)
@filter_options(until=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to FILE instead of stdout: complete or not at all.",
)
@click.option(
    "--csv-raw",
    is_flag=True,
    help="CSV: leave cells starting with = + - @ tab or CR as they are (by default they "
    "get a leading ' so a spreadsheet does not run them as formulas).",
)
@pass_state
def logs_export(
    state: State,
    feature: str | None,
    fmt: str | None,
    since: datetime | None,
    until: datetime | None,
    levels: list[str] | None,
    grep: str | None,
    source: str | None,
    request_id: str | None,
    out: Path | None,
    csv_raw: bool,
) -> None:
    """Export matching entries as JSON, JSONL or CSV.

    Every entry of FEATURE (default: every feature) that matches, oldest first. Streams
    any size in constant memory, to stdout or to --out FILE. FILE appears only
    when the export is complete: it is written under a temporary name beside it and
    renamed at the end; an interrupted or failed export leaves nothing behind. Progress
    goes to stderr on a terminal (or with -v); at the end, the number of entries
    (counted by parsing the output: a CSV message may span lines).
    """
    from minerva_ai.cli.logexport import AtomicFile, write_export

    fmt = _export_format(state, fmt, out)
    filters = {
        **_filters(feature, levels, grep, source, request_id),
        "since": since,
        "until": until,
    }
    progress = Progress(state)

    def tick(entries: int, written: int) -> None:
        progress.update(
            f"exported {counted(entries, 'entry', 'entries')} ({written / 1e6:,.1f} MB)"
        )

    chunks = state.client().logs.export(fmt, filters, csv_raw=csv_raw)
    with sigterm_as_exit():
        if out is not None:
            with AtomicFile(out) as sink:
                count = write_export(sink, chunks, fmt, tick)
        else:
            sys.stdout.flush()
            count = write_export(sys.stdout.buffer, chunks, fmt, tick)
            sys.stdout.buffer.flush()
    progress.clear()
    state.info(
        f"exported {counted(count, 'entry', 'entries')}" + (f" to {out}" if out is not None else "")
    )
