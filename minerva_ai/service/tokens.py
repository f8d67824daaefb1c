"""API tokens: generation, hashing and what each scope allows."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

SCOPES = ("read", "ingest", "write", "admin")
TOKEN_PREFIX = "mnv_"  # noqa: S105 (a prefix, not a secret)

# What holding a scope grants: write reads too, admin grants everything.
_GRANTS = {
    "read": {"read"},
    "ingest": {"ingest"},
    "write": {"read", "write", "ingest"},
    "admin": set(SCOPES),
}


def new_token() -> str:
    """A high-entropy secret (256 bits); only its hash is ever stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_insert(organization_id: UUID, name: str, scopes: list[str]) -> tuple[str, dict[str, Any]]:
    """A new secret, and the parameters of ``create_token`` that store only its hash."""
    secret = new_token()
    params = {
        "organization_id": organization_id,
        "name": name,
        "token_hash": hash_token(secret),
        "scopes": scopes,
    }
    return secret, params


def grants(scopes: Iterable[str], required: str) -> bool:
    return any(required in _GRANTS.get(scope, set()) for scope in scopes)


def invalid_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope not in SCOPES]


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the secret is in here once and nowhere else."""

    id: UUID
    token: str
    scopes: list[str]
    organization_id: UUID
    name: str

    def public(self) -> dict[str, object]:
        return {"id": str(self.id), "token": self.token, "scopes": self.scopes, "name": self.name}
