"""Logs in PostgreSQL: validated ingest through COPY, filtered queries, streamed exports.

Cursor order is commit order: within an organization, the final insert of each batch and
its commit run under one advisory lock, and ``seq`` is drawn inside it, so a reader that
sees a row also sees every row of that organization with a smaller ``seq``. A follower can
therefore ask for ``seq > cursor`` and never miss a row that commits late.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, LiteralString

import orjson
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from minerva_ai.core import loglevels, logregex
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError

Conn = AsyncConnection[Row]

MAX_ROWS_PER_TRANSACTION = 1000
MAX_MESSAGE_CHARS = 64 * 1024
MAX_TEXT_CHARS = 256
MAX_ATTRIBUTES_BYTES = 16 * 1024
FUTURE_TOLERANCE = timedelta(minutes=5)
STATUSES = ("success", "error", "timeout")
FIELDS = frozenset(
    {
        "id",
        "timestamp",
        "feature",
        "level",
        "message",
        "source",
        "request_id",
        "model",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "cost",
        "status",
        "attributes",
    }
)
# Cells a spreadsheet would run as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class Rejected(Exception):
    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    max_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "cursor": self.cursor,
        }


def parse_body(body: bytes, ndjson: bool) -> list[tuple[dict[str, Any], Any]]:
    """Split a body into ``(position, entry-or-Rejected)``: a broken line spoils only itself."""
    if not ndjson:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400,
                f"the body is not valid JSON ({exc}); send a JSON array of "
                "entries, or NDJSON with Content-Type: application/x-ndjson",
                "bad_request",
            ) from None
        if isinstance(document, dict):
            document = [document]
        if not isinstance(document, list):
            raise ApiError(400, "the body must be a JSON array of log entries", "bad_request")
        return [({"index": i}, entry) for i, entry in enumerate(document)]
    parsed: list[tuple[dict[str, Any], Any]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        position = {"index": len(parsed), "line": number}
        try:
            parsed.append((position, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            parsed.append((position, Rejected(f"line {number} is not valid JSON: {exc}")))
    return parsed


def _text(entry: dict[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = entry.get(name)
    if value is None:
        if required:
            raise Rejected(f"{name} is required", name)
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string", name)
    if len(value) > limit:
        raise Rejected(f"{name} is longer than {limit} characters ({len(value)})", name)
    if "\x00" in value:
        raise Rejected(f"{name} contains a NUL character, which PostgreSQL cannot store", name)
    return value


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(v) for v in value)
    return False


def _number(entry: dict[str, Any], name: str, integer: bool = False) -> float | int | None:
    value = entry.get(name)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise Rejected(f"{name} must be {kind}", name)
    if integer and value > 2**31 - 1:
        raise Rejected(f"{name} is too large", name)
    return value


def parse_timestamp(value: Any, now: datetime, retention: timedelta) -> datetime:
    if not isinstance(value, str):
        raise Rejected("timestamp is required: an ISO 8601 time with an offset", "timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(
            f"timestamp {value!r} is not ISO 8601 (e.g. 2026-11-26T10:00:00.123Z)", "timestamp"
        ) from None
    if moment.tzinfo is None:
        raise Rejected(f"timestamp {value!r} has no offset: add Z or +HH:MM", "timestamp")
    if moment > now + FUTURE_TOLERANCE:
        raise Rejected(f"timestamp {value!r} is more than 5 minutes in the future", "timestamp")
    if moment < now - retention:
        raise Rejected(
            f"timestamp {value!r} is older than the retention window ({retention.days} days)",
            "timestamp",
        )
    return moment.astimezone(UTC)


def validate_entry(
    entry: Any, features: dict[str, uuid.UUID], now: datetime, retention: timedelta
) -> tuple[Any, ...]:
    """One entry as a staging row (without ord/organization), or Rejected with the reason."""
    if isinstance(entry, Rejected):
        raise entry
    if not isinstance(entry, dict):
        raise Rejected("an entry must be a JSON object")
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise Rejected(
            f"unknown field {', '.join(unknown)} (put extra data in `attributes`)", unknown[0]
        )
    timestamp = parse_timestamp(entry.get("timestamp"), now, retention)
    ref = _text(entry, "feature", MAX_TEXT_CHARS, required=True)
    assert ref is not None
    feature_id = features.get(ref)
    if feature_id is None:
        raise Rejected(f"unknown feature {ref!r}", "feature")
    raw_level = _text(entry, "level", 32, required=True)
    level = loglevels.normalise(raw_level or "")
    if level is None:
        raise Rejected(f"unknown level {raw_level!r}: use {', '.join(loglevels.LEVELS)}", "level")
    message = _text(entry, "message", MAX_MESSAGE_CHARS, required=True)
    status = _text(entry, "status", 16)
    if status is not None and status not in STATUSES:
        raise Rejected(f"unknown status {status!r}: use {', '.join(STATUSES)}", "status")
    attributes = entry.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise Rejected("attributes must be an object", "attributes")
        encoded = orjson.dumps(attributes)
        if len(encoded) > MAX_ATTRIBUTES_BYTES:
            raise Rejected(f"attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes", "attributes")
        # orjson writes U+0000 as the escape \u0000: without one there is no NUL to find
        if b"\\u0000" in encoded and _contains_nul(attributes):
            raise Rejected("attributes contain a NUL character (\\u0000)", "attributes")
    client_id = _text(entry, "id", MAX_TEXT_CHARS) or str(uuid.uuid4())
    return (
        feature_id,
        client_id,
        timestamp,
        level,
        message,
        _text(entry, "source", MAX_TEXT_CHARS) or "",
        _text(entry, "request_id", MAX_TEXT_CHARS),
        _text(entry, "model", MAX_TEXT_CHARS),
        _number(entry, "latency_ms"),
        _number(entry, "tokens_in", integer=True),
        _number(entry, "tokens_out", integer=True),
        _number(entry, "cost"),
        status,
        # orjson, not psycopg's default json.dumps: ~4 us less per entry in the COPY
        Jsonb(attributes, dumps=orjson.dumps) if attributes is not None else None,
    )


async def resolve_features(
    conn: Conn, org_id: uuid.UUID, entries: Iterable[Any]
) -> dict[str, uuid.UUID]:
    refs = {
        e["feature"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("feature"), str) and "\x00" not in e["feature"]
    }
    if not refs:
        return {}
    ids = [r for r in refs if _is_uuid(r)]
    rows = await (
        await conn.execute(
            queries()["features_by_ref"],
            {"organization_id": org_id, "names": list(refs), "ids": ids},
        )
    ).fetchall()
    found: dict[str, uuid.UUID] = {}
    for row in rows:
        found[row["name"]] = row["id"]
        found[str(row["id"])] = row["id"]
    return found


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Partitions:
    """Daily partitions, created on demand (and ahead by the maintenance job)."""

    def __init__(self) -> None:
        self.known: set[date] = set()

    async def ensure(self, conn: Conn, days: Iterable[date]) -> None:
        missing = sorted(set(days) - self.known)
        if not missing:
            return
        # Most days exist already (created ahead): find them without taking the lock, so
        # an ingest never queues behind DDL that waits for a long export to finish.
        rows = await (
            await conn.execute(queries()["existing_log_partitions"], {"days": missing})
        ).fetchall()
        self.known.update(row["day"] for row in rows)
        missing = sorted(set(missing) - self.known)
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            await conn.execute(queries()["lock_log_partitions"])
            for day in missing:
                await conn.execute(queries()["ensure_log_partition"], {"day": day})
        self.known.update(missing)


async def ingest(
    conn: Conn,
    partitions: Partitions,
    org_id: uuid.UUID,
    parsed: list[tuple[dict[str, Any], Any]],
    retention: timedelta,
    committed: Callable[[int], Awaitable[None]] | None = None,
) -> IngestResult:
    """Store every valid entry (skipping ones already stored); report the rest by position.

    ``committed`` is awaited with the newest cursor after each transaction, so followers
    hear of a large request's first rows without waiting for its last.
    """
    result = IngestResult()
    now = datetime.now(UTC)
    features = await resolve_features(conn, org_id, (e for _, e in parsed))
    rows: list[tuple[Any, ...]] = []
    for position, entry in parsed:
        try:
            rows.append((len(rows), org_id, *validate_entry(entry, features, now, retention)))
        except Rejected as exc:
            result.rejected.append({**position, "field": exc.field, "error": exc.reason})
    if not rows:
        return result
    await partitions.ensure(conn, {row[4].date() for row in rows})
    await conn.execute(queries()["create_log_staging"])
    for start in range(0, len(rows), MAX_ROWS_PER_TRANSACTION):
        chunk = rows[start : start + MAX_ROWS_PER_TRANSACTION]
        # One transaction per chunk. The commit lock, the insert and the commit go out in
        # one round trip (a pipeline), so the lock is never held while this event loop
        # serves other requests: +10-29% ingest throughput (bench/logs_ingest.py). Hence
        # BEGIN/COMMIT by hand, on the pool's autocommit connection.
        try:
            await conn.execute("BEGIN")
            await conn.execute("TRUNCATE log_staging")
            async with conn.cursor().copy(queries()["copy_log_staging"]) as copy:
                for row in chunk:
                    await copy.write_row(row)
            async with conn.pipeline():
                await conn.execute(queries()["lock_org_log_commits"], {"organization_id": org_id})
                inserted = await conn.execute(queries()["insert_logs_from_staging"])
                await conn.execute("COMMIT")
        except BaseException:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            raise
        seqs = [r["seq"] for r in await inserted.fetchall()]
        result.stored += len(seqs)
        result.duplicates += len(chunk) - len(seqs)
        if seqs:
            result.max_seq = max(result.max_seq, *seqs)
            if committed is not None:
                await committed(result.max_seq)
    if result.max_seq:
        result.cursor = str(result.max_seq)
    return result


@dataclass(frozen=True)
class LogFilter:
    """The filters every read path shares: history, export, SSE and WebSocket follow."""

    feature_id: uuid.UUID | None = None
    levels: tuple[str, ...] | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    pattern: str | None = None
    request_id: str | None = None

    @property
    def compiled(self) -> Any:
        return logregex.check(self.pattern) if self.pattern is not None else None

    def where(self, org_id: uuid.UUID) -> sql.Composed:
        parts: list[sql.Composable] = [
            sql.SQL("l.organization_id = {}").format(sql.Literal(org_id))
        ]

        def add(template: LiteralString, value: Any) -> None:
            parts.append(sql.SQL(template).format(sql.Literal(value)))

        if self.feature_id is not None:
            add("l.feature_id = {}", self.feature_id)
        if self.levels is not None:
            add("l.level = ANY({})", list(self.levels))
        if self.source is not None:
            add("l.source = {}", self.source)
        if self.since is not None:
            add('l."timestamp" >= {}', self.since)
        if self.until is not None:
            add('l."timestamp" < {}', self.until)
        if self.pattern is not None:
            add("l.message ~ {}", logregex.postgres(self.pattern))
        if self.request_id is not None:
            add("l.request_id = {}", self.request_id)
        return sql.SQL(" AND ").join(parts)

    def matches(self, row: dict[str, Any], compiled: Any) -> bool:
        """The same test as ``where``, for rows already in hand (the live path)."""
        return (
            (self.feature_id is None or row["feature_id"] == self.feature_id)
            and (self.levels is None or row["level"] in self.levels)
            and (self.source is None or row["source"] == self.source)
            and (self.since is None or row["timestamp"] >= self.since)
            and (self.until is None or row["timestamp"] < self.until)
            and (compiled is None or compiled.search(row["message"]) is not None)
            and (self.request_id is None or row["request_id"] == self.request_id)
        )


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    view["cursor"] = str(view.pop("seq"))
    view.pop("feature_id", None)
    return view


async def list_logs(
    conn: Conn,
    org_id: uuid.UUID,
    filters: LogFilter,
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> list[Row]:
    """Newest first (``before`` pages older), or oldest first after a cursor (``after``)."""
    where = filters.where(org_id)
    if after is not None:
        where = sql.SQL("{} AND l.seq > {}").format(where, sql.Literal(after))
        order = sql.SQL("l.seq")
    else:
        if before is not None:
            where = sql.SQL("{} AND l.seq < {}").format(where, sql.Literal(before))
        order = sql.SQL("l.seq DESC")
    query = sql.SQL("{} WHERE {} ORDER BY {} LIMIT {}").format(
        queries()["log_columns"], where, order, sql.Literal(limit)
    )
    return await (await conn.execute(query)).fetchall()


def _neutralised(column: LiteralString) -> sql.Composable:
    return sql.SQL(
        # Quotes before a formula character count too ('=x becomes ''=x), so dropping one
        # leading quote wherever quotes precede such a character undoes it exactly.
        "CASE WHEN {c} ~ E'^''*[=+@\\t\\r-]' THEN '''' || {c} ELSE {c} END AS {c}"
    ).format(c=sql.Identifier(column))


def export_statement(
    org_id: uuid.UUID, filters: LogFilter, fmt: str, csv_raw: bool
) -> sql.Composed:
    """A ``COPY ... TO STDOUT`` for the export, oldest first, in ``fmt`` (csv or json)."""
    select = sql.SQL("{} WHERE {} ORDER BY l.seq").format(
        queries()["export_columns"], filters.where(org_id)
    )
    if fmt == "csv":
        if not csv_raw:
            text_columns: list[sql.Composable] = [
                _neutralised(c)
                if c in ("id", "message", "source", "feature", "request_id", "model")
                else sql.Identifier(c)
                for c in EXPORT_COLUMNS
            ]
            select = sql.SQL("SELECT {} FROM ({}) t").format(
                sql.SQL(", ").join(text_columns), select
            )
        return sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(select)
    # One JSON object per line. CSV format with quote/delimiter bytes that JSON always
    # escapes turns off COPY's own escaping, so each line is exactly row_to_json's text.
    return sql.SQL(
        "COPY (SELECT row_to_json(t) FROM ({}) t) TO STDOUT "
        "WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
    ).format(select)


EXPORT_COLUMNS = (
    "id",
    "timestamp",
    "level",
    "message",
    "source",
    "feature",
    "request_id",
    "model",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost",
    "status",
    "attributes",
    "cursor",
    "committed_at",
)


EXPORT_BLOCK_BYTES = 64 * 1024


async def export_chunks(conn: Conn, statement: sql.Composed) -> AsyncIterator[bytes]:
    """COPY's output in blocks of whole rows of about EXPORT_BLOCK_BYTES: COPY hands over
    one row at a time, and sending each on its own costs a write system call per row
    (bench/logs_export.py: that was half of the service's CPU)."""
    block = bytearray()
    async with conn.cursor().copy(statement) as copy:
        async for chunk in copy:
            block += chunk
            if len(block) >= EXPORT_BLOCK_BYTES:
                yield bytes(block)
                block.clear()
    if block:
        yield bytes(block)


async def current_cursor(conn: Conn, org_id: uuid.UUID) -> int:
    """Where following "from now" starts: the organization's latest entry, or the latest
    retention dropped when that is newer (so that no gap is reported), else 0."""
    row = await (
        await conn.execute(queries()["max_log_seq"], {"organization_id": org_id})
    ).fetchone()
    return int(row["seq"]) if row else 0


async def expired_before(conn: Conn, org_id: uuid.UUID, cursor: int) -> datetime | None:
    """When a cursor points into logs that retention dropped: the time they ended, else None."""
    row = await (
        await conn.execute(queries()["expired_log_seq"], {"organization_id": org_id})
    ).fetchone()
    if row is not None and cursor < row["max_seq"]:
        when: datetime = row["before"]
        return when
    return None


async def maintain(
    conn: Conn, partitions: Partitions, retention: timedelta, days_ahead: int = 3
) -> list[str]:
    """Create partitions ahead and drop those past retention; return the dropped ones.

    Runs on every instance periodically; a try-lock makes one of them do the work.
    """
    today = datetime.now(UTC).date()
    await partitions.ensure(conn, (today + timedelta(days=d) for d in range(days_ahead + 1)))
    cutoff = today - timedelta(days=retention.days)
    dropped: list[str] = []
    async with conn.transaction():
        row = await (await conn.execute(queries()["try_lock_log_maintenance"])).fetchone()
        if row is None or not row["locked"]:
            return dropped
        for part in await (await conn.execute(queries()["list_log_partitions"])).fetchall():
            day = datetime.strptime(part["name"].removeprefix("logs_p"), "%Y%m%d").date()
            if day + timedelta(days=1) > cutoff:
                continue
            name = sql.Identifier(part["name"])
            await conn.execute(
                sql.SQL(
                    "INSERT INTO log_expired (organization_id, max_seq, before) "
                    "SELECT organization_id, max(seq), {} FROM {} GROUP BY organization_id "
                    "ON CONFLICT (organization_id) DO UPDATE SET "
                    "max_seq = greatest(log_expired.max_seq, excluded.max_seq), "
                    "before = greatest(log_expired.before, excluded.before)"
                ).format(
                    sql.Literal(
                        datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
                    ),
                    name,
                )
            )
            await conn.execute(sql.SQL("DROP TABLE {}").format(name))
            partitions.known.discard(day)
            dropped.append(part["name"])
    return dropped
