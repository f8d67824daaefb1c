"""The floor for CLI start-up: a bare two-command Click group (``bare_click.py --help``)."""

from __future__ import annotations

import click


@click.group()
@click.version_option("0.1.0")
def cli() -> None:
    """A bare Click group with two commands."""


@cli.command(name="hello")
@click.argument("name", default="world")
def cli_hello(name: str) -> None:
    """Say hello."""
    click.echo(f"hello {name}")


@cli.command(name="goodbye")
def cli_goodbye() -> None:
    """Say goodbye."""
    click.echo("goodbye")


if __name__ == "__main__":
    cli()
