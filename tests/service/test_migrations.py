"""Migrations: the numbered files produce exactly schema.sql, are idempotent and safe to run
from several processes at once; check_schema says what to run when they have not been."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from minerva_ai.service import db
from minerva_ai.service.db import SchemaError, check_schema, migrate, migrations, schema_sql
from tests.conftest import Servers, with_database


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases (dropped afterwards)."""
    made: list[str] = []

    def make() -> str:
        name = f"minerva_empty_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return with_database(servers.database_url, name)

    yield make
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# What "the same schema" means: every object of the public schema, by its definition.
CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text, pg_get_partkeydef(c.oid) AS partition_key,
               c.relpersistence::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND c.relname <> 'schema_migrations'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.objid = c.oid AND d.deptype = 'e')""",
    "columns": """
        SELECT table_name, column_name,
               rank() OVER (PARTITION BY table_name ORDER BY ordinal_position) AS position,
               data_type, udt_name, is_nullable, column_default, character_maximum_length,
               numeric_precision, numeric_scale, is_identity, is_generated,
               generation_expression, collation_name
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name <> 'schema_migrations'""",
    "constraints": """
        SELECT cl.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid),
               con.condeferrable, con.condeferred
        FROM pg_constraint con
        JOIN pg_class cl ON cl.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public' AND cl.relname <> 'schema_migrations'""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'schema_migrations'""",
    "sequences": """
        SELECT sequence_name, data_type, start_value, minimum_value, maximum_value,
               increment, cycle_option
        FROM information_schema.sequences WHERE sequence_schema = 'public'""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'""",
    "extensions": """
        SELECT e.extname, e.extversion, n.nspname
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "types": """
        SELECT t.typname, t.typtype::text,
               array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.objid = t.oid AND d.deptype = 'e')
        GROUP BY t.typname, t.typtype""",
}


def catalog(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(database_url) as conn:
        return {
            kind: sorted(conn.execute(query).fetchall(), key=repr)  # type: ignore[arg-type]
            for kind, query in CATALOG.items()
        }


def applied_versions(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_the_migrations_produce_exactly_schema_sql(empty_database: Callable[[], str]) -> None:
    migrated, from_schema = empty_database(), empty_database()
    assert migrate(migrated) == [version for version, _ in migrations()]
    with psycopg.connect(from_schema, autocommit=True) as conn:
        conn.execute(schema_sql())  # type: ignore[arg-type]
    expected, actual = catalog(from_schema), catalog(migrated)
    assert expected["relations"], "schema.sql created no table"
    for kind in CATALOG:
        assert actual[kind] == expected[kind], f"{kind} differ between migrations and schema.sql"


def test_the_catalog_sees_a_difference(empty_database: Callable[[], str]) -> None:
    # The comparison above is only worth something if a drifted schema fails it.
    one, other = empty_database(), empty_database()
    migrate(one)
    migrate(other)
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE INDEX drift_idx ON features (description)")
        conn.execute("ALTER TABLE organizations ALTER COLUMN name DROP NOT NULL")
    first, second = catalog(one), catalog(other)
    assert first["indexes"] != second["indexes"]
    assert first["columns"] != second["columns"]


def test_migrating_twice_changes_nothing(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    migrate(url)
    before = catalog(url)
    assert migrate(url) == []
    assert catalog(url) == before
    assert applied_versions(url) == sorted(version for version, _ in migrations())


def test_concurrent_migrations_apply_each_file_once(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    workers = 4
    barrier = threading.Barrier(workers)
    applied: list[list[str]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(10)
            versions = migrate(url)
        except BaseException as exc:
            with lock:
                failures.append(exc)
            return
        with lock:
            applied.append(versions)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    everything = [version for versions in applied for version in versions]
    assert sorted(everything) == sorted(version for version, _ in migrations())
    assert applied_versions(url) == sorted(everything)
    check_schema(url)


def test_check_schema_names_the_command_on_an_unmigrated_database(
    empty_database: Callable[[], str],
) -> None:
    url = empty_database()
    with pytest.raises(SchemaError, match="minerva-ai server migrate"):
        check_schema(url)


def test_check_schema_names_the_missing_migration(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    migrate(url)
    last = db.expected_version()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last,))
    with pytest.raises(SchemaError, match="minerva-ai server migrate") as raised:
        check_schema(url)
    assert last in str(raised.value)


def test_check_schema_refuses_a_newer_database(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('9999_future')")
    with pytest.raises(SchemaError, match="9999_future"):
        check_schema(url)


def test_check_schema_accepts_a_migrated_database(database_url: str) -> None:
    check_schema(database_url)


def test_migrations_are_numbered_in_order() -> None:
    versions = [version for version, _ in migrations()]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    numbers = [int(version.split("_", 1)[0]) for version in versions]
    assert numbers == list(range(1, len(numbers) + 1))
    assert db.expected_version() == versions[-1]


def test_a_feature_named_optimized_is_reported_when_the_name_becomes_reserved(
    empty_database: Callable[[], str],
) -> None:
    url = empty_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at"
            " timestamptz NOT NULL DEFAULT now())"
        )
        for version, body in migrations():
            if version < "0004":
                conn.execute(body)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        org = conn.execute("INSERT INTO organizations (name) VALUES ('acme') RETURNING id")
        org_id = org.fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO features (organization_id, name, display_name) "
            "VALUES (%s, 'optimized', 'Optimized')",
            (org_id,),
        )
    warnings: list[str] = []
    assert "0004_metrics" in migrate(url, warn=warnings.append)
    [warning] = warnings
    assert 'organization acme has a feature named "optimized"' in warning
    assert "reach it by its id" in warning
