"""Differences between two settings documents, as a list of changes.

Standard library only, so the service (history diffs) and the CLI share one definition;
the CLI renders them (``minerva_ai.cli.diff``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key_path(prefix: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{json.dumps(key)}]"


def _walk(old: Any, new: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            child = _key_path(path, str(key))
            if key not in new:
                out.append({"path": child, "op": "remove", "old": old[key], "new": None})
            elif key not in old:
                out.append({"path": child, "op": "add", "old": None, "new": new[key]})
            else:
                _walk(old[key], new[key], child, out)
        return
    if _is_list(old) and _is_list(new):
        for index in range(max(len(old), len(new))):
            child = f"{path}[{index}]"
            if index >= len(new):
                out.append({"path": child, "op": "remove", "old": old[index], "new": None})
            elif index >= len(old):
                out.append({"path": child, "op": "add", "old": None, "new": new[index]})
            else:
                _walk(old[index], new[index], child, out)
        return
    if not _same_scalar(old, new):
        out.append({"path": path, "op": "change", "old": old, "new": new})


def _same_scalar(old: Any, new: Any) -> bool:
    """Equal values of the same kind; 100 and 100.0 are the same number, True is not 1."""
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers):
        return isinstance(old, bool) == isinstance(new, bool) and old == new
    return type(old) is type(new) and old == new


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def diff_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every difference from ``old`` to ``new`` as ``{"path", "op", "old", "new"}``.

    Mappings are compared key by key (sorted), lists index by index; ``op`` is ``add``,
    ``remove`` or ``change``. Paths read ``models.definitions.main.model`` and
    ``monitoring.alert_rules[0].threshold``; keys that are not plain words are quoted
    (``prompts["a.b"]``). ``old`` is ``None`` for an add, ``new`` for a remove.
    """
    changes: list[dict[str, Any]] = []
    _walk(old, new, "", changes)
    return changes
