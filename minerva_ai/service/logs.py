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
from functools import cache
from typing import Any, LiteralString

import orjson
from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from minerva_ai.core import loglevels, logregex
from minerva_ai.core.errors import UsageError
from minerva_ai.service import store
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, bad_query, refuse_nul
from minerva_ai.service.locks import Lock
from minerva_ai.service.log_entries import FIELDS, Rejected, validate_entry
from minerva_ai.service.metrics import LATENCY_BOUNDS
from minerva_ai.service.principal import Principal

Conn = AsyncConnection[Row]

MAX_ROWS_PER_TRANSACTION = 1000
# A batch of at most this many entries goes in as parameters of the INSERT, in one round
# trip with its transaction, instead of through the staging table (create, TRUNCATE, COPY:
# four round trips more, and a new file for the TRUNCATE). Most single calls are one entry.
MAX_ROWS_GIVEN = 16
# Columns given as float8[] to a small batch's INSERT (entries may send 120 or 80.5).
FLOAT_COLUMNS = ("latency_ms", "cost")
STAGING_COLUMNS = (
    "ord",
    "organization_id",
    "feature_id",
    "client_id",
    "timestamp",
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
)
Statement = tuple[sql.SQL | sql.Composed, dict[str, Any]]


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
            await conn.execute(queries()["partition_lock_timeout"])
            await conn.execute(queries()["lock_log_partitions"], {"lock": Lock.LOG_PARTITIONS})
            for day in missing:
                await conn.execute(queries()["ensure_log_partition"], {"day": day})
        self.known.update(missing)


@cache
def insert_logs(rows: str) -> sql.SQL:
    """The INSERT of a batch whose entries come from ``rows``: ``log_rows_staged`` (the
    staging table COPY filled) or ``log_rows_given`` (parameters named by STAGING_COLUMNS)."""
    composed = queries()["insert_logs_from_staging"].format(rows=queries()[rows])
    return sql.SQL(composed.as_string())


async def ingest(
    conn: Conn,
    partitions: Partitions,
    org_id: uuid.UUID,
    parsed: list[tuple[dict[str, Any], Any]],
    retention: timedelta,
    committed: Callable[[int], Awaitable[None]] | None = None,
    *,
    features: dict[str, uuid.UUID] | None = None,
    also: Iterable[Statement] = (),
) -> IngestResult:
    """Store every valid entry (skipping ones already stored); report the rest by position.

    ``committed`` is awaited with the newest cursor after each transaction, so followers
    hear of a large request's first rows without waiting for its last. ``features`` (ref ->
    id), when the caller knows every feature its entries name, saves looking them up.
    ``also``: statements that commit in the first transaction (in one when no entry is
    valid), e.g. a row that must be stored with the entries.
    """
    result = IngestResult()
    now = datetime.now(UTC)
    if features is None:
        features = await resolve_features(conn, org_id, (e for _, e in parsed))
    rows: list[tuple[Any, ...]] = []
    for position, entry in parsed:
        try:
            rows.append((len(rows), org_id, *validate_entry(entry, features, now, retention)))
        except Rejected as exc:
            result.rejected.append({**position, "field": exc.field, "error": exc.reason})
    also = list(also)
    if not rows:
        if also:
            await _commit(conn, org_id, None, also)
        return result
    await partitions.ensure(conn, {row[4].date() for row in rows})
    if len(rows) > MAX_ROWS_GIVEN:
        await conn.execute(queries()["create_log_staging"])
    for start in range(0, len(rows), MAX_ROWS_PER_TRANSACTION):
        chunk = rows[start : start + MAX_ROWS_PER_TRANSACTION]
        statements, also = also, []
        if len(rows) <= MAX_ROWS_GIVEN:
            values = zip(*chunk, strict=True)
            columns = {name: list(v) for name, v in zip(STAGING_COLUMNS, values, strict=True)}
            for name in FLOAT_COLUMNS:  # psycopg dumps a list of one type: 120 and 80.5 mixed
                columns[name] = [None if v is None else float(v) for v in columns[name]]
            given = (insert_logs("log_rows_given"), columns)
            inserted = await _commit(conn, org_id, given, statements)
        else:
            inserted = await _commit(conn, org_id, None, statements, chunk)
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


