"""`minerva-ai server`: run the service, and administer its database directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .options import HelpGroup, State, output_options, pass_state

if TYPE_CHECKING:
    from minerva_ai.service.tokens import IssuedToken

SCOPES = ("read", "ingest", "write", "admin")


def _print_token(state: State, issued: IssuedToken) -> None:
    """Only the secret on stdout (a script captures it); {id, token, scopes} with -o json."""
    from minerva_ai.cli.output import Column

    columns = [Column("id", "ID"), Column("token", "TOKEN"), Column("scopes", "SCOPES", "list")]
    data = {"id": str(issued.id), "token": issued.token, "scopes": list(issued.scopes)}
    state.output().item(data, columns, text=lambda: issued.token)


@click.group(name="server", cls=HelpGroup)
def server() -> None:
    """Run the minerva-ai service, and administer its database directly.

    One `server start` owns a home (MINERVA_HOME, default: the user data dir): it runs the
    embedded PostgreSQL and Redis there unless DATABASE_URL and REDIS_URL are set. The
    admin commands (`migrate`, `jobs`, `org create`, `token create`) use DATABASE_URL,
    else the database of the server running for the home.

    \b
    Exit codes of these commands:
      0  done (`start`: stopped cleanly by SIGTERM, SIGINT or SIGHUP)
      2  usage: a bad option, the port is taken, the database schema needs
         `minerva-ai server migrate`, an unknown organization, a duplicate name
      3  the home belongs to another running server (its pid is named); the
         database refused a statement; `stop` timed out
      4  no server is running for the home (and no DATABASE_URL is set); a
         database could not be started or reached
    """


@server.command(name="start")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: for every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes serving the API.",
)
@click.option(
    "--demo", is_flag=True, help="Load the demo organization from examples/ (idempotent)."
)
def server_start(host: str, port: int, workers: int, demo: bool) -> None:
    """Start the service in the foreground, until SIGTERM or Ctrl-C.

    Without DATABASE_URL it starts an embedded PostgreSQL in the home, migrates it,
    creates the default organization and writes the CLI profile `local` (made current
    when none is); without REDIS_URL an embedded Redis. Given both URLs it owns nothing:
    that is how a second instance joins the first (see `minerva-ai server info`). An
    external database must be migrated first, with `minerva-ai server migrate`.

    Probes: GET /api/health/live (the process answers) and /api/health/ready (PostgreSQL
    reachable, schema current, not draining). On SIGTERM readiness answers 503 for
    MINERVA_DRAIN_DELAY seconds (default 0) while the instance still serves; then
    WebSockets close with 1012 and open requests finish, within 10 s.
    """
    from minerva_ai.service.supervisor import ServeOptions, serve

    serve(ServeOptions(host=host, port=port, workers=workers, demo=demo))


@server.command(name="info")
@output_options
@pass_state
def server_info(state: State) -> None:
    """Print the running server's home, pid, database_url and redis_url.

    A second instance joins with them: DATABASE_URL=... REDIS_URL=...
    minerva-ai server start --port 8766. The URLs carry passwords: keep them private.
    """
    from minerva_ai.cli.output import Column
    from minerva_ai.service import home

    info = home.server_info(home.resolve_home())
    state.output().item(info, [Column(key, key.upper()) for key in info])


@server.command(name="jobs")
@output_options
@pass_state
def server_jobs(state: State) -> None:
    """List the background jobs: who leads each, until when, and how its last run went.

    Each job runs on one instance at a time: the leader holds a lease in PostgreSQL,
    renews it every third of MINERVA_JOB_LEASE (15 s), and another instance takes over
    when it expires. HELD is false while no instance leads the job.
    """
    from minerva_ai.cli.output import Column
    from minerva_ai.service import admin, home, supervisor

    url = home.admin_database_url()
    with supervisor.database_errors(url):
        jobs = admin.job_status(url)
    columns = [
        Column("name", "JOB"),
        Column("holder", "LEADER"),
        Column("epoch", "EPOCH"),
        Column("held", "HELD"),
        Column("expires_at", "LEASE UNTIL", "time"),
        Column("last_run_at", "LAST RUN", "time"),
        Column("last_duration_ms", "MS"),
        Column("last_error", "LAST ERROR"),
    ]
    state.output().items(jobs, columns)


@server.command(name="stop")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for it to exit.",
)
@pass_state
def server_stop(state: State, timeout: float) -> None:
    """Stop the server running for the home (SIGTERM), and wait until it has exited."""
    from minerva_ai.service import home

    directory = home.resolve_home()
    pid = home.stop_server(directory, timeout)
    if pid is None:
        state.info(f"no minerva-ai server is running for home {directory}")
    else:
        state.info(f"stopped the server of home {directory} (pid {pid})")


@server.command(name="migrate")
@output_options
@pass_state
def server_migrate(state: State) -> None:
    """Apply pending database migrations (safe while other instances run or start).

    Prints each migration applied, one a line; `-o json` prints {"applied": [...]}.
    """
    from minerva_ai.cli.output import Column
    from minerva_ai.service import admin, home, supervisor

    url = home.admin_database_url()
    with supervisor.database_errors(url):
        applied = admin.migrate(url, warn=state.warn)
    if not applied:
        state.info("the database schema is up to date")
    state.output().item(
        {"applied": applied},
        [Column("applied", "APPLIED", "list")],
        text=lambda: "\n".join(applied),
    )


@server.group(name="org", cls=HelpGroup)
def server_org() -> None:
    """Organizations, straight in the database."""


@server_org.command(name="create")
@click.argument("name")
@output_options
@pass_state
def server_org_create(state: State, name: str) -> None:
    """Create organization NAME; print only its first admin token (-o json: {id, token, scopes}).

    The token is shown once: capture it, e.g. TOKEN=$(minerva-ai server org create acme).
    """
    from minerva_ai.service import admin, home, supervisor

    url = home.admin_database_url()
    with supervisor.database_errors(url):
        issued = admin.create_organization(url, name)
    _print_token(state, issued)


@server.group(name="token", cls=HelpGroup)
def server_token() -> None:
    """API tokens, straight in the database (also the way back after losing every admin)."""


@server_token.command(name="create")
@click.option("--org", "org_name", required=True, help="The organization's name.")
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(SCOPES),
    multiple=True,
    required=True,
    help="A scope to grant (repeatable).",
)
@click.option("--name", default=None, help="A name to recognise the token by.")
@output_options
@pass_state
def server_token_create(
    state: State, org_name: str, scopes: tuple[str, ...], name: str | None
) -> None:
    """Create a token for an organization; print only the token (-o json: {id, token, scopes})."""
    from minerva_ai.service import admin, home, supervisor

    url = home.admin_database_url()
    with supervisor.database_errors(url):
        issued = admin.create_token(url, org_name, list(dict.fromkeys(scopes)), name)
    _print_token(state, issued)
