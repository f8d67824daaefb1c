"""What the shipped deployment files may say to minerva-ai, in one place.

The real-server suite (issue 15's harness) runs the service with these names; the compose
file, the systemd units and the Kubernetes notes must use the same ones. Reconcile here
when a name changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from minerva_ai.commands.main import cli
from minerva_ai.service.metrics_server import parse_bind
from minerva_ai.service.supervisor import HttpOptions, check_http_options

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "examples" / "deploy"

# The probes and the commands the harness runs.
LIVE_PATH = "/api/health/live"  # the process answers; never touches the database
READY_PATH = "/api/health/ready"  # PostgreSQL reachable, migrations current, not draining
APP_PORT = 8000
START_COMMAND = ["minerva-ai", "server", "start", "--host", "0.0.0.0", "--port", str(APP_PORT)]  # noqa: S104
MIGRATE_COMMAND = ["minerva-ai", "server", "migrate"]
# The service's own variables come from these modules (os.environ and the _number/_switch/
# _days helpers), plus Click's envvar= options of `server start`.
CONFIG_MODULES = (
    REPO / "minerva_ai" / "service" / "config.py",
    REPO / "minerva_ai" / "service" / "providers" / "policy.py",
)
_READ = re.compile(
    r"""(?:environ(?:\.get)?\(|\)\.get\(|environ\[|_number\(|_switch\(|_days\(|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def service_variables() -> set[str]:
    """Every environment variable name the service reads."""
    names: set[str] = set()
    for module in CONFIG_MODULES:
        names.update(_READ.findall(module.read_text()))
    start = command_of(["minerva-ai", "server", "start"])[0]
    for param in start.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
    return names


def command_of(argv: list[str]) -> tuple[click.Command, dict[str, object]]:
    """Parse ``argv`` (``minerva-ai ...``) with the real Click commands: the command reached
    and its parameters. Click raises, naming the option, on anything it would refuse."""
    assert argv[0] == "minerva-ai", argv
    command: click.Command = cli
    args = list(argv[1:])
    ctx = command.make_context("minerva-ai", args, resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, found, rest = command.resolve_command(ctx, rest)
        assert found is not None, f"no command {name!r} in {argv}"
        command = found
        ctx = command.make_context(name or found.name, rest, parent=ctx)
    if command.name == "start":
        check_http_options(
            HttpOptions(
                proxy_headers=bool(ctx.params["proxy_headers"]),
                forwarded_allow_ips=str(ctx.params["forwarded_allow_ips"]),
                root_path=str(ctx.params["root_path"]),
                log_format=str(ctx.params["log_format"]),
            )
        )
        if ctx.params["metrics_bind"] is not None:
            parse_bind(str(ctx.params["metrics_bind"]))
    return command, ctx.params
