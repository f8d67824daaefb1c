"""``minerva-ai features``: the feature registry and each feature's versioned settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from minerva_ai.cli.diff import render_diff, summarize_diff
from minerva_ai.cli.metricsview import LIST_METRICS_COLUMNS, SORT_KEYS
from minerva_ai.cli.output import Column, to_yaml
from minerva_ai.cli.settings_edit import (
    Assignment,
    load_settings_file,
    update_settings,
)
from minerva_ai.core.protocol import TRANSPORTS
from minerva_ai.core.settings_diff import diff_settings

from .options import (
    HelpGroup,
    State,
    limit_option,
    output_options,
    parsed_by,
    pass_state,
    render_list,
)

if TYPE_CHECKING:
    from minerva_ai.cli.metricsview import WatchPrinter
    from minerva_ai.client import Client
    from minerva_ai.client.realtime import Notice

F = TypeVar("F", bound=Callable[..., Any])

STATUSES = ("active", "inactive", "maintenance")
STATUS_STYLES = {"active": "green", "inactive": "dim", "maintenance": "yellow"}

FEATURE_COLUMNS = [
    Column("name", "NAME"),
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("display_name", "DISPLAY NAME"),
    Column("settings_version", "SETTINGS"),
    Column("updated_at", "UPDATED", kind="time"),
]
FEATURE_FIELDS = [
    Column("id", "ID"),
    Column("name", "NAME"),
    Column("display_name", "DISPLAY NAME"),
    Column("description", "DESCRIPTION"),
    Column("status", "STATUS", styles=STATUS_STYLES),
    Column("settings_version", "SETTINGS VERSION"),
    Column("created_at", "CREATED", kind="time"),
    Column("updated_at", "UPDATED", kind="time"),
]
SETTINGS_FIELDS = [
    Column("feature_id", "FEATURE ID"),
    Column("version", "VERSION"),
    Column("created_at", "CREATED", kind="time"),
    Column("author.token_name", "AUTHOR"),
    Column("settings", "SETTINGS"),
]
HISTORY_COLUMNS = [
    Column("version", "VERSION"),
    Column("created_at", "CREATED", kind="time"),
    Column("author.token_name", "AUTHOR"),
    Column("rollback_of", "ROLLBACK OF"),
    Column("diff", "CHANGES", render=summarize_diff),
]
DIFF_COLUMNS = [
    Column("path", "PATH"),
    Column("op", "OP"),
    Column("old", "OLD"),
    Column("new", "NEW"),
]


@click.group(name="features", cls=HelpGroup)
def features() -> None:
    """List, create and change AI features."""


def window_option(default: str, help: str) -> Callable[[F], F]:
    """``--window``: a whole number of minutes, hours or days, checked before any request."""
    return click.option(
        "--window",
        default=default,
        show_default=True,
        metavar="SPAN",
        callback=parsed_by("minerva_ai.cli.metricsview:parse_span"),
        help=help,
    )


def transport_option(func: F) -> F:
    option = click.option(
        "--transport",
        type=click.Choice(TRANSPORTS),
        default="auto",
        show_default=True,
        help="How to follow: auto tries WebSocket, then SSE, then polling.",
    )
    return option(func)


@features.command(name="list")
@click.option("--status", type=click.Choice(STATUSES), help="Only features with this status.")
@click.option("--search", metavar="TEXT", help="Only features whose name or text contains TEXT.")
@click.option(
    "--with-metrics", is_flag=True, help="Add each feature's health score, trend and status."
)
@window_option("5m", "With --with-metrics: the window of the figures (5m, 1h, 1d).")
@limit_option
@output_options
@pass_state
def features_list(
    state: State,
    status: str | None,
    search: str | None,
    with_metrics: bool,
    window: str,
    limit: int | None,
) -> None:
    """List the organization's features, by name.

    --with-metrics adds HEALTH (the health score, 0-100), TREND (up, down or flat against
    the window before), HEALTH STATUS (healthy, warning, error, or no_data without
    requests in the window; an open critical alert makes it error, a warning one at least
    warning) and ALERTS (open alerts); -o json adds each feature's metrics object.
    """
    client = state.client()
    render_list(
        state,
        lambda n: client.features.list(
            status=status,
            search=search,
            include_metrics=with_metrics,
            window=window if with_metrics else None,
            limit=n,
        ),
        FEATURE_COLUMNS + (LIST_METRICS_COLUMNS if with_metrics else []),
        state.limit(limit),
        empty="no feature matches"
        if status or search
        else "no features yet: create one with `minerva-ai features create NAME`",
    )


@features.command(name="show")
@click.argument("feature")
@output_options
@pass_state
def features_show(state: State, feature: str) -> None:
    """Show one feature (by name or id)."""
    state.output().item(state.client().features.get(feature), FEATURE_FIELDS)


@features.command(name="create")
@click.argument("name")
@click.option("--display-name", help="A human-readable name.")
@click.option("--description", help="What the feature does.")
@click.option("--status", type=click.Choice(STATUSES), help="Initial status (default: active).")
@output_options
@pass_state
def features_create(
    state: State, name: str, display_name: str | None, description: str | None, status: str | None
) -> None:
    """Create feature NAME (a slug: lowercase letters, digits, - and _)."""
    created = state.client().features.create(
        name, display_name=display_name, description=description, status=status
    )
    state.info(f"created feature {created['name']}")
    state.output().item(created, FEATURE_FIELDS)


def _status_command(name: str, status: str, summary: str) -> click.Command:
    @output_options
    @click.argument("feature")
    @pass_state
    def command(state: State, feature: str) -> None:
        updated = state.client().features.update(feature, status=status)
        state.info(f"feature {updated['name']} is now {status}")
        state.output().item(updated, FEATURE_FIELDS)

    command.__doc__ = summary
    return features.command(name=name)(command)


features_enable = _status_command("enable", "active", "Set a feature's status to active.")
features_disable = _status_command("disable", "inactive", "Set a feature's status to inactive.")
features_maintenance = _status_command(
    "maintenance", "maintenance", "Set a feature's status to maintenance."
)


@features.command(name="delete")
@click.argument("feature")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_options
@pass_state
def features_delete(state: State, feature: str, yes: bool) -> None:
    """Delete a feature and its settings history. Asks first on a terminal."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to delete without --yes when stdin is not a terminal")
        question = f"Delete feature {feature!r} and its settings history?"
        if not click.confirm(question, default=False, err=True):
            state.info("nothing deleted")
            return
    deleted = state.client().features.delete(feature)
    state.info(f"deleted feature {deleted.get('name', feature)}")
    state.output().item(deleted, [Column("id", "ID"), Column("name", "NAME")], text=lambda: "")