async def _commit(
    conn: Conn,
    org_id: uuid.UUID,
    insert: Statement | None,
    also: list[Statement],
    staged: list[tuple[Any, ...]] | None = None,
) -> Any:
    """One transaction: the entries (``insert``, or ``staged`` through the staging table),
    then ``also``; the cursor of the INSERT's new seqs (None without entries).

    The commit lock, the insert and the commit go out in one round trip (a pipeline), so
    the lock is never held while this event loop serves other requests: +10-29% ingest
    throughput (bench/logs_ingest.py). Hence BEGIN/COMMIT by hand around the COPY, on the
    pool's autocommit connection. Without the COPY there is no BEGIN/COMMIT to send: on an
    autocommit connection the statements of a pipeline up to its Sync (sent when the block
    ends) are one implicit transaction, which holds the lock to its end as well."""
    inserted = None
    try:
        if staged is not None:
            await conn.execute("BEGIN")
            await conn.execute(queries()["truncate_log_staging"])
            async with conn.cursor().copy(queries()["copy_log_staging"]) as copy:
                for row in staged:
                    await copy.write_row(row)
            insert = (insert_logs("log_rows_staged"), {})
        async with conn.pipeline():
            if insert is not None:
                await conn.execute(
                    queries()["lock_org_log_commits"],
                    {"lock": Lock.LOG_COMMITS, "organization_id": org_id},
                )
                statement, params = insert
                inserted = await conn.execute(
                    statement, {**params, "latency_bounds": list(LATENCY_BOUNDS)}
                )
            for statement, params in also:
                await conn.execute(statement, params)
            if staged is not None:
                await conn.execute("COMMIT")
    except BaseException:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.execute("ROLLBACK")
        raise
    return inserted


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


def parse_cursor(value: str | None, name: str) -> int | None:
    """A log cursor from a query parameter or message field ``name``; 400 when it is not one."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise bad_query(name, f"{name} {value!r} is not a log cursor", "not a log cursor")
    return int(value)


def parse_query_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    moment: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            # In UTC: PostgreSQL refuses offsets past 15:59 that Python reads (+22:51).
            moment = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    if moment is None:
        message = f"{name} {value!r} must be an ISO 8601 time with an offset"
        raise bad_query(name, message, "ISO 8601 with offset")
    return moment


async def log_filter(
    pool: AsyncConnectionPool[Conn],
    principal: Principal,
    *,
    feature: str | None,
    level: str | None,
    source: str | None,
    since: str | None,
    until: str | None,
    q: str | None,
    request_id: str | None,
) -> LogFilter:
    """Turn query parameters (shared by every read path) into a LogFilter; 400 when bad."""
    given = {"feature": feature, "source": source, "q": q, "request_id": request_id}
    for name, value in given.items():
        refuse_nul(value, f"query parameter {name}")
    feature_id: uuid.UUID | None = None
    if feature is not None:
        async with pool.connection() as conn:
            feature_id = (await store.get_feature(conn, principal.organization_id, feature))["id"]
    try:
        levels = tuple(loglevels.expand(level)) if level is not None else None
        if q is not None:
            logregex.check(q)
    except UsageError as exc:
        name = "level" if level is not None and "level" in str(exc) else "q"
        raise bad_query(name, str(exc), str(exc)) from None
    return LogFilter(
        feature_id=feature_id,
        levels=levels,
        source=source,
        since=parse_query_time(since, "since"),
        until=parse_query_time(until, "until"),
        pattern=q,
        request_id=request_id,
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


def _neutralised(column: str) -> sql.Composable:
    return queries()["neutralised_column"].format(column=sql.Identifier(column))


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
        return queries()["export_csv"].format(select=select)
    return queries()["export_json"].format(select=select)


EXPORT_COLUMNS = (*FIELDS, "cursor", "committed_at")


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
    conn: Conn,
    partitions: Partitions,
    retention: timedelta,
    fence: Callable[[Conn], Awaitable[None]],
    days_ahead: int = 3,
) -> list[str]:
    """Create partitions ahead and drop those past retention; return the dropped ones.

    The log-maintenance job's work: ``fence`` checks, inside the transaction that drops,
    that this instance still leads the job (``jobs.Lease.fence``).
    """
    today = datetime.now(UTC).date()
    await partitions.ensure(conn, (today + timedelta(days=d) for d in range(days_ahead + 1)))
    cutoff = today - timedelta(days=retention.days)
    dropped: list[str] = []
    async with conn.transaction():
        await fence(conn)
        for part in await (await conn.execute(queries()["list_log_partitions"])).fetchall():
            day = datetime.strptime(part["name"].removeprefix("logs_p"), "%Y%m%d").date()
            if day + timedelta(days=1) > cutoff:
                continue
            partition = sql.Identifier(part["name"])
            day_ended = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
            await conn.execute(
                queries()["expire_log_partition"].format(partition=partition),
                {"before": day_ended},
            )
            await conn.execute(queries()["drop_log_partition"].format(partition=partition))
            partitions.known.discard(day)
            dropped.append(part["name"])
    return dropped
