"""What every command shares: the global state, ``@output_options``, ``--limit``, groups.

Kept free of httpx/orjson/yaml imports so that ``minerva-ai --help`` stays fast: the client,
the config and the renderers are imported when a command first needs them.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from minerva_ai.cli.config import Resolved
    from minerva_ai.cli.output import Column, Output
    from minerva_ai.client import Client

# Same order as minerva_ai.cli.output.FORMATS (a test keeps them equal).
FORMATS = ("table", "json", "jsonl", "csv", "yaml")
DEFAULT_TTY_LIMIT = 30

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """The global options, and the objects built from them on first use."""

    def __init__(
        self,
        *,
        url: str | None = None,
        org: str | None = None,
        profile: str | None = None,
        output_format: str | None = None,
        no_color: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        insecure: bool = False,
        utc: bool = False,
    ) -> None:
        self.url = url
        self.org = org
        self.profile = profile
        self.output_format = output_format or "table"
        self.no_color = no_color
        self.quiet = quiet
        self.verbose = verbose
        self.insecure = insecure
        self.utc = utc
        self._resolved: Resolved | None = None
        self._client: Client | None = None

    def resolved(self) -> Resolved:
        """The effective URL and token (flag > env > profile > default)."""
        if self._resolved is None:
            from minerva_ai.cli.config import resolve

            self._resolved = resolve(self.url, self.org, self.profile, insecure=self.insecure)
            self.debug(self._resolved.describe())
        return self._resolved

    def client(self) -> Client:
        """The client for the resolved URL and token, closed when the command ends."""
        if self._client is None:
            from minerva_ai.client import Client

            resolved = self.resolved()
            log = self.debug if self.verbose else None
            self._client = Client(resolved.url, resolved.token, log=log)
            click.get_current_context().call_on_close(self._client.close)
        return self._client

    def output(self) -> Output:
        from minerva_ai.cli.output import Output

        return Output.create(self.output_format, sys.stdout, no_color=self.no_color, utc=self.utc)

    def stderr_color(self) -> bool:
        from minerva_ai.cli.output import color_enabled

        return color_enabled(sys.stderr, no_color=self.no_color)

    def info(self, message: str) -> None:
        """Progress and confirmations, on stderr; silenced by ``-q``."""
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        """A warning on stderr, shown even with ``-q``."""
        from minerva_ai.cli.output import style

        click.echo(style(f"warning: {message}", "yellow", enabled=self.stderr_color()), err=True)

    def debug(self, message: str) -> None:
        """Details shown with ``-v``."""
        if self.verbose:
            click.echo(f"debug: {message}", err=True)

    def limit(self, value: int | None) -> int:
        """``--limit``: as given; else 30 on a terminal and all (0) when piped."""
        if value is not None:
            return value
        return DEFAULT_TTY_LIMIT if sys.stdout.isatty() else 0


pass_state = click.make_pass_decorator(State, ensure=True)


def render_list(
    state: State,
    fetch: Callable[[int | None], Sequence[dict[str, Any]]],
    columns: Sequence[Column],
    limit: int,
    empty: str = "",
) -> None:
    """Fetch one more than ``limit`` to know whether to say that the list was cut; with no
    items, say ``empty`` on stderr under a table (the header alone reads as a glitch)."""
    items = list(fetch(limit + 1 if limit else None))
    if limit and len(items) > limit:
        items = items[:limit]
        state.info(f"showing the first {limit}; use --limit 0 for all")
    state.output().items(items, columns)
    if not items and empty and state.output_format == "table":
        state.info(empty)


def parsed_by(target: str, *, keep: bool = False) -> Callable[..., Any]:
    """A Click callback parsing an option's value with ``module:function``, imported only
    when the option is given (``--help`` stays fast). None stays None; a repeated option
    gives a list; the parser's ``ConfigError``/``UsageError`` becomes Click's bad-parameter
    error (exit 2, naming the option). ``keep``: only check, and keep the value as given."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        import importlib

        from minerva_ai.core.errors import ConfigError, UsageError

        module, _, name = target.partition(":")
        parse = getattr(importlib.import_module(module), name)
        values = list(value) if isinstance(value, tuple) else [value]
        try:
            results = [parse(item) for item in values]
        except (ConfigError, UsageError) as exc:
            raise click.BadParameter(str(exc)) from None
        if keep:
            results = values
        return results if isinstance(value, tuple) else results[0]

    return callback


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(State).output_format = value


def output_options(func: F) -> F:
    """``-o/--format``, accepted after the command as well as before it."""
    option = click.option(
        "-o",
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default=None,
        expose_value=False,
        callback=_set_format,
        help="Output format: table (TSV when piped), json, jsonl, csv or yaml.",
    )
    return option(func)


def limit_option(func: F) -> F:
    """``--limit N``: 30 by default on a terminal, everything when piped; 0 = all."""
    option = click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=None,
        help="Show at most N items (default: 30 on a terminal, all when piped; 0 = all).",
    )
    return option(func)


class Progress:
    """A progress line on stderr: rewritten in place on a terminal; with ``-v`` when
    stderr is not a terminal, a line now and then; never with ``-q``."""

    def __init__(self, state: State, every: float = 0.2) -> None:
        self.tty = sys.stderr.isatty()
        self.enabled = not state.quiet and (self.tty or state.verbose)
        self.every = every if self.tty else max(every, 1.0)
        self._last = 0.0
        self._shown = False

    def update(self, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.every:
            return
        self._last = now
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{text}")
            self._shown = True
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def clear(self) -> None:
        """Remove the progress line (before the final message)."""
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


class HelpGroup(click.Group):
    """A group that shows its help when run bare, and exits 0."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so cleanup (a half-written file) still runs."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
