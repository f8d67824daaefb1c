"""``minerva-ai alerts webhooks``: where alert notifications are sent (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

import click

from minerva_ai.cli.alertview import SEVERITIES, labels_of
from minerva_ai.cli.output import Column
from minerva_ai.core.errors import GateFailed

from .options import (
    HelpGroup,
    State,
    limit_option,
    output_options,
    parsed_by,
    pass_state,
    render_list,
)

WEBHOOK_COLUMNS = [
    Column("id", "ID"),
    Column("name", "NAME"),
    Column("url", "URL"),
    Column("format", "FORMAT"),
    Column("min_severity", "MIN SEVERITY"),
    Column("features", "FEATURES", kind="list"),
    Column("labels", "LABELS", render=lambda v: ",".join(f"{k}={x}" for k, x in v.items())),
    Column("created_at", "CREATED", kind="time"),
    Column("previous_secret_expires_at", "OLD SECRET UNTIL", kind="time"),
]
SECRET_COLUMNS = [Column("id", "ID"), Column("name", "NAME"), Column("secret", "SECRET")]
ROTATED_COLUMNS = [
    Column("id", "ID"),
    Column("secret", "SECRET"),
    Column("previous_secret_expires_at", "OLD SECRET UNTIL", kind="time"),
]
TEST_COLUMNS = [
    Column("delivered", "DELIVERED"),
    Column("status_code", "STATUS"),
    Column("error", "ERROR"),
    Column("duration_ms", "MS"),
    Column("event_id", "WEBHOOK-ID"),
]


@click.group(name="webhooks", cls=HelpGroup)
def webhooks() -> None:
    """Webhooks that alert notifications are sent to, signed as Standard Webhooks.

    Listing needs the read scope, the rest admin. Receivers verify each delivery with the
    secret printed by `add` and `rotate`, using the standardwebhooks libraries
    (docs/webhooks.md).
    """


def _webhook_id(state: State, ref: str) -> str:
    """A webhook's id, given its id or its name."""
    found = [w for w in state.client().webhooks.list() if ref in (w["id"], w["name"])]
    if not found:
        from minerva_ai.core.errors import NotFoundError

        raise NotFoundError(404, "not_found", f"webhook {ref!r} not found")
    webhook_id: str = found[0]["id"]
    return webhook_id


@webhooks.command(name="add")
@click.argument("name")
@click.argument("url")
@click.option("--slack", is_flag=True, help="Send Slack messages instead of the JSON events.")
@click.option(
    "--feature",
    "features",
    multiple=True,
    help="Only alerts of this feature (name or id); repeat for several (default: all).",
)
@click.option(
    "--min-severity",
    type=click.Choice(SEVERITIES),
    default="info",
    show_default=True,
    help="Only alerts of this severity or above.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    callback=parsed_by("minerva_ai.cli.alertview:parse_label"),
    metavar="KEY=VALUE",
    help="Only alerts with this label; repeat for several (all must match).",
)
@output_options
@pass_state
def webhooks_add(
    state: State,
    name: str,
    url: str,
    slack: bool,
    features: tuple[str, ...],
    min_severity: str,
    labels: list[tuple[str, str]],
) -> None:
    """Add webhook NAME sending to URL. Its signing secret is printed once, on stdout.

    \b
    SECRET=$(minerva-ai alerts webhooks add ops https://ops.example.com/minerva)
    minerva-ai alerts webhooks add chat https://hooks.slack.com/services/... --slack \\
        --min-severity critical --label team=search
    """
    created = state.client().webhooks.create(
        name,
        url,
        format="slack" if slack else "json",
        features=features,
        min_severity=min_severity,
        labels=labels_of(labels),
    )
    state.warn("this is the only time the secret is shown: store it now")
    state.output().item(created, SECRET_COLUMNS, text=lambda: str(created["secret"]))


@webhooks.command(name="list")
@limit_option
@output_options
@pass_state
def webhooks_list(state: State, limit: int | None) -> None:
    """List the organization's webhooks (secrets are never shown)."""
    client = state.client().webhooks
    render_list(
        state,
        lambda n: client.list(limit=n),
        WEBHOOK_COLUMNS,
        state.limit(limit),
        empty="no webhooks",
    )


@webhooks.command(name="remove")
@click.argument("webhook", metavar="ID|NAME")
@output_options
@pass_state
def webhooks_remove(state: State, webhook: str) -> None:
    """Remove a webhook: nothing more is sent to it (its delivery history stays)."""
    removed = state.client().webhooks.delete(_webhook_id(state, webhook))
    state.info(f"removed webhook {removed['name']} ({removed['id']})")
    columns = [Column("id", "ID"), Column("name", "NAME"), Column("deleted", "DELETED")]
    state.output().item(removed, columns, text=lambda: "")


@webhooks.command(name="rotate")
@click.argument("webhook", metavar="ID|NAME")
@output_options
@pass_state
def webhooks_rotate(state: State, webhook: str) -> None:
    """Give a webhook a new signing secret, printed once on stdout. The old secret keeps
    signing for 24 hours: deliveries carry both signatures until then, so receivers can
    switch without losing one."""
    rotated: dict[str, Any] = state.client().webhooks.rotate_secret(_webhook_id(state, webhook))
    state.warn(
        "this is the only time the secret is shown: store it now; the old one signs too "
        f"until {rotated['previous_secret_expires_at']}"
    )
    state.output().item(rotated, ROTATED_COLUMNS, text=lambda: str(rotated["secret"]))


@webhooks.command(name="test")
@click.argument("webhook", metavar="ID|NAME")
@output_options
@pass_state
def webhooks_test(state: State, webhook: str) -> None:
    """Send a signed `webhook.test` event now and show what the receiver answered.

    Exit 1 when it did not answer 2xx.
    """
    result = state.client().webhooks.test(_webhook_id(state, webhook))
    state.output().item(result, TEST_COLUMNS)
    if not result["delivered"]:
        raise GateFailed(f"the webhook did not accept the test event: {result['error']}")
