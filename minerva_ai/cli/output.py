"""Render results for people and scripts: table (TSV when piped), json, jsonl, csv, yaml.

Colour only on a TTY without ``NO_COLOR``/``--no-color``/``TERM=dumb``; times are local on a
TTY table and UTC everywhere else (``utc=True`` forces UTC).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, cast

FORMATS = ("table", "json", "jsonl", "csv", "yaml")
Format = Literal["table", "json", "jsonl", "csv", "yaml"]
Kind = Literal["text", "time", "list"]

_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_TTY_CELL_WIDTH = 60
_CONTROL_TO_SPACE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


@dataclass(frozen=True)
class Column:
    """A column: a dotted key into each item, its header, how to show it, optional colours
    by value, and an optional function that turns the value into text."""

    key: str
    header: str
    kind: Kind = "text"
    styles: Mapping[str, str] = field(default_factory=dict)
    render: Callable[[Any], str] | None = None


def counted(count: int, singular: str, plural: str) -> str:
    """``1 entry``, ``2 entries``, ``1,000 entries``."""
    return f"{count:,} {singular if count == 1 else plural}"


def color_enabled(
    stream: TextIO, *, no_color: bool = False, env: Mapping[str, str] | None = None
) -> bool:
    """Whether ``stream`` may get ANSI colour: a TTY, and no NO_COLOR/--no-color/TERM=dumb."""
    env = os.environ if env is None else env
    if no_color or env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return is_tty(stream)


def is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def style(text: str, name: str, *, enabled: bool) -> str:
    """``text`` in the ANSI style ``name`` when colour is enabled."""
    code = _ANSI.get(name)
    return f"\x1b[{code}m{text}\x1b[0m" if enabled and code else text


def parse_timestamp(value: Any) -> datetime | None:
    """A datetime from an ISO 8601 string (``Z`` accepted) or a datetime; else ``None``."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: Any, *, local: bool) -> str:
    """ISO 8601 UTC with ``Z`` (``local=False``), or local ``YYYY-MM-DD HH:MM:SS`` for people."""
    moment = parse_timestamp(value)
    if moment is None:
        return "" if value is None else str(value)
    if local:
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def neutralize_formula(cell: Any) -> Any:
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula; numbers untouched."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and not _NUMBER.match(cell):
        return "'" + cell
    return cell


def lookup(item: Mapping[str, Any], key: str) -> Any:
    """``item["a"]["b"]`` for the key ``a.b``; ``None`` when a part is missing."""
    value: Any = item
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _json_bytes(value: Any, *, pretty: bool) -> bytes:
    import orjson

    # times in UTC with Z, as the service writes them
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(value, option=option, default=str)


@dataclass
class Output:
    """Where and how a command writes its data (stdout by default)."""

    format: Format = "table"
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    tty: bool = False
    color: bool = False
    utc: bool = False

    @classmethod
    def create(
        cls,
        format: str = "table",
        stream: TextIO | None = None,
        *,
        no_color: bool = False,
        utc: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Output:
        """An ``Output`` for ``stream``, with TTY and colour detected from it."""
        if format not in FORMATS:
            raise ValueError(f"unknown output format {format!r}")
        stream = stream if stream is not None else sys.stdout
        color = color_enabled(stream, no_color=no_color, env=env)
        return cls(cast(Format, format), stream, is_tty(stream), color, utc)

    def write(self, text: str) -> None:
        """Write ``text`` and a newline (nothing for empty text)."""
        if text:
            self.stream.write(text if text.endswith("\n") else text + "\n")

    def items(
        self,
        items: Sequence[Mapping[str, Any]],
        columns: Sequence[Column],
        *,
        text: Callable[[], str] | None = None,
    ) -> None:
        """A list: rows in table/csv, the items themselves in json/jsonl/yaml.

        ``text``, when given, replaces the table (TTY or piped) with prose, e.g. a diff.
        """
        if self.format == "json":
            self.write(_json_bytes(list(items), pretty=self.tty).decode())
        elif self.format == "jsonl":
            self.write("".join(_json_bytes(i, pretty=False).decode() + "\n" for i in items))
        elif self.format == "yaml":
            self.write(to_yaml(list(items)))
        elif self.format == "csv":
            self.write(self._csv(items, columns))
        elif text is not None:
            self.write(text())
        elif self.tty:
            self.write(self._table(items, columns))
        else:
            self.write(self._tsv(items, columns))

    def item(
        self,
        item: Mapping[str, Any],
        columns: Sequence[Column],
        *,
        text: Callable[[], str] | None = None,
    ) -> None:
        """One object: ``field value`` lines in a table, the object in json/jsonl/yaml."""
        if self.format in ("json", "jsonl"):
            self.write(_json_bytes(item, pretty=self.tty and self.format == "json").decode())
        elif self.format == "yaml":
            self.write(to_yaml(item))
        elif self.format == "csv":
            self.write(self._csv([item], columns))
        elif text is not None:
            self.write(text())
        elif self.tty:
            cells = [[c.key, self._cell(c, lookup(item, c.key))] for c in columns]
            self.write(_tabulate(cells, headers=None))
        else:
            self.write(
                "\n".join(
                    f"{c.key}\t{_escape_tsv(_machine_cell(lookup(item, c.key), c))}"
                    for c in columns
                )
            )

    def _cell(self, column: Column, value: Any) -> str:
        if value is None:
            return "-"
        if column.kind == "time":
            return format_time(value, local=not self.utc)
        text = column.render(value) if column.render else _plain(value)
        text = text.replace("\r\n", " ").translate(_CONTROL_TO_SPACE)
        if len(text) > _TTY_CELL_WIDTH:
            text = text[: _TTY_CELL_WIDTH - 1] + "…"
        return style(text, column.styles.get(text, ""), enabled=self.color)

    def _table(self, items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
        headers = [style(c.header, "bold", enabled=self.color) for c in columns]
        rows = [[self._cell(c, lookup(item, c.key)) for c in columns] for item in items]
        return _tabulate(rows, headers=headers)

    def _tsv(self, items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
        return "\n".join(
            "\t".join(_escape_tsv(_machine_cell(lookup(item, c.key), c)) for c in columns)
            for item in items
        )

    def _csv(self, items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for item in items:
            row = []
            for column in columns:
                value = lookup(item, column.key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    row.append(value)
                else:
                    row.append(neutralize_formula(_machine_cell(value, column)))
            writer.writerow(row)
        return buffer.getvalue()


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, dict | list):
        return _json_bytes(value, pretty=False).decode()
    return str(value)


def _machine_cell(value: Any, column: Column) -> str:
    if value is None:
        return ""
    if column.kind == "time":
        return format_time(value, local=False)
    return column.render(value) if column.render else _plain(value)


def _escape_tsv(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _tabulate(rows: list[list[str]], headers: list[str] | None) -> str:
    from tabulate import tabulate

    if headers is None:
        return tabulate(rows, tablefmt="plain", disable_numparse=True)
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def to_yaml(value: Any) -> str:
    """Block-style YAML, keys in their given order."""
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
