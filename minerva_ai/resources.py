"""The typed resource methods of the client (``client.features``, ``.settings``, ``.tokens``).

Each request is described once here as a ``Call``; the blocking and the async classes
only differ in how they wait for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from minerva_ai.client import AsyncClient, Client

JSON = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request to the service, before it is built for a transport."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None


def segment(value: str | int) -> str:
    """A path segment, escaped (features are addressed by id or by name)."""
    return quote(str(value), safe="")


def feature_path(feature: str) -> str:
    return f"/features/{segment(feature)}"


def settings_path(feature: str) -> str:
    return f"{feature_path(feature)}/settings"


def _features_list_params(
    status: str | None, search: str | None, include_metrics: bool
) -> dict[str, Any]:
    return {"status": status, "search": search, "include_metrics": include_metrics or None}


def _features_create(
    name: str, display_name: str | None, description: str | None, status: str | None
) -> Call:
    fields = {"display_name": display_name, "description": description, "status": status}
    body = {"name": name} | {k: v for k, v in fields.items() if v is not None}
    return Call("POST", "/features", json=body)


def _features_update(
    feature: str, display_name: str | None, description: str | None, status: str | None
) -> Call:
    fields = {"display_name": display_name, "description": description, "status": status}
    body = {k: v for k, v in fields.items() if v is not None}
    return Call("PATCH", feature_path(feature), json=body)


def _settings_put(feature: str, sections: Mapping[str, Any], base_version: int) -> Call:
    return Call("PUT", settings_path(feature), json={"version": base_version, "settings": sections})


def _settings_version(feature: str, version: int) -> Call:
    return Call("GET", f"{settings_path(feature)}/versions/{segment(version)}")


def _settings_rollback(feature: str, version: int) -> Call:
    return Call("POST", f"{settings_path(feature)}/rollback", json={"version": version})


def _tokens_create(scopes: Sequence[str], name: str | None) -> Call:
    return Call("POST", "/tokens", json={"scopes": list(scopes)} | ({"name": name} if name else {}))


class Features:
    """``client.features``: the feature registry."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        include_metrics: bool = False,
        limit: int | None = None,
    ) -> list[JSON]:
        """Features ordered by name, across pages (``limit`` None or 0 = all)."""
        params = _features_list_params(status, search, include_metrics)
        return list(self._c.paginate("/features", params, limit))

    def get(self, feature: str) -> JSON:
        return self._c.data(Call("GET", feature_path(feature)))

    def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        return self._c.data(_features_create(name, display_name, description, status))

    def update(
        self,
        feature: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        """Change the given fields (``None`` leaves a field as it is)."""
        return self._c.data(_features_update(feature, display_name, description, status))

    def delete(self, feature: str) -> JSON:
        return self._c.data(Call("DELETE", feature_path(feature)))


class Settings:
    """``client.settings``: versioned settings (``Client.get_settings`` adds a cache)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def get(self, feature: str) -> JSON:
        return self._c.data(Call("GET", settings_path(feature)))

    def put(self, feature: str, sections: Mapping[str, Any], base_version: int) -> JSON:
        """Replace the given sections; ``ConflictError`` when ``base_version`` is stale."""
        return self._c.data(_settings_put(feature, sections, base_version))

    def history(self, feature: str, *, limit: int | None = None) -> list[JSON]:
        """Versions, newest first, each with its diff against the previous one."""
        return list(self._c.paginate(f"{settings_path(feature)}/history", None, limit))

    def version(self, feature: str, version: int) -> JSON:
        return self._c.data(_settings_version(feature, version))

    def rollback(self, feature: str, version: int) -> JSON:
        """A new version whose settings equal those of ``version``."""
        return self._c.data(_settings_rollback(feature, version))


class Tokens:
    """``client.tokens``: the organization's API tokens (admin scope)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, *, limit: int | None = None) -> list[JSON]:
        return list(self._c.paginate("/tokens", None, limit))

    def create(self, *, scopes: Sequence[str], name: str | None = None) -> JSON:
        """A new token; its secret (``token``) is in this answer only."""
        return self._c.data(_tokens_create(scopes, name))

    def revoke(self, token_id: str) -> JSON:
        return self._c.data(Call("DELETE", f"/tokens/{segment(token_id)}"))


class AsyncFeatures:
    """``client.features`` of ``AsyncClient``."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        include_metrics: bool = False,
        limit: int | None = None,
    ) -> list[JSON]:
        """Features ordered by name, across pages (``limit`` None or 0 = all)."""
        params = _features_list_params(status, search, include_metrics)
        return [item async for item in self._c.paginate("/features", params, limit)]

    async def get(self, feature: str) -> JSON:
        return await self._c.data(Call("GET", feature_path(feature)))

    async def create(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        return await self._c.data(_features_create(name, display_name, description, status))

    async def update(
        self,
        feature: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> JSON:
        """Change the given fields (``None`` leaves a field as it is)."""
        return await self._c.data(_features_update(feature, display_name, description, status))

    async def delete(self, feature: str) -> JSON:
        return await self._c.data(Call("DELETE", feature_path(feature)))


class AsyncSettings:
    """``client.settings`` of ``AsyncClient``."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def get(self, feature: str) -> JSON:
        return await self._c.data(Call("GET", settings_path(feature)))

    async def put(self, feature: str, sections: Mapping[str, Any], base_version: int) -> JSON:
        """Replace the given sections; ``ConflictError`` when ``base_version`` is stale."""
        return await self._c.data(_settings_put(feature, sections, base_version))

    async def history(self, feature: str, *, limit: int | None = None) -> list[JSON]:
        """Versions, newest first, each with its diff against the previous one."""
        path = f"{settings_path(feature)}/history"
        return [item async for item in self._c.paginate(path, None, limit)]

    async def version(self, feature: str, version: int) -> JSON:
        return await self._c.data(_settings_version(feature, version))

    async def rollback(self, feature: str, version: int) -> JSON:
        """A new version whose settings equal those of ``version``."""
        return await self._c.data(_settings_rollback(feature, version))


class AsyncTokens:
    """``client.tokens`` of ``AsyncClient``."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, limit: int | None = None) -> list[JSON]:
        return [item async for item in self._c.paginate("/tokens", None, limit)]

    async def create(self, *, scopes: Sequence[str], name: str | None = None) -> JSON:
        """A new token; its secret (``token``) is in this answer only."""
        return await self._c.data(_tokens_create(scopes, name))

    async def revoke(self, token_id: str) -> JSON:
        return await self._c.data(Call("DELETE", f"/tokens/{segment(token_id)}"))
