"""Print log entries: one line each for people (``text``), or the entry objects (``json``).

A text line is: time, level, feature, source, message, then the key fields that are set
(``latency=``, ``tokens=in/out``, ``cost=``, ``status=``). A message stays on its line:
a newline is shown as ``⏎`` and other control characters as escapes (``\\t``, ``\\x1b``),
so a log line can neither split nor restyle the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any, Literal, TextIO, cast

from minerva_ai.cli.output import color_enabled, is_tty, parse_timestamp, style

LogFormat = Literal["text", "json", "jsonl"]
LOG_FORMATS = ("text", "json", "jsonl")
LEVEL_STYLES = {"debug": "dim", "warn": "yellow", "error": "red", "critical": "red"}
LEVEL_WIDTH = len("ERROR")  # CRITICAL is rare enough to stick out
NEWLINE_MARK = "⏎"
MAX_PAD = 32  # a column is padded to the widest value seen, up to this

_NEWLINES = re.compile(r"\r\n|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\t": "\\t", "\r": "\\r"}


def one_line(text: str) -> str:
    """``text`` on one line: newlines as ``⏎``, other control characters escaped."""
    text = _NEWLINES.sub(NEWLINE_MARK, text)
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def key_fields(entry: Mapping[str, Any]) -> str:
    """``latency=120ms tokens=35/410 cost=0.0021 status=error``: only the fields set."""
    parts = []
    latency = entry.get("latency_ms")
    if isinstance(latency, int | float):
        parts.append(f"latency={_number(latency)}ms")
    tokens_in, tokens_out = entry.get("tokens_in"), entry.get("tokens_out")
    if tokens_in is not None or tokens_out is not None:
        shown = ("-" if t is None else str(t) for t in (tokens_in, tokens_out))
        parts.append("tokens=" + "/".join(shown))
    cost = entry.get("cost")
    if isinstance(cost, int | float):
        parts.append(f"cost={_cost(cost)}")
    status = entry.get("status")
    if status:
        parts.append(f"status={one_line(str(status))}")
    return " ".join(parts)


def entry_time(value: Any, *, local: bool) -> str:
    """Milliseconds always; local ``2026-11-26 11:00:00.123`` or UTC ``...T10:00:00.123Z``."""
    moment = parse_timestamp(value)
    if moment is None:
        return "-" if value is None else one_line(str(value))
    if local:
        shown = moment.astimezone()
        return shown.strftime("%Y-%m-%d %H:%M:%S.") + f"{shown.microsecond // 1000:03d}"
    shown = moment.astimezone(UTC)
    return shown.strftime("%Y-%m-%dT%H:%M:%S.") + f"{shown.microsecond // 1000:03d}Z"


def _cost(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def text_line(
    entry: Mapping[str, Any], *, color: bool, local: bool, widths: dict[str, int] | None = None
) -> str:
    """One entry as one line of text (see the module docstring). ``widths`` pads the
    feature and source columns to the widest seen so far, and is updated."""
    widths = widths if widths is not None else {}
    level = str(entry.get("level") or "-")
    padded = level.upper().ljust(LEVEL_WIDTH)
    shown_level = style(padded, LEVEL_STYLES.get(level, ""), enabled=color)
    if level == "critical":
        shown_level = style(shown_level, "bold", enabled=color)
    feature = one_line(str(entry.get("feature") or "-"))
    source = one_line(str(entry.get("source") or "-"))
    for name, text in (("feature", feature), ("source", source)):
        widths[name] = max(widths.get(name, 0), min(len(text), MAX_PAD))
    cells = [
        style(entry_time(entry.get("timestamp"), local=local), "dim", enabled=color),
        shown_level,
        style(feature.ljust(widths["feature"]), "cyan", enabled=color),
        source.ljust(widths["source"]),
        one_line(str(entry.get("message") or "")),
    ]
    fields = key_fields(entry)
    if fields:
        cells.append(style(fields, "dim", enabled=color))
    return "  ".join(cells)


def _json(value: Any, *, pretty: bool = False) -> str:
    import orjson

    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, option=option, default=str).decode()


class LogPrinter:
    """Writes entries to a stream in one format; ``follow`` flushes each line at once."""

    def __init__(
        self,
        format: LogFormat,
        stream: TextIO,
        *,
        color: bool = False,
        local_time: bool = False,
        follow: bool = False,
    ) -> None:
        self.format = format
        self.stream = stream
        self.color = color
        self.local_time = local_time
        self.follow = follow
        self.widths: dict[str, int] = {}

    @classmethod
    def create(
        cls,
        format: str,
        stream: TextIO,
        *,
        no_color: bool = False,
        utc: bool = False,
        follow: bool = False,
    ) -> LogPrinter:
        """Colour and local times only on a TTY (``utc`` forces UTC there too)."""
        if format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {format!r}")
        color = color_enabled(stream, no_color=no_color)
        local = is_tty(stream) and not utc
        return cls(cast(LogFormat, format), stream, color=color, local_time=local, follow=follow)

    def history(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Entries already in hand, oldest first. ``json`` without ``follow`` is one array."""
        if self.format == "json" and not self.follow:
            self.stream.write(_json(list(entries), pretty=is_tty(self.stream)) + "\n")
        else:
            for entry in entries:
                self.stream.write(self._line(entry) + "\n")
        self.stream.flush()

    def entry(self, entry: Mapping[str, Any]) -> None:
        """One followed entry, flushed at once (piped or not)."""
        self.stream.write(self._line(entry) + "\n")
        self.stream.flush()

    def gap(self, gap: Mapping[str, Any]) -> str:
        """The sentence announcing a gap; text output also gets it in the stream."""
        before = gap.get("before")
        when = f" before {entry_time(before, local=self.local_time)}" if before else ""
        notice = (
            f"gap: entries committed{when} were dropped by retention "
            f"({gap.get('reason', 'expired')}) before they could be shown"
        )
        if self.format == "text":
            self.stream.write(style(f"--- {notice} ---", "yellow", enabled=self.color) + "\n")
            self.stream.flush()
        return notice

    def _line(self, entry: Mapping[str, Any]) -> str:
        if self.format == "text":
            return text_line(entry, color=self.color, local=self.local_time, widths=self.widths)
        return _json(dict(entry))
