"""``minerva-ai alerts``: list, show, acknowledge, resolve and watch alerts; alert rules
(settings changes) and silences; the webhooks group is attached from alerts_webhooks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from minerva_ai.cli.alertview import (
    METRICS,
    NO_DATA,
    OPERATORS,
    SEVERITIES,
    STATES,
)
from minerva_ai.cli.output import Column

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
    from minerva_ai.cli.settings_edit import SettingsUpdate
    from minerva_ai.client.realtime import Notice

F = TypeVar("F", bound=Callable[..., Any])

VIEW = "minerva_ai.cli.alertview"
WATCH_TRANSPORTS = ("auto", "ws", "poll")
SETTINGS_VERSION_FIELDS = [
    Column("feature_id", "FEATURE ID"),
    Column("version", "VERSION"),
    Column("created_at", "CREATED", kind="time"),
]


@click.group(name="alerts", cls=HelpGroup)
def alerts() -> None:
    """List, acknowledge, silence and watch alerts; manage alert rules and webhooks.

    An alert opens when one of a feature's alert rules (its settings'
    monitoring.alert_rules) starts firing, and closes when the rule recovers or someone
    resolves it. ID arguments take a full alert id or the start of one, as tables show it.

    \b
    Examples:
      minerva-ai alerts list --severity critical
      minerva-ai alerts ack 3f2a9c1b --note "looking"
      minerva-ai alerts watch -o jsonl
      minerva-ai alerts rules add photo-tagging --name errors --metric error_rate \\
          --operator '>' --threshold 5 --warning-threshold 2 --for 2m
      minerva-ai alerts silence add photo-tagging --duration 2h --comment "deploy"
    """


def _attach_webhooks() -> None:
    """``alerts webhooks``: the group of commands/alerts_webhooks.py, when it is installed."""
    import importlib

    name = f"{__package__}.alerts_webhooks"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return
    alerts.add_command(module.webhooks)


_attach_webhooks()


def labels_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        callback=parsed_by(f"{VIEW}:parse_label"),
        help=help,
    )


def _labels(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    from minerva_ai.cli.alertview import labels_of

    return labels_of(pairs)


def _alert_id(state: State, ref: str) -> str:
    from minerva_ai.cli.alertview import resolve_alert_id

    return resolve_alert_id(state.client(), ref)


# ------------------------------------------------------------------ alerts


@alerts.command(name="list")
@click.option(
    "--state",
    "status",
    type=click.Choice(STATES),
    default="open",
    show_default=True,
    help="Open alerts, resolved ones, or all.",
)
@click.option("--severity", type=click.Choice(SEVERITIES), help="Only alerts of this severity.")
@click.option("--feature", metavar="FEATURE", help="Only this feature's alerts.")
@labels_option("Only alerts with this label (repeat: all of them).")
@limit_option
@output_options
@pass_state
def alerts_list(
    state: State,
    status: str,
    severity: str | None,
    feature: str | None,
    labels: list[tuple[str, str]] | None,
    limit: int | None,
) -> None:
    """List alerts, newest first.

    Columns: ID (its start on a terminal, whole when piped), FEATURE, RULE, SEVERITY,
    STATE, VALUE (the value that opened it), OPENED (how long ago on a terminal, ISO 8601
    UTC when piped) and ACK (yes once acknowledged). Piped: tab-separated, no header.
    """
    from minerva_ai.cli.alertview import alert_columns

    client = state.client()
    render_list(
        state,
        lambda n: client.alerts.list(
            state=None if status == "all" else status,
            severity=severity,
            feature=feature,
            labels=_labels(labels),
            limit=n,
        ),
        alert_columns(state.output().tty),
        state.limit(limit),
        empty=f"no {'' if status == 'all' else status + ' '}alerts",
    )


@alerts.command(name="show")
@click.argument("alert_id", metavar="ID")
@output_options
@pass_state
def alerts_show(state: State, alert_id: str) -> None:
    """Show an alert, what happened to it, and what changed before it opened.

    Its fields, its transitions, its webhook deliveries, and the feature's settings
    changes in the hour before it opened, each with the command that undoes it
    (`minerva-ai features settings rollback FEATURE --to VERSION-1`).

    -o json|yaml print the whole alert (each settings change with its `rollback`).
    """
    from minerva_ai.cli.alertview import print_alert

    detail = state.client().alerts.get(_alert_id(state, alert_id))
    print_alert(state.output(), detail)


def _alert_action(name: str, verb: str, summary: str) -> click.Command:
    @click.argument("alert_id", metavar="ID")
    @click.option("--note", metavar="TEXT", help="Why, for whoever reads the alert next.")
    @output_options
    @pass_state
    def command(state: State, alert_id: str, note: str | None) -> None:
        from minerva_ai.cli.alertview import ALERT_FIELDS

        client = state.client()
        ident = _alert_id(state, alert_id)
        action = client.alerts.acknowledge if name == "ack" else client.alerts.resolve
        alert = action(ident, note)
        state.info(f"alert {alert['id']} ({alert['feature']}/{alert['rule']}) {verb}")
        state.output().item(alert, ALERT_FIELDS)

    command.__doc__ = summary
    return alerts.command(name=name)(command)


alerts_ack = _alert_action(
    "ack",
    "acknowledged",
    "Acknowledge an open alert: no more renotifications.\n\n"
    "Acknowledging again changes nothing; a resolved alert is refused (exit 3).",
)
alerts_resolve = _alert_action(
    "resolve",
    "resolved",
    "Resolve an open alert by hand.\n\n"
    "If its rule still breaches, a new alert opens once the rule's `for` has elapsed "
    "again. A resolved alert is refused (exit 3).",
)


def _cursor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not (value.isascii() and value.isdigit() and len(value) < 19):
        raise click.BadParameter(f"{value!r} is not a transition cursor (a number)")
    return value


@alerts.command(name="watch")
@click.option("--feature", metavar="FEATURE", help="Only this feature's transitions.")
@click.option(
    "--after",
    metavar="CURSOR",
    callback=_cursor,
    help="Start after this cursor (each line ends with its cursor=); default: from now.",
)
@click.option(
    "--transport",
    type=click.Choice(WATCH_TRANSPORTS),
    default="auto",
    show_default=True,
    help="auto: the WebSocket, else polling.",
)
@click.option(
    "-o",
    "--format",
    "fmt",
    type=click.Choice(("text", "json", "jsonl")),
    default=None,
    help="text (a line per transition, the default) or jsonl (json is the same).",
)
@click.option("--utc", is_flag=True, help="Show times in UTC on a terminal too.")
@pass_state
def alerts_watch(
    state: State, feature: str | None, after: str | None, transport: str, fmt: str | None, utc: bool
) -> None:
    """Print each alert transition as it commits, until Ctrl-C (exit 130).

    A line per transition: time, feature, rule, event (breach, recover, escalate,
    acknowledge, resolve...), from -> to state, severity, value=, threshold=, actor=,
    alert= (its id's start), cursor= and the reason. jsonl: {alert, transition, cursor}
    per line. Each line is flushed as it is printed.

    On any disconnect it reconnects with backoff, says so on stderr, and resumes after
    the last transition printed: nothing is lost or repeated across service restarts.
    Resume a later watch with --after CURSOR.
    """
    import asyncio
    import contextlib

    from minerva_ai.cli.alertview import TransitionPrinter
    from minerva_ai.client import AsyncClient
    from minerva_ai.client.alerts_follow import follow_alerts

    if fmt is None and state.output_format not in ("table", "json", "jsonl"):
        raise click.BadParameter(
            f"alerts watch prints text, json or jsonl, not {state.output_format}",
            param_hint="'-o' / '--format'",
        )
    json = (fmt or state.output_format) in ("json", "jsonl")
    printer = TransitionPrinter(
        sys.stdout, json=json, no_color=state.no_color, utc=state.utc or utc
    )

    def notice(event: Notice) -> None:
        if event.kind == "connected":
            state.debug(event.message)
        elif event.kind in ("lost", "overflow"):
            state.warn(event.message)
        else:
            state.info(event.message)

    async def run() -> None:
        resolved = state.resolved()
        log = state.debug if state.verbose else None
        async with AsyncClient(resolved.url, resolved.token, log=log) as client:
            events = follow_alerts(
                client, after, feature=feature, transport=transport, on_notice=notice
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    printer.event(event)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


# ------------------------------------------------------------------ rules


@alerts.group(name="rules", cls=HelpGroup)
def alerts_rules() -> None:
    """A feature's alert rules: list them with their state, add, change, remove, try one.

    Rules live in the feature's settings (monitoring.alert_rules): every change is a new
    settings version, undone with `features settings rollback`.
    """


@alerts_rules.command(name="list")
@click.argument("feature", required=False)
@output_options
@pass_state
def rules_list(state: State, feature: str | None) -> None:
    """List alert rules with their current state: FEATURE's, or every feature's.

    Columns: FEATURE, RULE, METRIC, CONDITION (`> 5 (warn > 2)`), WINDOW, FOR, SEVERITY,
    STATE (ok, pending, firing, no_data, error) and SINCE.
    """
    from minerva_ai.cli.alertview import rule_columns, rule_rows

    client = state.client()
    names = [feature] if feature else [f["name"] for f in client.features.list()]
    rows = [row for name in names for row in rule_rows(name, client.alerts.rules(name))]
    output = state.output()
    output.items(rows, rule_columns(output.tty))
    if not rows and output.format == "table":
        state.info("no alert rules" + (f" on {feature}" if feature else ""))


def rule_options(*, adding: bool) -> Callable[[F], F]:
    """The fields of a rule; ``alerts rules add`` requires the first four."""
    options = [
        click.option(
            "--name",
            required=adding,
            metavar="NAME",
            help="The rule's name." if adding else "Rename the rule.",
        ),
        click.option(
            "--metric", type=click.Choice(METRICS), required=adding, help="What to watch."
        ),
        click.option(
            "--operator", type=click.Choice(OPERATORS), required=adding, help="How to compare."
        ),
        click.option("--threshold", type=float, required=adding, help="Fires beyond this."),
        click.option(
            "--warning-threshold",
            type=float,
            help="Severity warning beyond this, the rule's severity beyond --threshold.",
        ),
        click.option(
            "--window",
            metavar="SPAN",
            callback=parsed_by(f"{VIEW}:parse_rule_duration"),
            help="The span judged at each evaluation, whole minutes: 1m, 5m, 1h (default 5m).",
        ),
        click.option(
            "--for",
            "for_",
            metavar="SPAN",
            callback=parsed_by(f"{VIEW}:parse_rule_duration"),
            help="Breaching this long before it fires (pending meanwhile).",
        ),
        click.option("--severity", type=click.Choice(SEVERITIES), help="Default: warning."),
        click.option(
            "--min-requests",
            type=click.IntRange(min=0),
            help="Fewer requests in the window: not judged on ratios (default 1).",
        ),
        click.option(
            "--no-data",
            type=click.Choice(NO_DATA),
            help="What a window without requests means (default no_data).",
        ),
        click.option(
            "--keep-firing-for",
            metavar="SPAN",
            callback=parsed_by(f"{VIEW}:parse_rule_duration"),
            help="Stay firing this long after recovering (default 0).",
        ),
        click.option(
            "--renotify",
            metavar="SPAN",
            callback=parsed_by(f"{VIEW}:parse_renotify"),
            help="Notify again while firing and unacknowledged (default 4h; 0 = never).",
        ),
        labels_option(
            "A label of the rule's alerts (repeat for more)"
            + ("." if adding else "; replaces the rule's labels.")
        ),
        click.option("--runbook-url", metavar="URL", help="What to do when it fires."),
        click.option(
            "--disabled/--enabled",
            "disabled",
            default=None,
            help="Keep the rule without evaluating it (or evaluate it again).",
        ),
        click.option("--dry-run", is_flag=True, help="Show the diff; write nothing."),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _rule_change(options: dict[str, Any], disabled: bool | None) -> dict[str, Any]:
    from minerva_ai.cli.alertview import rule_fields

    labels = options.pop("labels", None)
    if labels:
        options["labels"] = _labels(labels)
    return rule_fields(options, disabled)


def _write_rules(
    state: State, feature: str, edit: Callable[[Any], dict[str, Any]], dry_run: bool
) -> None:
    from minerva_ai.cli.settings_edit import update_settings

    update = update_settings(state.client(), feature, edit=edit, dry_run=dry_run)
    _report(state, feature, update, dry_run)


def _report(state: State, feature: str, update: SettingsUpdate, dry_run: bool) -> None:
    from minerva_ai.cli.diff import render_diff

    output = state.output()
    base = update.before["version"]
    if update.attempts > 1:
        state.info(f"the settings changed meanwhile; re-applied on version {base}")
    if dry_run:
        state.info(f"dry run: {len(update.changes)} change(s) to version {base}; nothing written")
        preview = {"dry_run": True, "version": base, "diff": update.changes}
        output.item(
            preview,
            SETTINGS_VERSION_FIELDS,
            text=lambda: render_diff(update.changes, color=output.color),
        )
    elif update.after is None:
        state.info(f"no changes: settings stay at version {base}")
        output.item(update.before, SETTINGS_VERSION_FIELDS, text=lambda: f"settings version {base}")
    else:
        after = update.after
        state.info(f"{feature}: settings version {base} -> {after['version']}")
        output.item(
            after, SETTINGS_VERSION_FIELDS, text=lambda: f"settings version {after['version']}"
        )


@alerts_rules.command(name="add")
@click.argument("feature")
@rule_options(adding=True)
@output_options
@pass_state
def rules_add(
    state: State, /, feature: str, disabled: bool | None, dry_run: bool, **options: Any
) -> None:
    """Add an alert rule to FEATURE's settings; prints the new settings version.

    The change is made on the settings version just read; if someone wrote in between,
    it is read again and re-applied once. --dry-run prints the diff instead.
    """
    from minerva_ai.cli.alertview import add_rule

    rule = {"name": options.pop("name"), **_rule_change(options, disabled)}
    _write_rules(state, feature, add_rule(feature, rule), dry_run)


@alerts_rules.command(name="update")
@click.argument("feature")
@click.argument("rule")
@rule_options(adding=False)
@output_options
@pass_state
def rules_update(
    state: State, /, feature: str, rule: str, disabled: bool | None, dry_run: bool, **options: Any
) -> None:
    """Change the given fields of FEATURE's alert RULE; prints the new settings version.

    Fields not given stay as they are. Re-read and re-applied once on a concurrent write,
    as `alerts rules add`.
    """
    from minerva_ai.cli.alertview import update_rule

    changes = _rule_change(options, disabled)
    if options.get("name") is not None:
        changes["name"] = options["name"]
    if not changes:
        raise click.UsageError("give at least one field to change (see --help)")
    _write_rules(state, feature, update_rule(feature, rule, changes), dry_run)


@alerts_rules.command(name="remove")
@click.argument("feature")
@click.argument("rule")
@click.option("--dry-run", is_flag=True, help="Show the diff; write nothing.")
@output_options
@pass_state
def rules_remove(state: State, feature: str, rule: str, dry_run: bool) -> None:
    """Remove FEATURE's alert RULE; prints the new settings version.

    Its open alert, if any, is closed by the evaluator (event rule_deleted).
    """
    from minerva_ai.cli.alertview import remove_rule

    _write_rules(state, feature, remove_rule(feature, rule), dry_run)


@alerts_rules.command(name="test")
@click.argument("feature")
@click.argument("rule")
@output_options
@pass_state
def rules_test(state: State, feature: str, rule: str) -> None:
    """Evaluate FEATURE's alert RULE now, changing nothing.

    Prints the state it is in -> the state it would move to, the value observed over its
    window, the requests counted, and why: `errors: ok -> firing (value 33.33 over 5m,
    15 requests): ...`.
    """
    from minerva_ai.cli.alertview import EVALUATION_FIELDS, evaluation_text

    result = state.client().alerts.evaluate_rule(feature, rule)
    state.output().item(result, EVALUATION_FIELDS, text=lambda: evaluation_text(result))


# ------------------------------------------------------------------ silences


@alerts.group(name="silence", cls=HelpGroup)
def alerts_silence() -> None:
    """Silence alerts for a while: their state still changes, no notification is sent."""


@alerts_silence.command(name="add")
@click.argument("feature", required=False)
@click.option("--rule", metavar="RULE", help="Only this rule's alerts.")
@click.option("--severity", type=click.Choice(SEVERITIES), help="Only alerts of this severity.")
@labels_option("Only alerts with this label (repeat: all of them).")
@click.option(
    "--duration",
    metavar="SPAN",
    callback=parsed_by("minerva_ai.core.timeparse:parse_duration", keep=True),
    help="For how long: 30m, 2h, 1d, 1h30m.",
)
@click.option(
    "--until",
    metavar="TIME",
    help="Until TIME: ISO 8601 (no offset = local time) or a span from now (2h).",
)
@click.option("--starts", metavar="TIME", help="From TIME (default: now), as --until.")
@click.option("--comment", required=True, metavar="TEXT", help="Why (shown with the silence).")
@output_options
@pass_state
def silence_add(
    state: State,
    feature: str | None,
    rule: str | None,
    severity: str | None,
    labels: list[tuple[str, str]] | None,
    duration: str | None,
    until: str | None,
    starts: str | None,
    comment: str,
) -> None:
    """Silence FEATURE's alerts (every feature's without FEATURE) for --duration or
    --until a time; --rule, --severity and --label narrow it."""
    from minerva_ai.cli.alertview import silence_columns, silence_window
    from minerva_ai.core.errors import ConfigError, UsageError

    try:
        window = silence_window(duration, until, starts)
    except (ConfigError, UsageError) as exc:
        raise click.UsageError(str(exc)) from None
    created = state.client().silences.create(
        comment,
        feature=feature,
        rule=rule,
        severity=severity,
        labels=_labels(labels),
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        duration=window.duration,
    )
    state.info(f"silence {created['id']} until {created['ends_at']}")
    output = state.output()
    output.item(created, silence_columns(output.tty))


@alerts_silence.command(name="list")
@click.option("--all", "include_expired", is_flag=True, help="Expired silences too.")
@limit_option
@output_options
@pass_state
def silence_list(state: State, include_expired: bool, limit: int | None) -> None:
    """List active and upcoming silences (with --all: expired ones too), latest ending first."""
    from minerva_ai.cli.alertview import silence_columns

    silences = state.client().silences
    render_list(
        state,
        lambda n: silences.list(include_expired=include_expired, limit=n),
        silence_columns(state.output().tty),
        state.limit(limit),
        empty="no silences",
    )


@alerts_silence.command(name="expire")
@click.argument("silence_id", metavar="ID")
@output_options
@pass_state
def silence_expire(state: State, silence_id: str) -> None:
    """End a silence now (`silence list --all` still shows it)."""
    from minerva_ai.cli.alertview import silence_columns

    expired = state.client().silences.expire(silence_id)
    state.info(f"silence {expired['id']} expired")
    output = state.output()
    output.item(expired, silence_columns(output.tty))
