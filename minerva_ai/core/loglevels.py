"""Log levels: the five we store, the aliases we accept, and level filters like ``warn+``."""

from __future__ import annotations

from minerva_ai.core.errors import UsageError

LEVELS = ("debug", "info", "warn", "error", "critical")

_ALIASES = {
    "trace": "debug",
    "information": "info",
    "notice": "info",
    "warning": "warn",
    "err": "error",
    "fatal": "critical",
    "crit": "critical",
    "emergency": "critical",
    "alert": "critical",
}


def normalise(level: str) -> str | None:
    """The stored level for ``level`` (case-insensitive, ``WARNING``-style aliases), or None."""
    name = level.strip().lower()
    if name in LEVELS:
        return name
    return _ALIASES.get(name)


def expand(spec: str) -> list[str]:
    """``"error,warn"`` -> those levels; ``"warn+"`` -> warn and everything above it."""
    levels: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        at_least = part.endswith("+")
        level = normalise(part.removesuffix("+"))
        if level is None:
            raise UsageError(
                f"unknown level {part!r}: use {', '.join(LEVELS)} (aliases such as WARNING "
                "are accepted), a comma-separated list, or LEVEL+ for that level and above"
            )
        chosen = LEVELS[LEVELS.index(level) :] if at_least else (level,)
        levels.extend(name for name in chosen if name not in levels)
    if not levels:
        raise UsageError("an empty level filter: name at least one level")
    return levels
