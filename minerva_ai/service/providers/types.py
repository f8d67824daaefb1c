"""The shapes every provider shares: what is sent (CallInput), what came back (Answer),
what went wrong (ProviderError) and one try of one model (Attempt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["success", "error", "timeout"]
# error.kind: what a caller can act on (docs/api/README.md#test-results)
ErrorKind = Literal[
    "provider_error", "unreachable", "timeout", "rate_limited", "limits_unavailable", "refused"
]


@dataclass(frozen=True)
class Image:
    """An image input: a URL passed to the provider untouched, or base64 data."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None

    def data_url(self) -> str:
        return self.url or f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True)
class CallInput:
    """Chat messages (role and text), an optional image for the last user message, and the
    repeat index (the simulator's outcome depends on it)."""

    messages: tuple[tuple[str, str], ...]
    image: Image | None = None
    repeat: int = 0

    @property
    def text(self) -> str:
        return "\n".join(f"{role}: {content}" for role, content in self.messages)

    def system(self) -> str | None:
        parts = [content for role, content in self.messages if role == "system"]
        return "\n\n".join(parts) if parts else None

    def last_user(self) -> str:
        users = [content for role, content in self.messages if role == "user"]
        return users[-1] if users else ""


@dataclass(frozen=True)
class Answer:
    text: str
    tokens_in: int
    tokens_out: int
    provider_model: str | None = None


class ProviderError(Exception):
    """A call that did not produce an answer: its kind and the provider's own message."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.http_status = http_status
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "http_status": self.http_status,
            "retry_after": self.retry_after,
        }


@dataclass
class Attempt:
    """One model tried once."""

    model: str
    provider: str
    status: Status
    latency_ms: float
    simulated: bool
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    response: str | None = None
    error: dict[str, Any] | None = None
    provider_model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "provider_model": self.provider_model,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "tokens": {"input": self.tokens_in, "output": self.tokens_out},
            "cost": self.cost,
            "simulated": self.simulated,
            "error": self.error,
        }
