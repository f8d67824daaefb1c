"""Parse the times, durations and sizes people type: ``30s``, ``2h30m``, ISO 8601, ``500KB``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from minerva_ai.core.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w``, ``250ms`` or a sum such as ``1h30m``."""
    text = value.strip().lower()
    if not _DURATION.match(text):
        raise ConfigError(
            f"invalid duration {value!r}: expected a number and a unit (ms, s, m, h, d, w), "
            "e.g. 30s, 10m, 2h, 7d, 1h30m"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """A point in time, as an aware UTC datetime.

    A duration means that long ago (``2h`` = two hours before ``now``); ``now`` is accepted;
    otherwise ISO 8601, where a time without an offset is local time.
    """
    text = value.strip()
    reference = now if now is not None else datetime.now(UTC)
    if text.lower() == "now":
        return reference.astimezone(UTC)
    if _DURATION.match(text.lower()):
        return (reference - parse_duration(text)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"invalid time {value!r}: expected a duration ago (30s, 10m, 2h, 7d) "
            "or ISO 8601 (2026-11-26T01:02:03Z; no offset means local time)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # naive input is local time
    return parsed.astimezone(UTC)


def parse_size(value: str) -> int:
    """A size in bytes: ``512``, ``500KB`` (1000), ``500KiB`` (1024), ``10MB``, ``1.5GiB``."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ConfigError(
            f"invalid size {value!r}: expected a number and a unit, e.g. 500KB, 10MiB, 2048"
        )
    number, unit = match.group(1), match.group(2).lower()
    prefix = unit[:1] if unit[:1] in "kmgt" and unit else ""
    if unit not in ("", "b") and (not prefix or unit not in (prefix, prefix + "b", prefix + "ib")):
        raise ConfigError(f"invalid size {value!r}: unknown unit {match.group(2)!r}")
    base = 1024 if unit.endswith("ib") else 1000
    return int(float(number) * base ** _SIZE_POWERS[prefix])