@features.command(name="metrics")
@click.argument("feature")
@window_option("1h", "The figures over the last SPAN: 5m, 1h, 7d (whole minutes, hours or days).")
@click.option(
    "--step",
    default="1m",
    show_default=True,
    metavar="SPAN",
    callback=parsed_by("minerva_ai.cli.metricsview:parse_span"),
    help="The series' step, 1m to 1d (sparklines, -o json|jsonl|csv).",
)
@click.option("--by", type=click.Choice(["model"]), help="Split the figures by model.")
@click.option("--include-tests", is_flag=True, help="Count test traffic (source test) too.")
@click.option("--watch", is_flag=True, help="Then print each live update, until Ctrl-C.")
@transport_option
@output_options
@pass_state
def features_metrics(
    state: State,
    feature: str,
    window: str,
    step: str,
    by: str | None,
    include_tests: bool,
    watch: bool,
    transport: str,
) -> None:
    """Show a feature's metrics, with sparklines on a terminal.

    Requests, success and error rates, latency percentiles, cost, tokens, health score,
    trend and status over the last --window.

    On a terminal, a sparkline per series (requests, errors, p95) over the window, by
    --step, follows the figures; --by model adds a row per model. Piped: `field<TAB>value`
    lines (with --by model: a row per model), no header. -o json|yaml print the series
    (the points per step, and per model with --by model); -o csv|jsonl a row per point.

    --watch prints a line per live update (every few seconds; the service's
    MINERVA_METRICS_INTERVAL) over the WebSocket, else SSE, else polling; -o json|jsonl:
    an object per update.
    """
    from minerva_ai.cli import metricsview as view

    output = state.output()
    if watch:
        if output.format not in ("table", "json", "jsonl"):
            raise click.BadParameter(
                f"--watch prints table, json or jsonl, not {output.format}",
                param_hint="'-o' / '--format'",
            )
        printer = view.WatchPrinter(
            output.stream,
            tty=output.tty,
            color=output.color,
            utc=state.utc,
            json=output.format != "table",
        )
        _watch_metrics(state, printer, feature, window, transport)
        return
    client = state.client()
    if output.format != "table":
        series = _series(client, feature, window, step, by, include_tests)
        if output.format in ("json", "yaml"):
            output.item(series, [])
        else:
            columns = view.MODEL_SERIES_COLUMNS if by else view.SERIES_COLUMNS
            output.items(view.series_rows(series), columns)
        return
    current = client.metrics.current(feature, window=window, by=by, include_tests=include_tests)
    models = current.get("models") or []
    if not output.tty:
        if by:
            output.items(models, view.MODEL_COLUMNS)
        else:
            output.item(current, view.CURRENT_FIELDS)
        return
    output.item(current, view.CURRENT_FIELDS)
    series = _series(client, feature, window, step, None, include_tests)
    output.write(f"\nover the last {window}, per {series.get('step') or step}:")
    output.write(view.sparkline_table(series.get("points") or []))
    if by:
        output.write("\nby model:")
        output.items(models, view.MODEL_COLUMNS)


