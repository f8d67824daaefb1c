"""`minerva-ai server`: run the service, and administer its database directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .options import HelpGroup, State, output_options, pass_state

if TYPE_CHECKING:
    from minerva_ai.service.db import MigrationStatus
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
      1  `migrate --status`: the schema is not exactly the one this version
         expects (migrations pending, or applied by a newer version)
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
@click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    default=None,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 "
    "(off by default; never on the public port: they count every organization's traffic).",
)
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Trust X-Forwarded-For / X-Forwarded-Proto from the addresses of "
    "--forwarded-allow-ips (a proxy in front: nginx, a load balancer).",
)
@click.option(
    "--forwarded-allow-ips",
    metavar="LIST",
    default="127.0.0.1",
    show_default=True,
    envvar="FORWARDED_ALLOW_IPS",
    help="Comma-separated proxy addresses or CIDRs whose forwarded headers are trusted, "
    "or * for any (with --proxy-headers; env FORWARDED_ALLOW_IPS).",
)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a proxy serves the API under and strips before passing requests "
    "on, e.g. /minerva: the service's own links (the API document's server) carry it.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: warnings and errors as text. json: access and error logs on stderr, one "
    "JSON object a line, tokens and passwords masked.",
)
def server_start(
    host: str,
    port: int,
    workers: int,
    demo: bool,
    metrics_bind: str | None,
    proxy_headers: bool,
    forwarded_allow_ips: str,
    root_path: str,
    log_format: str,
) -> None:
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
    from minerva_ai.service.metrics_server import parse_bind
    from minerva_ai.service.supervisor import HttpOptions, ServeOptions, check_http_options, serve

    http = HttpOptions(
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        log_format=log_format,
    )
    check_http_options(http)
    metrics = parse_bind(metrics_bind) if metrics_bind is not None else None
    if metrics is not None and port != 0 and metrics[1] == port:
        raise click.BadParameter(
            "must not be the public port (--port)", param_hint="--metrics-bind"
        )
    serve(
        ServeOptions(
            host=host,
            port=port,
            workers=workers,
            demo=demo,
            metrics_bind=metrics,
            http=http,
        )
    )


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
@click.option(
    "--status",
    is_flag=True,
    help="Apply nothing: list applied and pending migrations; exit 1 unless the schema is "
    "exactly the one this version expects.",
)
@click.option(
    "--dry-run", is_flag=True, help="Apply nothing: print the migrations that would be applied."
)
@output_options
@pass_state
def server_migrate(state: State, status: bool, dry_run: bool) -> None:
    """Apply pending database migrations (safe while other instances run or start).

    Prints each migration applied, one a line; `-o json` prints {"applied": [...]}.
    Migrations are forward-only: run this before rolling out a new version (docs/deployment.md).

    \b
    --status   VERSION, STATE (applied, pending, or unknown: applied by a newer
               minerva-ai) and APPLIED AT; -o json: {"current", "applied",
               "pending", "unknown"}. Exit 0 when current, 1 when not.
    --dry-run  the versions that would be applied, one a line; -o json:
               {"would_apply": [...]}. Exit 0.
    """
    from minerva_ai.cli.output import Column
    from minerva_ai.service import admin, home, supervisor

    if status and dry_run:
        raise click.UsageError("--status and --dry-run: choose one")
    url = home.admin_database_url()
    if status or dry_run:
        with supervisor.database_errors(url):
            found = admin.migration_status(url)
        if dry_run:
            _print_dry_run(state, found.pending)
        else:
            _print_status(state, found)
            if not found.current:
                raise click.exceptions.Exit(1)
        return
    with supervisor.database_errors(url):
        applied = admin.migrate(url, warn=state.warn)
    if not applied:
        state.info("the database schema is up to date")
    state.output().item(
        {"applied": applied},
        [Column("applied", "APPLIED", "list")],
        text=lambda: "\n".join(applied),
    )


def _print_dry_run(state: State, pending: list[str]) -> None:
    from minerva_ai.cli.output import Column

    state.info(
        f"would apply {len(pending)} migration{'s' if len(pending) != 1 else ''} (nothing applied)"
        if pending
        else "the database schema is up to date: nothing would be applied"
    )
    state.output().item(
        {"would_apply": pending},
        [Column("would_apply", "WOULD APPLY", "list")],
        text=lambda: "\n".join(pending),
    )


def _print_status(state: State, found: MigrationStatus) -> None:
    from minerva_ai.cli.output import Column

    if state.output_format in ("json", "yaml"):
        state.output().item(
            {
                "current": found.current,
                "applied": found.applied,
                "pending": found.pending,
                "unknown": found.unknown,
            },
            [],
        )
    else:
        rows = [{**row, "state": "applied"} for row in found.applied]
        rows += [{"version": v, "state": "pending", "applied_at": None} for v in found.pending]
        rows += [{"version": v, "state": "unknown", "applied_at": None} for v in found.unknown]
        columns = [
            Column("version", "VERSION"),
            Column("state", "STATE"),
            Column("applied_at", "APPLIED AT", "time"),
        ]
        state.output().items(rows, columns)
    if found.unknown:
        state.warn(
            f"migrations unknown to this version: {', '.join(found.unknown)} "
            "(run a newer minerva-ai)"
        )
    elif found.pending:
        state.warn(f"{len(found.pending)} pending: run `minerva-ai server migrate`")
    else:
        state.info("the database schema is current")


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
