"""``minerva-ai features``: the feature registry and each feature's versioned settings."""

from __future__ import annotations

import sys
from typing import Any

import click

from minerva_ai.cli.diff import render_diff, summarize_diff
from minerva_ai.cli.output import Column, to_yaml
from minerva_ai.cli.settings_edit import (
    Assignment,
    load_settings_file,
    update_settings,
)
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


@features.command(name="list")
@click.option("--status", type=click.Choice(STATUSES), help="Only features with this status.")
@click.option("--search", metavar="TEXT", help="Only features whose name or text contains TEXT.")
@limit_option
@output_options
@pass_state
def features_list(state: State, status: str | None, search: str | None, limit: int | None) -> None:
    """List the organization's features, by name."""
    client = state.client()
    render_list(
        state,
        lambda n: client.features.list(status=status, search=search, limit=n),
        FEATURE_COLUMNS,
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
