"""The ``minerva-ai`` root command: global options, lazy subcommands, errors -> exit codes."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from minerva_ai import __version__
from minerva_ai.core.errors import AuthError, MinervaError, ServiceError

from .options import FORMATS, HelpGroup, State

EXIT_CODES = """\b
Exit codes:
  0    ok
  1    a gate failed (readiness check, test suite, load-test threshold, a failed test run)
  2    usage error: bad flag, URL, time, file or --set
  3    the service refused the request (its message is printed)
  4    the service could not be reached
  5    a gate could not be evaluated
  130  interrupted (Ctrl-C)
"""

# name -> ("module:attribute", short help); modules are imported only when used.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "alerts": (
        "minerva_ai.commands.alerts:alerts",
        "List, acknowledge, silence and watch alerts; manage alert rules and webhooks.",
    ),
    "auth": ("minerva_ai.commands.auth:auth", "Log in, check who you are, manage API tokens."),
    "features": ("minerva_ai.commands.features:features", "List, create and change AI features."),
    "load-test": (
        "minerva_ai.commands.loadtest:load_test",
        "Put load on the service over HTTP and WebSocket; gate on thresholds.",
    ),
    "logs": ("minerva_ai.commands.logs:logs", "Send, tail, follow and export log entries."),
    "readiness-check": (
        "minerva_ai.commands.readiness:readiness_check",
        "Run release checks from a readiness.yaml; pass, warn, fail or error for each.",
    ),
    "test": (
        "minerva_ai.commands.test:test",
        "Run model and prompt tests and suites through the service; read, compare and export them.",
    ),
    "server": (
        "minerva_ai.commands.server:server",
        "Run the minerva-ai service, and administer its database directly.",
    ),
}


class RootGroup(HelpGroup):
    """Loads subcommands on demand and turns errors into messages and exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = LAZY_COMMANDS[cmd_name][0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        command: click.Command = getattr(module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the table above, without importing them."""
        rows = [(name, LAZY_COMMANDS[name][1]) for name in sorted(LAZY_COMMANDS)]
        rows += [
            (name, command.get_short_help_str(limit=formatter.width))
            for name, command in sorted(self.commands.items())
            if not command.hidden
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except (KeyboardInterrupt, click.Abort):
            click.echo("\ninterrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except MinervaError as exc:
            state = ctx.find_object(State) or State()
            _report(exc, state)
            raise click.exceptions.Exit(exc.exit_code) from None


def _silence_stdout() -> None:
    """After ``| head`` closed the pipe: send further output to /dev/null, quietly."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def _report(exc: Exception, state: State) -> None:
    from minerva_ai.cli.output import style

    color = state.stderr_color()
    lines = _detail_lines(exc.details) if isinstance(exc, ServiceError) else []
    click.echo(style(f"error: {_headline(exc, lines)}", "red", enabled=color), err=True)
    if isinstance(exc, ServiceError):
        for line in lines:
            click.echo(f"  {line}", err=True)
        if isinstance(exc, AuthError) and exc.status == 401:
            hint = "hint: log in with `minerva-ai auth login --with-token` (token on stdin)"
            click.echo(style(hint, "dim", enabled=color), err=True)
        state.debug(f"{exc.status} {exc.code} from {exc.url}")
    if state.verbose:
        click.echo("".join(traceback.format_exception(exc)), err=True, nl=False)


def _headline(exc: Exception, lines: list[str]) -> str:
    """The error's message, without the field list that follows it on separate lines."""
    message = str(exc)
    if not lines or not all(line in message for line in lines):
        return message
    head = message[: message.index(lines[0])].rstrip(" :;")
    code = exc.code if isinstance(exc, ServiceError) else "error"
    return f"{head}:" if head else f"the service refused the request ({code}):"


def _detail_lines(details: Any) -> list[str]:
    if details is None or details == {} or details == []:
        return []
    if isinstance(details, list):
        lines = []
        for item in details:
            if isinstance(item, dict) and "field" in item:
                lines.append(f"{item['field']}: {item.get('message', '')}")
            else:
                lines.append(str(item))
        return lines
    if isinstance(details, dict):
        return [f"{key}: {value}" for key, value in details.items()]
    return [str(details)]


@click.group(cls=RootGroup, epilog=EXIT_CODES, context_settings={"max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="minerva-ai")
@click.option("--url", metavar="URL", help="Service URL (env MINERVA_URL).")
@click.option(
    "--org", metavar="ORG", help="Organization whose stored token to use (env MINERVA_ORG)."
)
@click.option("--profile", metavar="NAME", help="Profile of the config file (env MINERVA_PROFILE).")
@click.option(
    "-o",
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format: table (TSV when piped), json, jsonl, csv or yaml.",
)
@click.option("--no-color", is_flag=True, help="No colour (also NO_COLOR or TERM=dumb).")
@click.option("-q", "--quiet", is_flag=True, help="Only data and errors; no progress messages.")
@click.option("-v", "--verbose", is_flag=True, help="Say where settings came from; tracebacks.")
@click.option("--insecure", is_flag=True, help="Allow sending a token over plain http.")
@click.option("--utc", is_flag=True, help="Show times in UTC on a terminal too.")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    org: str | None,
    profile: str | None,
    output_format: str | None,
    no_color: bool,
    quiet: bool,
    verbose: bool,
    insecure: bool,
    utc: bool,
) -> None:
    """minerva-ai: manage AI features in production from the command line.

    Global options go before the command; -o/--format is also accepted after it.
    Environment: MINERVA_URL, MINERVA_TOKEN, MINERVA_ORG, MINERVA_PROFILE, NO_COLOR.
    Precedence: flag > environment > profile file > default.
    """
    ctx.obj = State(
        url=url,
        org=org,
        profile=profile,
        output_format=output_format,
        no_color=no_color,
        quiet=quiet,
        verbose=verbose,
        insecure=insecure,
        utc=utc,
    )


@cli.command(name="completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(minerva-ai completion bash)"   (e.g. in ~/.bashrc)
    zsh:  eval "$(minerva-ai completion zsh)"    (e.g. in ~/.zshrc)
    fish: minerva-ai completion fish > ~/.config/fish/completions/minerva-ai.fish
    """
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - the Choice above rules it out
        raise click.BadParameter(f"unsupported shell {shell!r}")
    script = completion_class(cli, {}, "minerva-ai", "_MINERVA_AI_COMPLETE").source()
    click.echo(script)


if __name__ == "__main__":
    cli()