def _series(
    client: Client, feature: str, window: str, step: str, by: str | None, include_tests: bool
) -> dict[str, Any]:
    from minerva_ai.cli.metricsview import span_minutes

    since = datetime.now(UTC) - timedelta(minutes=span_minutes(window))
    return client.metrics.series(
        feature, since=since, step=step, by=by, include_tests=include_tests
    )


def _watch_metrics(
    state: State, printer: WatchPrinter, feature: str, window: str, transport: str
) -> None:
    import asyncio
    import contextlib

    from minerva_ai.client import AsyncClient
    from minerva_ai.client.metrics_follow import follow_metrics

    def notice(event: Notice) -> None:
        if event.kind == "connected":
            state.debug(event.message)
        elif event.kind == "lost":
            state.warn(event.message)
        else:
            state.info(event.message)

    async def run() -> None:
        resolved = state.resolved()
        log = state.debug if state.verbose else None
        async with AsyncClient(resolved.url, resolved.token, log=log) as client:
            await client.metrics.current(feature, window=window)  # exists, window accepted
            state.info(f"# {feature}: metrics over the last {window}, live (Ctrl-C to stop)")
            updates = follow_metrics(
                client, feature, window=window, transport=transport, on_notice=notice
            )
            async with contextlib.aclosing(updates):
                async for update in updates:
                    printer.update(update)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


