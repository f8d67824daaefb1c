"""Administration straight against the database, for `minerva-ai server ...` commands.

These run where no API token exists yet (a fresh production database, the last admin
token revoked), so they talk to PostgreSQL directly, synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from minerva_ai.core.errors import ConfigError, UsageError
from minerva_ai.service import db
from minerva_ai.service.db import SchemaError
from minerva_ai.service.locks import Lock
from minerva_ai.service.tokens import IssuedToken, hash_token, invalid_scopes, token_insert

__all__ = [
    "IssuedToken",
    "Organization",
    "SchemaError",
    "bootstrap",
    "check_schema",
    "create_organization",
    "create_token",
    "load_demo",
    "migrate",
    "migration_status",
    "token_is_valid",
]

DEFAULT_ORGANIZATION = "default"

migrate = db.migrate
check_schema = db.check_schema
migration_status = db.migration_status


@dataclass(frozen=True)
class Organization:
    id: UUID
    name: str


def _issue(
    conn: psycopg.Connection[db.Row], org_id: UUID, scopes: list[str], name: str
) -> IssuedToken:
    bad = invalid_scopes(scopes)
    if bad or not scopes:
        raise UsageError(
            f"unknown scope {', '.join(bad) or '(none given)'}: use read, ingest, write or admin"
        )
    secret, params = token_insert(org_id, name, scopes)
    row = conn.execute(db.queries()["create_token"], params).fetchone()
    assert row is not None
    return IssuedToken(row["id"], secret, list(row["scopes"]), org_id, row["name"])


def create_organization(database_url: str, name: str) -> IssuedToken:
    """Create an organization and its first admin token."""
    name = name.strip()
    if not name:
        raise UsageError("an organization needs a name")
    with db.connect(database_url) as conn, conn.transaction():
        row = conn.execute(db.queries()["insert_organization"], {"name": name}).fetchone()
        if row is None:
            raise UsageError(f"organization {name!r} already exists")
        return _issue(conn, row["id"], ["admin"], "first admin token")


def create_token(
    database_url: str, org_name: str, scopes: list[str], name: str | None = None
) -> IssuedToken:
    """Create a token for an existing organization (the way back after losing every admin)."""
    with db.connect(database_url) as conn, conn.transaction():
        org = conn.execute(db.queries()["get_organization_by_name"], {"name": org_name}).fetchone()
        if org is None:
            raise UsageError(f"no organization named {org_name!r}")
        return _issue(conn, org["id"], scopes, name or f"{'+'.join(scopes)} token")


def job_status(database_url: str) -> list[dict[str, Any]]:
    """Each background job's lease (service/jobs.py) and its last run."""
    with db.connect(database_url) as conn:
        return conn.execute(db.queries()["job_status"]).fetchall()


def bootstrap(database_url: str) -> Organization:
    """Ensure the default organization exists (safe when several instances start at once)."""
    with db.connect(database_url) as conn, conn.transaction():
        conn.execute(db.queries()["lock_bootstrap"], {"lock": Lock.BOOTSTRAP})
        conn.execute(db.queries()["insert_organization"], {"name": DEFAULT_ORGANIZATION})
        row = conn.execute(
            db.queries()["get_organization_by_name"], {"name": DEFAULT_ORGANIZATION}
        ).fetchone()
        assert row is not None
        return Organization(row["id"], row["name"])


def token_is_valid(database_url: str, token: str) -> bool:
    with db.connect(database_url) as conn:
        row = conn.execute(
            db.queries()["authenticate_token"], {"token_hash": hash_token(token)}
        ).fetchone()
    return row is not None


def load_demo(database_url: str, organization_id: UUID, examples_dir: Path) -> None:
    """Load the demo organization's features and settings from ``examples_dir``."""
    from minerva_ai.service.demo import load_demo_features

    if not examples_dir.is_dir():
        raise ConfigError(f"no examples directory at {examples_dir}")
    load_demo_features(database_url, organization_id, examples_dir)
