"""Print the CLI reference (Markdown) from every command's ``--help``.

``python -m minerva_ai.commands.reference > docs/cli-reference.md`` (``make cli-docs``);
tests/commands/test_reference.py fails when the published reference is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from .main import cli

WIDTH = 100


def _walk(
    command: click.Command, path: list[str], parent: click.Context | None
) -> Iterator[tuple[str, str]]:
    ctx = click.Context(
        command, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    yield " ".join(path), command.get_help(ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name], ctx)


def reference() -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated from `--help` by `make cli-docs`; do not edit by hand.",
        "",
    ]
    for name, text in _walk(cli, ["minerva-ai"], None):
        lines += [f"## `{name}`", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference())
