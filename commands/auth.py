"""``minerva-ai auth``: log in with a token from stdin, see who you are, manage API tokens."""

from __future__ import annotations

import os
import sys

import click

from minerva_ai.cli.output import Column
from minerva_ai.core.errors import ConfigError

from .options import (
    HelpGroup,
    State,
    limit_option,
    output_options,
    pass_state,
    render_list,
)

SCOPES = ("read", "ingest", "write", "admin")

TOKEN_COLUMNS = [
    Column("id", "ID"),
    Column("name", "NAME"),
    Column("scopes", "SCOPES"),
    Column("created_at", "CREATED", kind="time"),
    Column("last_used_at", "LAST USED", kind="time"),
    Column("revoked_at", "REVOKED", kind="time"),
]
STATUS_COLUMNS = [
    Column("url", "URL"),
    Column("url_source", "URL FROM"),
    Column("token_source", "TOKEN FROM"),
    Column("organization.name", "ORGANIZATION"),
    Column("organization.id", "ORGANIZATION ID"),
    Column("token.name", "TOKEN NAME"),
    Column("token.id", "TOKEN ID"),
    Column("token.scopes", "SCOPES"),
]
NEW_TOKEN_COLUMNS = [Column("id", "ID"), Column("token", "TOKEN"), Column("scopes", "SCOPES")]


@click.group(name="auth", cls=HelpGroup)
def auth() -> None:
    """Log in, check who you are, manage API tokens."""


def _read_token() -> str:
    if sys.stdin.isatty():
        entered: str = click.prompt("Paste the token", hide_input=True, err=True)
        token = entered.strip()
    else:
        token = sys.stdin.read().strip()
    if not token:
        raise ConfigError(
            "no token on stdin: pipe it in, e.g. `auth login --with-token < token.txt`"
        )
    if any(character.isspace() for character in token):
        raise ConfigError("stdin holds more than one token: give exactly one")
    return token


@auth.command(name="login")
@click.option("--with-token", is_flag=True, help="Read the token from stdin (required).")
@output_options
@pass_state
def auth_login(state: State, with_token: bool) -> None:
    """Store a token for the service URL, after checking it with the service.

    The token is read from stdin, never from a flag (flags leak through `ps` and shell
    history). It is stored in a profile bound to the URL and sent to no other URL.

    \b
    minerva-ai --url https://minerva.example.com auth login --with-token < token.txt
    """
    from minerva_ai.cli.config import check_token_transport, profile_name_for, resolve
    from minerva_ai.client import Client
    from minerva_ai.core.profiles import load_config, save_profile

    if not with_token:
        raise click.UsageError("give the token on stdin and pass --with-token")
    target = resolve(
        state.url, state.org, state.profile, insecure=state.insecure, require_profile=False
    )
    state.debug(f"reading the token for {target.url} from stdin")
    token = _read_token()
    check_token_transport(target.url, insecure=state.insecure)
    with Client(target.url, token, log=state.debug if state.verbose else None) as client:
        me = client.whoami()
    explicit = state.profile or os.environ.get("MINERVA_PROFILE")
    name = profile_name_for(target.url, load_config(), explicit)
    organization = me.get("organization") or {}
    path = save_profile(name, url=target.url, token=token, org=organization.get("name"))
    state.info(
        f"logged in to {target.url} as token {me['token'].get('name')!r} of organization "
        f"{organization.get('name')!r}; stored in profile {name!r} ({path})"
    )
    result = {"profile": name, "url": target.url, **me}
    state.output().item(result, STATUS_COLUMNS, text=lambda: "")


@auth.command(name="status")
@output_options
@pass_state
def auth_status(state: State) -> None:
    """Show the URL and token in force, where each came from, and what the token is."""
    resolved = state.resolved()
    me = state.client().whoami()
    result = {
        "url": resolved.url,
        "url_source": resolved.url_source,
        "profile": resolved.profile,
        "token_source": resolved.token_source,
        **me,
    }
    state.output().item(result, STATUS_COLUMNS)


@auth.group(name="token", cls=HelpGroup)
def auth_token() -> None:
    """Create, list and revoke API tokens of your organization (admin scope)."""


@auth_token.command(name="create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help="A scope of the new token; repeat for several (default: read).",
)
@click.option("--name", help="A name to recognise the token by.")
@output_options
@pass_state
def auth_token_create(state: State, scopes: tuple[str, ...], name: str | None) -> None:
    """Create a token. Its secret is printed once, on stdout; store it now.

    \b
    TOKEN=$(minerva-ai auth token create --scope ingest --name photo-app)
    """
    created = state.client().tokens.create(scopes=list(scopes or ("read",)), name=name)
    state.warn("this is the only time the token is shown: store it now")
    result = {"id": created["id"], "token": created["token"], "scopes": created["scopes"]}
    state.output().item(result, NEW_TOKEN_COLUMNS, text=lambda: str(created["token"]))


@auth_token.command(name="list")
@limit_option
@output_options
@pass_state
def auth_token_list(state: State, limit: int | None) -> None:
    """List the organization's tokens (secrets are never shown)."""
    tokens = state.client().tokens
    render_list(
        state, lambda n: tokens.list(limit=n), TOKEN_COLUMNS, state.limit(limit), empty="no tokens"
    )


@auth_token.command(name="revoke")
@click.argument("token_id", metavar="ID")
@output_options
@pass_state
def auth_token_revoke(state: State, token_id: str) -> None:
    """Revoke token ID: it stops working at once."""
    result = state.client().tokens.revoke(token_id)
    state.info(f"revoked token {token_id}")
    state.output().item(result, [Column("id", "ID"), Column("revoked", "REVOKED")], text=lambda: "")
