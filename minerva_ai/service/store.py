"""Features, their versioned settings and API tokens in PostgreSQL; every call org-scoped."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Json

from minerva_ai.core.settings_diff import diff_settings
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, bad_query, not_found
from minerva_ai.service.feature_settings import empty_settings
from minerva_ai.service.principal import Principal
from minerva_ai.service.tokens import token_insert

Conn = AsyncConnection[Row]


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str | None, key: str, kind: type[Any] = object) -> Any:
    """The position a cursor names, or None for the first page; 400 when malformed.

    A position that is not a ``kind`` (or an int outside bigint) is malformed too, so a
    forged cursor never reaches SQL as the wrong type.
    """
    if cursor is None:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))[key]
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise TypeError(key)
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ValueError(key)
        return value
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_cursor() from None


def bad_cursor() -> ApiError:
    return bad_query("cursor", "cursor is not one this endpoint issued", "malformed cursor")


def time_position(cursor: str | None) -> tuple[datetime | None, UUID | None]:
    """The ``(created_at, id)`` a newest-first cursor names, ``(None, None)`` for page one."""
    position = decode_cursor(cursor, "t", list)
    if position is None:
        return None, None
    try:
        return datetime.fromisoformat(position[0]), UUID(position[1])
    except (ValueError, IndexError, TypeError):
        raise bad_cursor() from None


def time_cursor(rows: list[Row], limit: int, key: Any) -> str | None:
    """The cursor after ``rows[limit - 1]`` when a page holds more than ``limit`` rows;
    ``key(row)`` is its ``(created_at, id)``."""
    if len(rows) <= limit:
        return None
    at, ident = key(rows[limit - 1])
    return encode_cursor({"t": [at.isoformat(), str(ident)]})


def as_uuid(ref: str) -> UUID | None:
    try:
        return UUID(ref)
    except ValueError:
        return None


async def list_features(
    conn: Conn,
    org_id: UUID,
    *,
    status: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Row], str | None]:
    rows = await (
        await conn.execute(
            queries()["list_features"],
            {
                "organization_id": org_id,
                "status": status,
                "search": search or None,
                "after_name": decode_cursor(cursor, "n", str),
                "limit": limit + 1,
            },
        )
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor({"n": rows[-1]["name"]}) if more else None


async def get_feature(conn: Conn, org_id: UUID, ref: str) -> Row:
    row = await (
        await conn.execute(
            queries()["get_feature"],
            {
                "organization_id": org_id,
                "ref": ref,
                "ref_id": as_uuid(ref),
            },
        )
    ).fetchone()
    if row is None:
        raise not_found(f"feature {ref!r}")
    return row


async def create_feature(conn: Conn, principal: Principal, fields: dict[str, Any]) -> Row:
    async with conn.transaction():
        row = await (
            await conn.execute(
                queries()["create_feature"],
                {
                    "organization_id": principal.organization_id,
                    **fields,
                },
            )
        ).fetchone()
        if row is None:
            raise ApiError(409, f"a feature named {fields['name']!r} already exists", "conflict")
        await _insert_version(conn, principal, row["id"], 1, empty_settings(), [], None)
    return row


async def update_feature(conn: Conn, org_id: UUID, ref: str, fields: dict[str, Any]) -> Row:
    feature = await get_feature(conn, org_id, ref)
    row = await (
        await conn.execute(
            queries()["update_feature"],
            {
                "id": feature["id"],
                "organization_id": org_id,
                "display_name": None,
                "description": None,
                "status": None,
                **fields,
            },
        )
    ).fetchone()
    if row is None:
        raise not_found(f"feature {ref!r}")
    return row


async def delete_feature(conn: Conn, org_id: UUID, ref: str) -> Row:
    feature = await get_feature(conn, org_id, ref)
    row = await (
        await conn.execute(
            queries()["delete_feature"],
            {
                "id": feature["id"],
                "organization_id": org_id,
            },
        )
    ).fetchone()
    if row is None:
        raise not_found(f"feature {ref!r}")
    return row


def settings_view(row: Row) -> dict[str, Any]:
    return {
        "feature_id": row["feature_id"],
        "version": row["version"],
        "settings": row["settings"],
        "created_at": row["created_at"],
        "author": {"token_id": row["author_token_id"], "token_name": row["author_name"]},
    }


async def get_settings(conn: Conn, feature_id: UUID, version: int) -> Row:
    row = await (
        await conn.execute(
            queries()["get_settings_version"],
            {
                "feature_id": feature_id,
                "version": version,
            },
        )
    ).fetchone()
    if row is None:
        raise not_found(f"settings version {version}")
    return row


async def _insert_version(
    conn: Conn,
    principal: Principal,
    feature_id: UUID,
    version: int,
    settings: dict[str, Any],
    diff: list[dict[str, Any]],
    rollback_of: int | None,
) -> Row:
    row = await (
        await conn.execute(
            queries()["insert_settings_version"],
            {
                "feature_id": feature_id,
                "version": version,
                "settings": Json(settings),
                "diff": Json(diff),
                "author_token_id": principal.token_id,
                "author_name": principal.token_name,
                "rollback_of": rollback_of,
            },
        )
    ).fetchone()
    assert row is not None
    return row


def _stale(base_version: int, current_version: int) -> ApiError:
    return ApiError(
        409,
        f"settings changed since version {base_version}: the current version is "
        f"{current_version}; re-read and apply your change again",
        "version_conflict",
        {"current_version": current_version},
    )


async def write_settings(
    conn: Conn,
    principal: Principal,
    feature: Row,
    base_version: int,
    sections: dict[str, Any],
    rollback_of: int | None = None,
    dry_run: bool = False,
) -> tuple[Row, list[dict[str, Any]], bool]:
    """Record a new version where ``sections`` replace the base's; 409 if the base is stale.

    Returns the version's row, the diff from the base, and whether anything was written:
    a change that changes nothing, or a dry run, writes nothing (the row is then the base,
    or the version that would be written). The version bump is a compare-and-set on the
    feature row, so of two writers on the same base exactly one wins, on any instance.
    """
    if base_version != feature["settings_version"]:
        raise _stale(base_version, feature["settings_version"])
    async with conn.transaction():
        previous = await get_settings(conn, feature["id"], base_version)
        merged = {**previous["settings"], **sections}
        diff = diff_settings(previous["settings"], merged)
        if not diff:
            return previous, diff, False
        if dry_run:
            return {**previous, "version": base_version + 1, "settings": merged}, diff, False
        bumped = await (
            await conn.execute(
                queries()["bump_settings_version"],
                {"feature_id": feature["id"], "base_version": base_version},
            )
        ).fetchone()
        if bumped is None:
            current = await get_feature(conn, principal.organization_id, str(feature["id"]))
            raise _stale(base_version, current["settings_version"])
        row = await _insert_version(
            conn, principal, feature["id"], bumped["settings_version"], merged, diff, rollback_of
        )
        return row, diff, True


async def settings_history(
    conn: Conn, feature_id: UUID, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    rows = await (
        await conn.execute(
            queries()["settings_history"],
            {
                "feature_id": feature_id,
                "before_version": decode_cursor(cursor, "v", int),
                "limit": limit + 1,
            },
        )
    ).fetchall()
    more = len(rows) > limit
    items = [
        {
            "version": r["version"],
            "created_at": r["created_at"],
            "author": {"token_id": r["author_token_id"], "token_name": r["author_name"]},
            "diff": r["diff"],
            "rollback_of": r["rollback_of"],
        }
        for r in rows[:limit]
    ]
    return items, encode_cursor({"v": items[-1]["version"]}) if more else None


async def list_tokens(conn: Conn, org_id: UUID) -> list[Row]:
    return await (
        await conn.execute(queries()["list_tokens"], {"organization_id": org_id})
    ).fetchall()


async def create_token(conn: Conn, org_id: UUID, name: str, scopes: list[str]) -> dict[str, Any]:
    """A new token; ``scopes`` are valid (the request's schema names them)."""
    secret, params = token_insert(org_id, name, scopes)
    row = await (await conn.execute(queries()["create_token"], params)).fetchone()
    assert row is not None
    return {**row, "token": secret}


async def revoke_token(conn: Conn, org_id: UUID, token_id: str) -> Row:
    ident = as_uuid(token_id)
    row = None
    if ident is not None:
        row = await (
            await conn.execute(
                queries()["revoke_token"],
                {
                    "id": ident,
                    "organization_id": org_id,
                },
            )
        ).fetchone()
    if row is None:
        raise not_found(f"token {token_id!r}")
    return row
