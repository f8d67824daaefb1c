"""The shape of every resource the API sends and receives, defined once.

FastAPI describes requests and responses with these models (docs/api/openapi.yaml);
handlers still encode their answers with orjson (three times faster than FastAPI's
encoder), and the schemathesis run in the test suite proves the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from minerva_ai.service.feature_settings import (
    Models,
    Monitoring,
    Name,
    Prompt,
    RateLimits,
    Slo,
)
from minerva_ai.service.providers.types import ErrorKind

FeatureStatus = Literal["active", "inactive", "maintenance"]
Scope = Literal["read", "ingest", "write", "admin"]
Level = Literal["debug", "info", "warn", "error", "critical"]
CallStatus = Literal["success", "error", "timeout"]
T = TypeVar("T")
MAX_VERSION = 2**31 - 1  # settings versions are PostgreSQL integers


NUL_FREE = "^[^\\x00]*$"


def _nul_free(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which PostgreSQL cannot store")
    return value


# Text a request stores: anything but NUL.
Text = Annotated[str, AfterValidator(_nul_free), Field(json_schema_extra={"pattern": NUL_FREE})]


class Shape(BaseModel):
    # What the service sends has exactly these fields: a client may rely on no others.
    model_config = ConfigDict(extra="forbid")


class Problem(Shape):
    field: str = Field(description="where: a body field by dotted path, or `query parameter x`")
    message: str


class ErrorObject(Shape):
    code: str = Field(description="stable, machine-readable: `not_found`, `conflict`, ...")
    message: str = Field(description="for people: what was wrong and where")
    details: list[Problem] | list[dict[str, Any]] | dict[str, Any] | None = Field(
        description="the problems field by field, or facts about the error; null when none"
    )


class ErrorResponse(Shape):
    """Every answer other than success."""

    success: Literal[False]
    error: ErrorObject


class Envelope(Shape, Generic[T]):
    success: Literal[True]
    data: T


class PageOf(Shape, Generic[T]):
    success: Literal[True]
    data: list[T]
    count: int = Field(ge=0, description="items in this response")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: no more")


Percent = Annotated[float, Field(ge=0, le=100)]
HealthStatus = Literal["healthy", "warning", "error", "no_data"]


class CallFigures(Shape):
    """The figures of a window or step's calls (docs/metrics.md defines each)."""

    requests: int = Field(ge=0, description="calls: log entries with a status")
    successes: int = Field(ge=0)
    errors: int = Field(ge=0)
    timeouts: int = Field(ge=0)
    requests_per_minute: float = Field(ge=0)
    success_rate: Percent | None = Field(description="percent of requests; null: none")
    error_rate: Percent | None = Field(description="percent of requests that failed or timed out")
    uptime: Percent | None = Field(description="percent of minutes with calls that met the SLO")
    response_time: float | None = Field(ge=0, description="mean latency_ms")
    p50_ms: float | None = Field(ge=0)
    p95_ms: float | None = Field(ge=0)
    p99_ms: float | None = Field(ge=0)
    cost: float = Field(ge=0)
    tokens: int = Field(ge=0, description="tokens_in + tokens_out")
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    health_score: Percent | None = Field(description="0-100; null without requests")
    trend: Literal["up", "down", "flat"] | None = Field(
        description="the health score against the span before (flat within 2 points)"
    )
    status: HealthStatus


class ModelFigures(CallFigures):
    model: str | None = Field(description="null: calls that named no model")


class Metrics(CallFigures):
    """A feature's current metrics."""

    feature_id: UUID
    feature: str
    window: str = Field(description="e.g. `5m`: whole minutes, plus the current one so far")
    as_of: datetime
    open_alerts: int = Field(ge=0, description="the feature's open alerts")
    slo: Slo
    models: list[ModelFigures] | None = Field(default=None, description="with by=model")


class SeriesPoint(CallFigures):
    time: datetime = Field(description="the start of the step")


class ModelSeries(Shape):
    model: str | None
    points: list[SeriesPoint]


