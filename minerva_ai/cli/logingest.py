"""Send NDJSON log entries from a file or a pipe: ``minerva-ai logs ingest``.

Lines are read on a thread and sent in batches flushed every second or every 1,000
entries, whichever comes first, so ``tail -F app.log | minerva-ai logs ingest -`` delivers
a trickle promptly and a big file in full batches. A line that is not a JSON object is
reported with its number and never holds back the lines around it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

if TYPE_CHECKING:
    from minerva_ai.client import Client

JSON = dict[str, Any]
FLUSH_ENTRIES = 1000
FLUSH_SECONDS = 1.0
_READ_AHEAD = 10 * FLUSH_ENTRIES
_BOM = b"\xef\xbb\xbf"


@dataclass
class IngestSummary:
    """Running totals; ``rejected`` holds ``{"line", "field", "error"}``, by line."""

    entries: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: list[JSON] = field(default_factory=list)
    cursor: str | None = None

    def as_dict(self) -> JSON:
        return {
            "entries": self.entries,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "cursor": self.cursor,
        }


class _End:
    """The reader reached the end of the input (or failed: ``error``)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def read_batches(
    stream: BinaryIO, max_entries: int = FLUSH_ENTRIES, max_wait: float = FLUSH_SECONDS
) -> Iterator[list[tuple[int, bytes]]]:
    """``(line number, line)`` of the non-blank lines, in batches of at most
    ``max_entries``, none held longer than ``max_wait`` seconds after its first line."""
    lines: queue.Queue[tuple[int, bytes] | _End] = queue.Queue(_READ_AHEAD)

    def read() -> None:
        try:
            for number, line in enumerate(stream, start=1):
                if number == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if line.strip():
                    lines.put((number, line))
        except BaseException as exc:  # handed to the consumer, which raises it
            lines.put(_End(exc))
        else:
            lines.put(_End())

    threading.Thread(target=read, name="ndjson-reader", daemon=True).start()
    pending: list[tuple[int, bytes]] = []
    due = 0.0
    while True:
        try:
            item = lines.get(timeout=max(0.0, due - time.monotonic()) if pending else None)
        except queue.Empty:
            yield pending
            pending = []
            continue
        if isinstance(item, _End):
            if pending:
                yield pending
            if item.error is not None:
                raise item.error
            return
        if not pending:
            due = time.monotonic() + max_wait
        pending.append(item)
        if len(pending) >= max_entries:
            yield pending
            pending = []


def parse_line(line: bytes) -> JSON | str:
    """The entry on ``line``, or why it is not one."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(entry, dict):
        return f"not a JSON object (an entry is {{...}}, this is a {type(entry).__name__})"
    return entry


class NdjsonIngest:
    """Reads NDJSON and sends it; ``summary`` holds what is known so far, also after an
    error or an interruption."""

    def __init__(
        self,
        client: Client,
        *,
        max_entries: int = FLUSH_ENTRIES,
        max_wait: float = FLUSH_SECONDS,
        on_progress: Callable[[IngestSummary], None] | None = None,
    ) -> None:
        self.client = client
        self.max_entries = max_entries
        self.max_wait = max_wait
        self.on_progress = on_progress
        self.summary = IngestSummary()

    def run(self, stream: BinaryIO) -> IngestSummary:
        for batch in read_batches(stream, self.max_entries, self.max_wait):
            self._send(batch)
            if self.on_progress is not None:
                self.on_progress(self.summary)
        return self.summary

    def _send(self, batch: list[tuple[int, bytes]]) -> None:
        rejected: list[JSON] = []
        entries: list[JSON] = []
        numbers: list[int] = []
        for number, line in batch:
            parsed = parse_line(line)
            if isinstance(parsed, str):
                rejected.append({"line": number, "field": None, "error": parsed})
            else:
                entries.append(parsed)
                numbers.append(number)
        if entries:
            totals = self.client.logs.ingest(entries, batch_size=self.max_entries)
            self.summary.stored += totals["stored"]
            self.summary.duplicates += totals["duplicates"]
            self.summary.cursor = totals["cursor"] or self.summary.cursor
            for problem in totals["rejected"]:
                index = problem["index"]
                where = numbers[index] if isinstance(index, int) else None
                problem_at = {"line": where, "field": problem["field"]}
                rejected.append({**problem_at, "error": problem["error"]})
        self.summary.entries += len(batch)
        self.summary.rejected.extend(sorted(rejected, key=lambda r: r["line"] or 0))
