"""Settings diffs for people: one change per line (coloured on a terminal), or a summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from minerva_ai.cli.output import style

_SIGNS = {"add": ("+", "green"), "remove": ("-", "red"), "change": ("~", "yellow")}


def format_value(value: Any) -> str:
    """A value as compact JSON, the way a diff line shows it."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def render_diff(changes: Sequence[Mapping[str, Any]], *, color: bool = False) -> str:
    """One line per change: ``+ path: new``, ``- path: old``, ``~ path: old -> new``."""
    lines = []
    for change in changes:
        sign, colour = _SIGNS[change["op"]]
        if change["op"] == "add":
            body = format_value(change["new"])
        elif change["op"] == "remove":
            body = format_value(change["old"])
        else:
            body = f"{format_value(change['old'])} -> {format_value(change['new'])}"
        line = f"{sign} {change['path']}: {body}"
        lines.append(style(line, colour, enabled=color))
    return "\n".join(lines)


def summarize_diff(changes: Sequence[Mapping[str, Any]], *, limit: int = 3) -> str:
    """A short summary for a table cell: ``~rate_limits.requests_per_minute +prompts.x (+2)``."""
    if not changes:
        return "no changes"
    signs = [f"{_SIGNS[c['op']][0]}{c['path']}" for c in changes[:limit]]
    more = f" (+{len(changes) - limit})" if len(changes) > limit else ""
    return " ".join(signs) + more
