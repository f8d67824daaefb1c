"""PostgreSQL access: named queries from ``sql/queries/*.sql``, the pool, and migrations."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, LiteralString, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from minerva_ai.core.errors import MinervaError
from minerva_ai.service.locks import Lock

log = logging.getLogger("minerva_ai.service.db")

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)

Row = dict[str, Any]


class SchemaError(MinervaError):
    """The database schema is not the one this version expects."""

    exit_code = 2


def _sql_dir() -> Any:
    return resources.files("minerva_ai.service") / "sql"


@cache
def queries() -> dict[str, sql.SQL]:
    """Every named query, loaded once: ``queries()["list_features"]``."""
    loaded: dict[str, sql.SQL] = {}
    for entry in sorted(_sql_dir().joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME.split(entry.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in loaded:
                raise RuntimeError(f"query {name!r} is defined twice")
            loaded[name] = sql.SQL(cast(LiteralString, body.strip().rstrip(";")))
    return loaded


def migrations() -> list[tuple[str, str]]:
    """The forward-only migrations, ``(version, sql)`` in order."""
    directory = _sql_dir().joinpath("migrations")
    found = sorted(e.name for e in directory.iterdir() if e.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), directory.joinpath(name).read_text()) for name in found]


def schema_sql() -> str:
    text: str = _sql_dir().joinpath("schema.sql").read_text()
    return text


def expected_version() -> str:
    return migrations()[-1][0]


def migrate(database_url: str, warn: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations under an advisory lock; return the versions applied.

    A migration's warnings (``RAISE WARNING``: something a person must look at) go to
    ``warn``, or to the log.
    """
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.add_notice_handler(
            lambda notice: (
                (warn or log.warning)(notice.message_primary or "")
                if notice.severity_nonlocalized == "WARNING"
                else None
            )
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (Lock.MIGRATIONS,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, body in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(body)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (Lock.MIGRATIONS,))
    return applied


@dataclass(frozen=True)
class MigrationStatus:
    """Which of this version's migrations a database has, and which it has that we do not."""

    applied: list[dict[str, Any]]  # {version, applied_at}, in order
    pending: list[str]
    unknown: list[str]  # applied by a newer minerva-ai

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown


def migration_status(database_url: str) -> MigrationStatus:
    """The state of the schema, read only (an empty database: everything pending)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        try:
            rows = conn.execute(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            rows = []
    known = [version for version, _ in migrations()]
    done = {row["version"] for row in rows}
    return MigrationStatus(
        applied=[row for row in rows if row["version"] in known],
        pending=[version for version in known if version not in done],
        unknown=sorted(done - set(known)),
    )


def schema_problem(applied: set[str]) -> str | None:
    """What is wrong with a database whose applied migrations are ``applied``, or None
    when they are exactly the ones this version knows (`server start`, /api/health/ready)."""
    known = [version for version, _ in migrations()]
    missing = [v for v in known if v not in applied]
    unknown = sorted(applied - set(known))
    if unknown:
        return (
            f"the database has migrations this version does not know ({', '.join(unknown)}): "
            "run a newer minerva-ai"
        )
    if missing:
        return (
            f"the database schema is behind (missing {', '.join(missing)}): "
            "run `minerva-ai server migrate` with the same DATABASE_URL first"
        )
    return None


def check_schema(database_url: str) -> None:
    """Raise SchemaError unless every migration this version knows has been applied."""
    with psycopg.connect(database_url) as conn:
        try:
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        except psycopg.errors.UndefinedTable:
            done = set()
    problem = schema_problem(done)
    if problem:
        raise SchemaError(problem)


def connect(database_url: str) -> psycopg.Connection[Row]:
    """A short-lived connection for admin commands, rows as dicts, times in UTC."""
    return psycopg.connect(database_url, row_factory=dict_row, options="-c timezone=UTC")
