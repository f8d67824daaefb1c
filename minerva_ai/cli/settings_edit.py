"""Edit settings from the command line: read a YAML/JSON settings file, apply ``path=value``."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from minerva_ai.core.errors import ConfigError, ConflictError
from minerva_ai.core.settings_diff import diff_settings

if TYPE_CHECKING:
    from minerva_ai.client import Client

SECTIONS = ("models", "prompts", "rate_limits", "monitoring")
_ENVELOPE_KEYS = {"feature_id", "feature", "version", "settings", "created_at", "author"}

Assignment = tuple[tuple[str, ...], Any]


def load_settings_file(path: str) -> dict[str, Any]:
    """The sections in a YAML or JSON file (``-`` = stdin).

    The file holds sections (``models:``, ``rate_limits:`` ...), or a settings object as
    ``settings get -o json|yaml`` prints it (its ``settings`` are used).
    """
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {name}: it is not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{name} is not valid YAML or JSON: {problem}{where}") from None
    if not isinstance(document, dict):
        expected = ", ".join(SECTIONS)
        raise ConfigError(f"{name}: expected a mapping of settings sections ({expected})")
    if isinstance(document.get("settings"), dict) and set(document) <= _ENVELOPE_KEYS:
        document = document["settings"]
    unknown = sorted(str(key) for key in document if key not in SECTIONS)
    if unknown:
        raise ConfigError(
            f"{name}: unknown settings section {', '.join(unknown)}; expected {', '.join(SECTIONS)}"
        )
    return dict(document)


def parse_assignment(expression: str) -> Assignment:
    """``rate_limits.requests_per_minute=100`` -> ``(("rate_limits", ...), 100)``.

    The value is read as YAML (``100`` is a number, ``null`` or nothing is null, ``[a, b]``
    a list, ``"..."`` a string); other text is taken as it is.
    """
    path_text, equals, value_text = expression.partition("=")
    path = tuple(part.strip() for part in path_text.split("."))
    if not equals or not path_text.strip():
        raise ConfigError(f"invalid --set {expression!r}: expected PATH=VALUE")
    if any(not part for part in path):
        raise ConfigError(f"invalid --set {expression!r}: the path has an empty part")
    if path[0] not in SECTIONS:
        raise ConfigError(
            f"invalid --set {expression!r}: unknown section {path[0]!r}; "
            f"expected {', '.join(SECTIONS)}"
        )
    if len(path) < 2:
        raise ConfigError(f"invalid --set {expression!r}: name a field inside {path[0]!r}")
    return path, _scalar(expression, value_text)


def _scalar(expression: str, text: str) -> Any:
    """YAML for numbers, booleans, null, quoted strings and ``[...]``/``{...}``; any other
    text that YAML would not read as a single value (``a: b``) is kept as a string."""
    collection = text.lstrip().startswith(("[", "{"))
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        if not collection:
            return text
        raise ConfigError(
            f"invalid --set {expression!r}: the value is not valid YAML "
            "(quote text that starts with [ or {)"
        ) from None
    if isinstance(value, dict | list) and not collection:
        return text
    return value


def apply_assignments(
    current: Mapping[str, Any], assignments: Iterable[Assignment]
) -> dict[str, Any]:
    """The sections the assignments touch, taken from ``current`` and changed; a copy."""
    sections: dict[str, Any] = {}
    for path, value in assignments:
        section = path[0]
        if section not in sections:
            sections[section] = copy.deepcopy(current.get(section) or {})
        container: Any = sections[section]
        for depth, part in enumerate(path[1:-1], start=1):
            container = _child(container, part, path[: depth + 1], create=True)
        _assign(container, path[-1], value, path)
    return sections


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _child(container: Any, part: str, path: tuple[str, ...], *, create: bool) -> Any:
    if isinstance(container, list):
        return container[_index(container, part, path)]
    if not isinstance(container, dict):
        raise ConfigError(f"cannot set {_where(path)}: {_where(path[:-1])} is not a mapping")
    if part not in container or container[part] is None:
        if not create:
            raise ConfigError(f"cannot set {_where(path)}: it does not exist")
        container[part] = {}
    return container[part]


def _assign(container: Any, part: str, value: Any, path: tuple[str, ...]) -> None:
    if isinstance(container, list):
        container[_index(container, part, path)] = value
    elif isinstance(container, dict):
        container[part] = value
    else:
        raise ConfigError(f"cannot set {_where(path)}: {_where(path[:-1])} is not a mapping")


def _index(items: list[Any], part: str, path: tuple[str, ...]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(
            f"cannot set {_where(path)}: {_where(path[:-1])} is a list of {len(items)}; "
            f"use an index from 0 to {len(items) - 1}"
        )
    return int(part)


@dataclass(frozen=True)
class SettingsUpdate:
    """What ``update_settings`` did: the version it read, the sections it wrote (or would
    write), the diff, and the new settings object (``None`` on a dry run or no change)."""

    before: dict[str, Any]
    sections: dict[str, Any]
    changes: list[dict[str, Any]]
    after: dict[str, Any] | None
    attempts: int


def update_settings(
    client: Client,
    feature: str,
    *,
    replace: Mapping[str, Any] | None = None,
    assignments: Sequence[Assignment] = (),
    edit: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    dry_run: bool = False,
    retries: int = 1,
) -> SettingsUpdate:
    """Replace whole sections and/or set single fields, on the version just read.

    ``edit`` gets the settings read and returns the sections it changes (``alerts rules``):
    like the assignments, it is applied again to what a retry reads.

    On a version conflict the settings are read again and the change re-applied, at most
    ``retries`` times. Nothing is written on a dry run or when nothing would change.
    """
    attempt = 0
    while True:
        attempt += 1
        before = client.settings.get(feature)
        current = before.get("settings") or {}
        sections = dict(replace or {})
        if edit is not None:
            sections.update(edit({**current, **sections}))
        sections.update(apply_assignments({**current, **sections}, assignments))
        changes = diff_settings(current, {**current, **sections})
        if dry_run:  # the service validates: a dry run fails where the write would
            preview = client.settings.put(feature, sections, before["version"], dry_run=True)
            return SettingsUpdate(before, sections, preview["diff"], None, attempt)
        if not changes:
            return SettingsUpdate(before, sections, changes, None, attempt)
        try:
            after = client.settings.put(feature, sections, before["version"])
        except ConflictError:
            if attempt > retries:
                raise
            continue
        return SettingsUpdate(before, sections, changes, after, attempt)