@features.command(name="top")
@window_option("5m", "The figures over the last SPAN: 5m, 1h, 1d.")
@click.option(
    "--sort",
    type=click.Choice(SORT_KEYS),
    default="status",
    show_default=True,
    help="The first order (worst status, name, busiest, most errors, slowest, dearest).",
)
@transport_option
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="When neither WebSocket nor SSE is offered: seconds between two reads.",
)
@output_options
@pass_state
def features_top(
    state: State, window: str, sort: str, transport: str, poll_interval: float
) -> None:
    """Every feature's live metrics, full screen, sorted by a key press.

    Status, requests per minute, error rate, p95 latency, cost, health score, trend and
    open alerts (once alerts exist).

    \b
    Keys (sorting: the worst, busiest, slowest or dearest first; the same key again
    reverses the order):
      s  status     n  name     r  requests per minute
      e  errors     p  p95      c  cost
      q  quit (Ctrl-C too): the terminal is restored as it was

    Updates come live over the WebSocket, else SSE, else by polling. When stdout is not a
    terminal (or is a dumb one: TERM=dumb; or with -o), prints one snapshot and exits 0,
    like `top -b`: TSV without a header when piped, or -o json|jsonl|csv|yaml. Honours
    --no-color and NO_COLOR; the status is always a word.
    """
    from minerva_ai.cli import metricsview as view

    output = state.output()
    if not output.tty or output.format != "table" or os.environ.get("TERM") == "dumb":
        from minerva_ai.client.metrics_follow import overview

        items = state.client().features.list(include_metrics=True, window=window)
        snapshot = overview(window, items)
        output.items(view.sort_features(snapshot["features"], sort), view.TOP_COLUMNS)
        return
    from minerva_ai.cli.top import run_top

    resolved = state.resolved()
    run_top(
        resolved.url,
        resolved.token,
        window=window,
        sort=sort,
        transport=transport,
        poll_interval=poll_interval,
        color=output.color,
        utc=state.utc,
        log=state.debug if state.verbose else None,
    )


@features.group(name="settings", cls=HelpGroup)
def features_settings() -> None:
    """Read, change, compare and roll back a feature's versioned settings."""


@features_settings.command(name="get")
@click.argument("feature")
@click.option("--version", "version", type=click.IntRange(min=1), help="An older version.")
@output_options
@pass_state
def settings_get(state: State, feature: str, version: int | None) -> None:
    """Print a feature's settings: YAML that `settings set` accepts back.

    -o json|yaml print the whole settings object (version, author, time).
    """
    client = state.client()
    current = client.settings.version(feature, version) if version else client.settings.get(feature)
    author = (current.get("author") or {}).get("token_name")
    by = f" by token {author!r}" if author else ""
    state.info(f"# {feature}: settings version {current['version']}{by}")
    state.output().item(current, SETTINGS_FIELDS, text=lambda: to_yaml(current["settings"]))


def _print_changes(state: State, changes: list[dict[str, Any]], result: dict[str, Any]) -> None:
    output = state.output()
    output.item(result, SETTINGS_FIELDS, text=lambda: render_diff(changes, color=output.color))


@features_settings.command(name="set")
@click.argument("feature")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="PATH=VALUE",
    callback=parsed_by("minerva_ai.cli.settings_edit:parse_assignment"),
    help="Set one field, e.g. rate_limits.requests_per_minute=100 (value read as YAML).",
)
@click.option("--dry-run", is_flag=True, help="Show the diff; write nothing.")
@output_options
@pass_state
def settings_set(
    state: State, feature: str, file: str | None, assignments: list[Assignment], dry_run: bool
) -> None:
    """Change a feature's settings: sections from FILE (YAML or JSON, - = stdin), fields
    with --set, or both. Sections absent from FILE are kept.

    The change is made on the version just read; if someone wrote in between, it is read
    again and re-applied once. -o json prints the new version's settings object.
    """
    if file is None and not assignments:
        raise click.UsageError("give a settings FILE (or - for stdin), --set PATH=VALUE, or both")
    replace = load_settings_file(file) if file is not None else None
    update = update_settings(
        state.client(), feature, replace=replace, assignments=assignments, dry_run=dry_run
    )
    base = update.before["version"]
    if update.attempts > 1:
        state.info(f"the settings changed meanwhile; re-applied on version {base}")
    if dry_run:
        state.info(f"dry run: {len(update.changes)} change(s) to version {base}; nothing written")
        preview = {"dry_run": True, "version": base, "diff": update.changes}
        _print_changes(state, update.changes, {**preview, "settings": update.sections})
    elif update.after is None:
        state.info(f"no changes: settings stay at version {base}")
        _print_changes(state, [], update.before)
    else:
        state.info(f"{feature}: settings version {base} -> {update.after['version']}")
        _print_changes(state, update.changes, update.after)


