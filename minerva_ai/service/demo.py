"""Load the demo organization's features and settings from ``examples/`` (idempotently)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import yaml

from minerva_ai.core.errors import ConfigError
from minerva_ai.service import store
from minerva_ai.service.db import queries
from minerva_ai.service.errors import ApiError
from minerva_ai.service.feature_settings import validate_sections
from minerva_ai.service.principal import Principal

DEMO_FILE = "demo-organization.yaml"


def read_demo(examples_dir: Path) -> list[dict[str, Any]]:
    path = examples_dir / DEMO_FILE
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    features = document.get("features") if isinstance(document, dict) else None
    if not isinstance(features, list):
        raise ConfigError(f"{path}: expected a top-level `features:` list")
    for i, feature in enumerate(features):
        _, problems = validate_sections(feature.get("settings", {}))
        if problems:
            listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise ConfigError(f"{path}: features[{i}].settings: {listed}")
    return features


async def _load(database_url: str, organization_id: UUID, features: list[dict[str, Any]]) -> int:
    loaded = 0
    conn = await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=psycopg.rows.dict_row, options="-c timezone=UTC"
    )
    async with conn:
        org = await (
            await conn.execute(queries()["get_organization"], {"id": organization_id})
        ).fetchone()
        assert org is not None
        principal = Principal(organization_id, org["name"], None, "demo loader", ("write",))
        for spec in features:
            fields = {
                "name": spec["name"],
                "display_name": spec.get("display_name", spec["name"]),
                "description": spec.get("description", ""),
                "status": spec.get("status", "active"),
            }
            try:
                feature = await store.create_feature(conn, principal, fields)
            except ApiError:  # already there: a second run changes nothing
                continue
            sections, _ = validate_sections(spec.get("settings", {}))
            if sections:
                await store.write_settings(conn, principal, feature, 1, sections)
            loaded += 1
    return loaded


def load_demo_features(database_url: str, organization_id: UUID, examples_dir: Path) -> int:
    """Create each demo feature that does not exist yet; return how many were created."""
    return asyncio.run(_load(database_url, organization_id, read_demo(examples_dir)))
