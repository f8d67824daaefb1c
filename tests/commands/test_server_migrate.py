"""`minerva-ai server migrate --status` and `--dry-run`: read the schema's state, change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner, Result

from minerva_ai.commands.main import cli
from minerva_ai.service import db
from tests.conftest import Servers, scratch_database

KNOWN = [version for version, _ in db.migrations()]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def recorded(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        except psycopg.errors.UndefinedTable:
            return []


@pytest.fixture
def empty_database(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with scratch_database(servers, "minerva_empty", migrated=False) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


@pytest.fixture
def migrated_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def test_status_of_an_empty_database_lists_every_migration_pending_and_exits_1(
    empty_database: str,
) -> None:
    result = invoke("server", "migrate", "--status", "-o", "json")
    assert result.exit_code == 1, result.output
    status = json.loads(result.stdout)
    assert status == {"current": False, "applied": [], "pending": KNOWN, "unknown": []}
    assert "pending: run `minerva-ai server migrate`" in result.stderr
    assert recorded(empty_database) == []  # nothing created, not even the bookkeeping table


def test_status_of_a_current_database_exits_0_with_when_each_was_applied(
    migrated_database: str,
) -> None:
    result = invoke("server", "migrate", "--status", "-o", "json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["current"] is True and status["pending"] == [] and status["unknown"] == []
    assert [row["version"] for row in status["applied"]] == KNOWN
    assert all(row["applied_at"] for row in status["applied"])
    table = invoke("server", "migrate", "--status")
    assert table.exit_code == 0
    rows = [line.split("\t") for line in table.stdout.splitlines()]  # piped: TSV, no header
    assert [row[:2] for row in rows] == [[v, "applied"] for v in KNOWN]
    assert all(row[2].endswith("Z") for row in rows)


def test_status_names_a_migration_of_a_newer_version_and_exits_1(migrated_database: str) -> None:
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('9999_from_the_future')")
    result = invoke("server", "migrate", "--status")
    assert result.exit_code == 1
    assert "9999_from_the_future\tunknown" in result.stdout
    assert "run a newer minerva-ai" in result.stderr


def test_dry_run_prints_what_would_run_and_applies_nothing(empty_database: str) -> None:
    result = invoke("server", "migrate", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == KNOWN
    assert f"would apply {len(KNOWN)} migrations (nothing applied)" in result.stderr
    assert recorded(empty_database) == []
    with psycopg.connect(empty_database) as conn:  # not one table was created
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)
    # ... and the real run then applies exactly those.
    applied = invoke("server", "migrate", "-o", "json")
    assert json.loads(applied.stdout) == {"applied": KNOWN}
    again = invoke("server", "migrate", "--dry-run", "-o", "json")
    assert json.loads(again.stdout) == {"would_apply": []}
    assert "nothing would be applied" in again.stderr


def test_status_and_dry_run_together_is_a_usage_error(migrated_database: str) -> None:
    result = invoke("server", "migrate", "--status", "--dry-run")
    assert result.exit_code == 2
    assert "--status and --dry-run" in result.stderr