class MetricsSeries(Shape):
    feature_id: UUID
    feature: str
    step: str
    since: datetime
    until: datetime
    points: list[SeriesPoint]
    models: list[ModelSeries] | None = Field(default=None, description="with by=model")


class AllMetrics(Shape):
    """Every feature's current metrics (a `metrics_update` without a feature)."""

    window: str
    as_of: datetime
    features: list[Metrics]


class Feature(Shape):
    id: UUID
    name: str
    display_name: str
    description: str
    status: FeatureStatus
    settings_version: int = Field(ge=1)
    created_at: datetime
    updated_at: datetime
    metrics: Metrics | None = Field(
        default=None, description="with include_metrics=true: the feature's current metrics"
    )


def _not_an_id(name: str) -> str:
    # A feature is addressed by id or by name: a name that parses as an id would be ambiguous.
    try:
        UUID(name)
    except ValueError:
        return name
    raise ValueError("a name must not have the form of a feature id (a UUID)")


RESERVED_NAMES = ("optimized",)  # paths under /features: GET /features/optimized


def _not_reserved(name: str) -> str:
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved (GET /features/{name} lists features)")
    return name


Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$"),
    AfterValidator(_not_an_id),
    AfterValidator(_not_reserved),
]


class FeatureCreate(Shape):
    name: Slug = Field(description="lowercase slug, unique in the organization")
    display_name: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = None
    description: Annotated[Text, StringConstraints(max_length=4000)] = ""
    status: FeatureStatus = "active"


class FeatureUpdate(Shape):
    display_name: Annotated[Text, StringConstraints(min_length=1, max_length=200)] | None = None
    description: Annotated[Text, StringConstraints(max_length=4000)] | None = None
    status: FeatureStatus | None = None


class FeatureDeleted(Shape):
    id: UUID
    name: str
    deleted: Literal[True]


class SettingsDocument(Shape):
    """A whole settings document: every section present."""

    models: Models
    prompts: dict[Name, Prompt]
    rate_limits: RateLimits
    monitoring: Monitoring


class SettingsSections(Shape):
    """The sections a change replaces; the sections it leaves out are kept."""

    models: Models | None = None
    prompts: dict[Name, Prompt] | None = None
    rate_limits: RateLimits | None = None
    monitoring: Monitoring | None = None


class Author(Shape):
    token_id: UUID | None = Field(
        description="null: written by the server itself (demo, bootstrap)"
    )
    token_name: str | None


class Change(Shape):
    op: Literal["add", "remove", "change"]
    path: str = Field(description="dotted path of the setting: `rate_limits.requests_per_minute`")
    old: Any = None
    new: Any = None


class SettingsVersion(Shape):
    feature_id: UUID
    version: int = Field(ge=1)
    settings: SettingsDocument
    created_at: datetime
    author: Author
    diff: list[Change] | None = Field(default=None, description="with dry_run=true only")
    dry_run: Literal[True] | None = Field(default=None, description="with dry_run=true only")


class HistoryEntry(Shape):
    version: int = Field(ge=1)
    created_at: datetime
    author: Author
    diff: list[Change] = Field(description="what this version changed from the one before")
    rollback_of: int | None = Field(description="the version this one restored, if a rollback")


class SettingsWrite(Shape):
    """`PUT .../settings`: the change, and the version it is based on."""

    version: int = Field(
        ge=1,
        le=MAX_VERSION,
        description="the version the change is based on; a newer current version is a 409. "
        'Alternatively, send it as `If-Match: "v<version>"` and leave it out here.',
    )
    settings: SettingsSections = Field(default_factory=SettingsSections)


class Rollback(Shape):
    """`POST .../settings/rollback`: a new version equal to an old one."""

    version: int = Field(ge=1, le=MAX_VERSION, description="the version to restore")
    base_version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="refuse (409) unless this is still the current version",
    )


class Token(Shape):
    id: UUID
    name: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedToken(Token):
    token: str = Field(description="the secret: shown once, stored only as a hash")


