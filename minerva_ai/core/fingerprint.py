"""The fingerprint of what a test ran against: a feature's ``models`` and ``prompts``.

A suite run is keyed by it (not by the settings version, which moves on unrelated edits such
as rate limits or alert rules), so a readiness gate can ask whether a suite passed on the
models and prompts now live. The client and the service compute it the same way, here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

SECTIONS = ("models", "prompts")


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON (keys sorted, no spaces) of
    ``{"models": ..., "prompts": ...}`` (a missing section counts as ``{}``)."""
    sections = {name: settings.get(name) or {} for name in SECTIONS}
    return hashlib.sha256(orjson.dumps(sections, option=orjson.OPT_SORT_KEYS)).hexdigest()
