"""The service as the checks see it: GET a path or URL, and the client's errors as
``CheckError`` (the check could not be evaluated)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from minerva_ai.core.errors import MinervaError, ServiceError, UnreachableError
from minerva_ai.readiness.model import CheckError
from minerva_ai.readiness.spec import Context

if TYPE_CHECKING:
    import httpx


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """The client's errors as ``CheckError``: the check could not be evaluated."""
    try:
        yield
    except UnreachableError as exc:
        raise CheckError(f"service unreachable: {exc}", "start the service or fix --url") from None
    except ServiceError as exc:
        hint = (
            "check MINERVA_TOKEN (a token with the read scope)"
            if exc.status in (401, 403)
            else None
        )
        raise CheckError(f"the service refused: {exc.status} {exc.message}", hint) from None
    except MinervaError as exc:
        raise CheckError(str(exc)) from None


def get(ctx: Context, url: str, timeout_s: float = 30.0) -> httpx.Response:
    """GET ``url``: a path is the service's (with its token), a full URL is sent as is
    (without the token: it is bound to the service)."""
    import httpx

    headers: dict[str, str] = {}
    if url.startswith("/"):
        base = ctx.client().url
        headers = ctx.client().auth_headers()
        url = base + url
    try:
        return httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise CheckError(f"GET {url}: {exc or type(exc).__name__}") from None
