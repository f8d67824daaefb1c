"""Who is calling: a token of one organization with its scopes. No FastAPI here, so the
store and the demo loader use it without the request layer (``deps.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from minerva_ai.service.errors import ApiError
from minerva_ai.service.tokens import grants


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of one organization, with its scopes."""

    organization_id: UUID
    organization_name: str
    token_id: UUID | None  # None: written by the server itself (demo loader)
    token_name: str
    scopes: tuple[str, ...]

    def require(self, scope: str) -> None:
        if not grants(self.scopes, scope):
            raise ApiError(
                403, f"this token lacks the {scope!r} scope", "forbidden", {"required_scope": scope}
            )