class TokenCreate(Shape):
    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    scopes: list[Scope] = Field(default=["read"], min_length=1)


class TokenRevoked(Shape):
    id: UUID
    revoked: Literal[True]
    revoked_at: datetime


class Organization(Shape):
    id: UUID
    name: str


class Whoami(Shape):
    organization: Organization
    token: Token


class LogEntryIn(BaseModel):
    """One entry as an application reports it (unknown fields are refused, per entry)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: datetime = Field(description="ISO 8601 with an offset; at most 5 min ahead")
    feature: str = Field(max_length=256, description="the feature's name or id")
    level: str = Field(max_length=32, description="debug|info|warn|error|critical, or an alias")
    message: str = Field(max_length=64 * 1024)
    id: str | None = Field(
        default=None, max_length=256, description="the client's id: a retry is not stored twice"
    )
    source: str | None = Field(default=None, max_length=256)
    request_id: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    latency_ms: float | None = Field(default=None, ge=0)
    tokens_in: int | None = Field(default=None, ge=0, le=2**31 - 1)
    tokens_out: int | None = Field(default=None, ge=0, le=2**31 - 1)
    cost: float | None = Field(default=None, ge=0)
    status: CallStatus | None = None
    attributes: dict[str, Any] | None = Field(default=None, description="at most 16 KiB as JSON")


class LogEntry(Shape):
    cursor: str = Field(description="its place in commit order; resume after it with `after`")
    id: str
    timestamp: datetime
    level: Level
    message: str
    source: str
    feature: str | None
    request_id: str | None
    model: str | None
    latency_ms: float | None
    tokens_in: int | None
    tokens_out: int | None
    cost: float | None
    status: CallStatus | None
    attributes: dict[str, Any] | None
    committed_at: datetime


class Rejection(Shape):
    index: int = Field(ge=0, description="the entry's position in the batch")
    line: int | None = Field(default=None, ge=1, description="NDJSON: the line number")
    field: str | None = Field(description="the field at fault, when one is")
    error: str


class IngestResult(Shape):
    stored: int = Field(ge=0)
    duplicates: int = Field(ge=0, description="entries stored before (same id and timestamp)")
    rejected: list[Rejection]
    cursor: str | None = Field(description="the cursor of the last entry stored")


class Gap(Shape):
    reason: Literal["expired"]
    before: str = Field(description="entries before this cursor were dropped by retention")


class LogPage(PageOf[LogEntry]):
    gap: Gap | None = Field(
        default=None, description="with `after`: entries were lost to retention"
    )


class Health(Shape):
    status: Literal["ok", "degraded", "down"]
    version: str
    postgres: Literal["ok", "down"]
    redis: Literal["ok", "degraded"]


class Liveness(Shape):
    status: Literal["alive"]
    version: str
    instance: str = Field(description="this process's X-Minerva-Instance")


class Readiness(Shape):
    status: Literal["ready", "not_ready"]
    version: str
    instance: str = Field(description="this process's X-Minerva-Instance")
    reason: str | None = Field(description="why not ready; null when ready")


# Webhooks (docs/webhooks.md)

WebhookFormat = Literal["json", "slack"]
WebhookSeverity = Literal["info", "warning", "critical"]
LabelKey = Annotated[Text, Field(min_length=1, max_length=100)]
LabelValue = Annotated[Text, Field(max_length=500)]


class WebhookCreate(Shape):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    url: Annotated[Text, Field(min_length=1, max_length=2000, description="http(s) URL")]
    format: WebhookFormat = Field(
        default="json", description="json: the event as is; slack: a Slack message"
    )
    features: list[Annotated[Text, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=100,
        description="only alerts of these features (names or ids); empty: every feature",
    )
    min_severity: WebhookSeverity = Field(
        default="info", description="only alerts of this severity or above"
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=20,
        description="only alerts whose labels include all of these",
    )


class Webhook(Shape):
    id: UUID
    name: str
    url: str = Field(description="a Slack URL's last segment (a credential) is masked")
    format: WebhookFormat
    features: list[UUID] = Field(description="feature ids; empty: every feature")
    min_severity: WebhookSeverity
    labels: dict[str, str]
    created_by: str
    created_at: datetime
    secret_created_at: datetime = Field(description="when the current secret was made")
    previous_secret_expires_at: datetime | None = Field(
        description="after a rotation: the previous secret signs too until then"
    )


class CreatedWebhook(Webhook):
    secret: str = Field(description="the signing secret (`whsec_...`): shown this once")


class WebhookDeleted(Shape):
    id: UUID
    name: str
    deleted: Literal[True]


class WebhookSecret(Shape):
    id: UUID
    secret: str = Field(description="the new signing secret (`whsec_...`): shown this once")
    previous_secret_expires_at: datetime = Field(
        description="the previous secret signs too until then (24 hours)"
    )


class WebhookTestResult(Shape):
    webhook_id: UUID
    event_id: UUID = Field(description="the webhook-id header sent")
    delivered: bool = Field(description="the receiver answered 2xx")
    status_code: int | None = Field(description="the receiver's answer; null: none")
    error: str | None = Field(description="why it was not delivered; null: it was")
    duration_ms: float = Field(ge=0)


class TestOutput(Shape):
    """The plan's output: the answer, our time for the whole call (ms) and its cost (USD)."""

    response: str | None = Field(description="the answering model's text; null when none did")
    processingTime: float = Field(ge=0, description="ms, fallbacks included")
    cost: float | None = Field(description="US dollars, every attempt; null: a price is unknown")


