"""Write a streamed log export to a file or stdout, and count the entries it held.

Entries are counted by parsing what is written, never by counting newlines: a CSV
message may span lines inside quotes (counted with the csv module), a JSON export is
one array (counted element by element). ``AtomicFile`` makes ``--out`` all or nothing.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from minerva_ai.core.errors import ServiceError

Tick = Callable[[int, int], None]  # (entries so far, bytes so far)
TICK_EVERY = 1000


def _texts(chunks: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _lines(texts: Iterable[str]) -> Iterator[str]:
    """Lines with their ``\\n``, split only there (the csv module handles ``\\r``)."""
    pending = ""
    for text in texts:
        pending += text
        if "\n" not in text:
            continue
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line + "\n"
    if pending:
        yield pending


def _count_csv(chunks: Iterable[bytes], tick: Callable[[int], None]) -> int:
    records = 0
    for records, _ in enumerate(csv.reader(_lines(_texts(chunks))), start=1):
        if records % TICK_EVERY == 0:
            tick(records - 1)
    return max(0, records - 1)  # the header row is not an entry


def _count_jsonl(chunks: Iterable[bytes], tick: Callable[[int], None]) -> int:
    count = 0
    pending = b""
    for chunk in chunks:
        *complete, pending = (pending + chunk).split(b"\n")
        count += sum(1 for line in complete if line.strip())
        tick(count)
    return count + (1 if pending.strip() else 0)


def _count_json(chunks: Iterable[bytes], tick: Callable[[int], None]) -> int:
    """The elements of one JSON array, decoded one at a time as they arrive."""
    decoder = json.JSONDecoder()
    buffer, pos, count = "", 0, 0
    opened = closed = False
    for text in _texts(chunks):
        buffer = buffer[pos:] + text
        pos = 0
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buffer) or closed:
                break
            if not opened:
                if buffer[pos] != "[":
                    raise _malformed("the export does not start with [")
                opened = True
                pos += 1
                continue
            if buffer[pos] == "]":
                closed = True
                pos += 1
                continue
            try:
                _, pos = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                break  # an element cut by the chunk boundary: wait for more
            count += 1
        tick(count)
    if opened and not closed:
        raise _malformed("the export ended inside its JSON array")
    return count


def _malformed(reason: str) -> ServiceError:
    return ServiceError(0, "bad_export", f"{reason}; the output is incomplete")


_COUNTERS = {"csv": _count_csv, "jsonl": _count_jsonl, "json": _count_json}


def write_export(
    sink: BinaryIO, chunks: Iterable[bytes], format: str, tick: Tick | None = None
) -> int:
    """Write every chunk to ``sink`` as it arrives; return the number of entries."""
    written = 0

    def passthrough() -> Iterator[bytes]:
        nonlocal written
        for chunk in chunks:
            sink.write(chunk)
            written += len(chunk)
            yield chunk

    def report(entries: int) -> None:
        if tick is not None:
            tick(entries, written)

    return _COUNTERS[format](passthrough(), report)


class AtomicFile:
    """A file that appears under its name only once complete: written under a temporary
    name beside it, renamed on success, removed on any failure or interruption."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._temp: Path | None = None

    def __enter__(self) -> BinaryIO:
        directory = self.path.parent
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=directory)
        self._temp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # like a file the shell would create
        self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._file is not None and self._temp is not None
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                os.replace(self._temp, self.path)
        finally:
            if exc_type is not None or self._temp.exists():
                with contextlib.suppress(OSError):
                    self._temp.unlink()