@features_settings.command(name="history")
@click.argument("feature")
@limit_option
@output_options
@pass_state
def settings_history(state: State, feature: str, limit: int | None) -> None:
    """List a feature's settings versions, newest first, with what each changed."""
    settings = state.client().settings
    render_list(
        state, lambda n: settings.history(feature, limit=n), HISTORY_COLUMNS, state.limit(limit)
    )


@features_settings.command(name="rollback")
@click.argument("feature")
@click.option(
    "--to", "version", type=click.IntRange(min=1), required=True, help="The version to restore."
)
@output_options
@pass_state
def settings_rollback(state: State, feature: str, version: int) -> None:
    """Make a new version whose settings equal those of an older one."""
    client = state.client()
    before = client.settings.get(feature)
    after = client.settings.rollback(feature, version)
    state.info(f"{feature}: rolled back to version {version} as version {after['version']}")
    _print_changes(state, diff_settings(before["settings"], after["settings"]), after)


@features_settings.command(name="watch")
@click.argument("feature")
@output_options
@pass_state
def settings_watch(state: State, feature: str) -> None:
    """Print each new version of a feature's settings as it is written, until Ctrl-C.

    A line per version (`photo-tagging: settings version 5 by token 'ci'`); -o json, jsonl
    or yaml print each settings object instead. A version written while the connection was
    down, or while this reader fell behind, is printed once it is read again: the last
    line is always the latest version, and none is printed twice.
    """
    import asyncio

    from minerva_ai.client import AsyncClient

    output = state.output()

    def show(update: dict[str, Any]) -> None:
        if output.format in ("json", "jsonl", "yaml"):
            output.item(update, SETTINGS_FIELDS)
        else:
            author = (update.get("author") or {}).get("token_name")
            by = f" by token {author!r}" if author else ""
            output.write(f"{feature}: settings version {update['version']}{by}")
        output.stream.flush()

    async def run() -> None:
        resolved = state.resolved()
        log = state.debug if state.verbose else None
        async with AsyncClient(resolved.url, resolved.token, log=log) as client:
            current = await client.get_settings(feature)  # a feature that exists, reachable
            state.info(
                f"# {feature}: settings version {current['version']}; "
                "watching for new versions (Ctrl-C to stop)"
            )
            async for update in client.watch_settings(feature):
                show(update)

    asyncio.run(run())


@features_settings.command(name="diff")
@click.argument("feature")
@click.argument("old_version", required=False, type=click.IntRange(min=1), metavar="[V1]")
@click.argument("new_version", required=False, type=click.IntRange(min=1), metavar="[V2]")
@click.option("--file", "file", metavar="FILE", help="Compare the live settings with FILE.")
@output_options
@pass_state
def settings_diff(
    state: State,
    feature: str,
    old_version: int | None,
    new_version: int | None,
    file: str | None,
) -> None:
    """Compare versions V1 and V2 (V2 defaults to the live version), or the live settings
    with FILE (what `settings set FEATURE FILE` would change)."""
    if (file is None) == (old_version is None):
        raise click.UsageError("give versions V1 [V2], or --file FILE")
    client = state.client()
    if file is not None:
        changes = update_settings(
            client, feature, replace=load_settings_file(file), dry_run=True
        ).changes
    else:
        assert old_version is not None
        old = client.settings.version(feature, old_version)["settings"]
        newer = client.settings.version(feature, new_version) if new_version else None
        new = (newer or client.settings.get(feature))["settings"]
        changes = diff_settings(old, new)
    output = state.output()
    output.items(changes, DIFF_COLUMNS, text=lambda: render_diff(changes, color=output.color))
