"""The exceptions minerva-ai raises, and the exit code each one maps to on the CLI.

    MinervaError                  base of everything below
    ├── ConfigError               bad profile, URL, flag value or file (exit 2)
    ├── UsageError                a request that cannot be made as asked (exit 2)
    ├── ServiceError              the service answered with an error (exit 3)
    │   ├── AuthError             401/403 (exit 3, with a login hint)
    │   ├── NotFoundError         404
    │   ├── ConflictError         409 (stale settings version, duplicate name)
    │   └── ValidationError       400/422 with field details
    ├── PartlyRejected            the service accepted only part of a request, e.g.
    │                             some log entries were rejected (exit 3)
    ├── UnreachableError          connection refused, DNS, timeout after retries (exit 4)
    ├── GateFailed                a gate (readiness, test suite, threshold) failed (exit 1)
    └── GateError                 a gate could not be evaluated (exit 5)

Service-side code raises ``minerva_ai.service.errors.ApiError`` instead; the client maps
the service's error envelope back onto ``ServiceError`` and its subclasses, by status:
``service_error()``.
"""

from __future__ import annotations

from typing import Any


class MinervaError(Exception):
    """Base of every error minerva-ai raises on purpose."""

    exit_code = 1


class ConfigError(MinervaError):
    """A flag, environment variable, profile or input file is unusable."""

    exit_code = 2


class UsageError(MinervaError):
    """A request that cannot be made as asked."""

    exit_code = 2


class ServiceError(MinervaError):
    """The service refused the request: status, error code, message and details."""

    exit_code = 3

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, url: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.url = url


class AuthError(ServiceError):
    """401 or 403."""


class NotFoundError(ServiceError):
    """404: the resource does not exist, or is not your organization's."""


class ConflictError(ServiceError):
    """409: a stale version or a duplicate."""


class ValidationError(ServiceError):
    """400 or 422, with ``details`` naming each bad field."""


_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}


def service_error(
    status: int, code: str, message: str, details: Any = None, url: str = ""
) -> ServiceError:
    """The error for an answer with ``status``: the subclass the tree above gives it."""
    return _BY_STATUS.get(status, ServiceError)(status, code, message, details, url)


class PartlyRejected(MinervaError):
    """The service stored part of what was sent and refused the rest."""

    exit_code = 3


class UnreachableError(MinervaError):
    """The service could not be reached (after retries)."""

    exit_code = 4

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: is `minerva-ai server start` running? ({reason})")
        self.url = url
        self.reason = reason


class GateFailed(MinervaError):
    """A gate ran and failed."""

    exit_code = 1


class GateError(MinervaError):
    """A gate could not be evaluated."""

    exit_code = 5