class TokenCounts(Shape):
    input: int = Field(ge=0)
    output: int = Field(ge=0)


class CallError(Shape):
    kind: ErrorKind = Field(description="what went wrong (docs/api/README.md#test-results)")
    message: str = Field(description="the provider's own message where it gave one")
    http_status: int | None = Field(description="the provider's HTTP status, if it answered")
    retry_after: float | None = Field(description="seconds, from the provider's Retry-After")


class TestAttempt(Shape):
    model: str = Field(description="the model's name in the settings")
    provider: Literal["openai", "anthropic", "simulator"]
    provider_model: str | None
    status: CallStatus
    latency_ms: float = Field(ge=0)
    tokens: TokenCounts
    cost: float | None
    simulated: bool
    error: CallError | None


class ChatLine(Shape):
    role: Literal["system", "user", "assistant"]
    content: str


class TestResult(Shape):
    """A model or prompt test: the plan's ``id, status, output``, and how it came about."""

    id: UUID
    feature_id: UUID
    feature: str
    type: Literal["model", "prompt"]
    status: CallStatus
    output: TestOutput
    tokens: TokenCounts = Field(description="every attempt's, added up")
    model: str = Field(description="the model that answered (else the last one tried)")
    provider: Literal["openai", "anthropic", "simulator"]
    provider_model: str | None
    error: CallError | None = Field(description="why the last attempt failed; null on success")
    attempts: list[TestAttempt] = Field(description="in order: what failed before the answer")
    prompt: str | None = Field(description="NAME or NAME@VERSION, when a stored prompt was used")
    rendered_prompt: str
    messages: list[ChatLine]
    input: str
    variables: dict[str, str]
    image: dict[str, Any] | None = Field(description="`url`, or `media_type` and `bytes`")
    repeat: int = Field(ge=0)
    settings_version: int = Field(ge=1, description="the live version the test ran on")
    candidate_hash: str | None = Field(
        description="with candidate `settings`: a hash of them (they are not stored)"
    )
    simulated: bool = Field(description="true when a simulator produced any attempt")
    fingerprint: str | None = Field(
        description="hex SHA-256 of the models and prompts sections the test ran on "
        "(docs/testing.md); null for tests stored before it was recorded"
    )
    cached: bool = Field(
        description="true when the answer came from the shared response cache: its latency "
        "and cost are the original answer's; no model was called, no log entry written"
    )
    request_id: str = Field(description="shared by the attempts' log entries")
    created_at: datetime
