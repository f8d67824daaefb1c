"""Suite runs (``POST /test-runs``): what ``minerva-ai test suite`` stores, checked (its test
ids are tests of the feature, its totals and verdict agree with its cases), and read back
with ``live``: whether it ran on the models and prompts the feature has now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from minerva_ai.core.fingerprint import fingerprint
from minerva_ai.service import store
from minerva_ai.service.bodies import parse_body
from minerva_ai.service.db import Row, queries
from minerva_ai.service.errors import ApiError, bad_query, not_found

Conn = store.Conn
HEX64 = r"^[0-9a-f]{64}$"
RunStatus = Literal["passed", "failed", "error"]
CaseStatus = Literal["pass", "fail", "error"]
MAX_CASES = 100_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunTotals(Strict):
    cases: int = Field(ge=0)
    passed: int = Field(ge=0)
    failed: int = Field(ge=0)
    errors: int = Field(ge=0)
    cached: int = Field(ge=0, description="calls answered from the shared response cache")


class Failure(Strict):
    type: str = Field(max_length=64)
    expected: str = Field(max_length=4096)
    actual: str = Field(max_length=4096)


class RunCase(Strict):
    """One case in one matrix combination (its repeats are one case)."""

    name: str = Field(max_length=1024)
    combination: dict[str, str] = Field(description="`model`, `prompt` of the matrix")
    status: CaseStatus
    runs: int = Field(ge=0)
    repeat: int = Field(ge=1)
    passed_runs: int = Field(ge=0)
    flaky: bool
    latency_ms: float | None
    cost: float | None
    model: str | None = Field(max_length=64)
    cached: int = Field(ge=0)
    score: float | None
    failures: list[Failure]
    error: str | None = Field(max_length=8192)
    test_ids: list[UUID] = Field(description="the tests (`GET /tests/{id}`) the case ran")


class TestRunIn(Strict):
    """``POST /test-runs``."""

    feature: str = Field(max_length=200, description="the feature's name or id")
    suite: str | None = Field(default=None, max_length=4096, description="the suite file")
    description: str | None = Field(default=None, max_length=4096)
    suite_hash: str = Field(pattern=HEX64, description="SHA-256 of the suite and its vars files")
    fingerprint: str = Field(pattern=HEX64, description="of the models and prompts it ran on")
    status: RunStatus
    pass_rate: float = Field(ge=0, le=100)
    required_pass_rate: float = Field(ge=0, le=100)
    totals: RunTotals
    duration_ms: int = Field(ge=0)
    cases: list[RunCase] = Field(max_length=MAX_CASES)


class TestRun(Strict):
    """A stored suite run (``cases`` only in ``GET /test-runs/{id}``)."""

    id: UUID
    feature_id: UUID
    feature: str
    suite: str | None
    description: str | None
    suite_hash: str
    fingerprint: str
    status: RunStatus
    pass_rate: float
    required_pass_rate: float
    totals: RunTotals
    duration_ms: int
    created_at: datetime
    live: bool = Field(
        description="its fingerprint is that of the feature's models and prompts now"
    )
    cases: list[RunCase] | None = Field(default=None, description="in GET /test-runs/{id} only")


_RUN = TypeAdapter(TestRunIn)


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", details=[{"field": field, "message": message}])


def parse(body: bytes) -> TestRunIn:
    run = parse_body(body, _RUN)
    _check_consistent(run)
    return run


def _check_consistent(run: TestRunIn) -> None:
    """The totals count the cases, the pass rate is passed over all, the status follows."""
    counts = {s: sum(c.status == s for c in run.cases) for s in ("pass", "fail", "error")}
    expected = {
        "cases": len(run.cases),
        "passed": counts["pass"],
        "failed": counts["fail"],
        "errors": counts["error"],
    }
    for key, value in expected.items():
        if getattr(run.totals, key) != value:
            raise _invalid(f"totals.{key}", f"is {getattr(run.totals, key)}; the cases say {value}")
    rate = 100.0 * counts["pass"] / len(run.cases) if run.cases else 0.0
    if abs(rate - run.pass_rate) > 0.01:
        raise _invalid("pass_rate", f"is {run.pass_rate:g}; the cases say {rate:.4f}")
    status = (
        "passed"
        if run.pass_rate >= run.required_pass_rate
        else ("failed" if counts["fail"] else "error")
    )
    if run.status != status:
        raise _invalid("status", f"is {run.status}; the pass rate and cases say {status}")


async def create(conn: Conn, org_id: UUID, run: TestRunIn) -> dict[str, Any]:
    feature = await store.get_feature(conn, org_id, run.feature)
    ids = sorted({str(i) for case in run.cases for i in case.test_ids})
    if ids:
        row = await (
            await conn.execute(
                queries()["count_feature_tests"],
                {"organization_id": org_id, "feature_id": feature["id"], "ids": ids},
            )
        ).fetchone()
        assert row is not None
        if row["found"] != len(ids):
            raise _invalid(
                "cases.test_ids",
                f"{len(ids) - row['found']} of {len(ids)} test ids are not tests of "
                f"feature {feature['name']!r}",
            )
    run_id = uuid4()
    document = run.model_dump(mode="json", exclude={"feature"})
    await conn.execute(
        queries()["insert_test_run"],
        {
            "id": run_id,
            "organization_id": org_id,
            "feature_id": feature["id"],
            "created_at": datetime.now(UTC),
            "suite_hash": run.suite_hash,
            "fingerprint": run.fingerprint,
            "status": run.status,
            "pass_rate": run.pass_rate,
            "required_pass_rate": run.required_pass_rate,
            "run": Jsonb(document),
        },
    )
    return await get(conn, org_id, str(run_id))


def _view(row: Row, with_cases: bool) -> dict[str, Any]:
    run = row["run"]
    live = fingerprint({"models": row["models"], "prompts": row["prompts"]}) == row["fingerprint"]
    view = {
        "id": str(row["id"]),
        "feature_id": str(row["feature_id"]),
        "feature": row["feature"],
        "suite": run.get("suite"),
        "description": run.get("description"),
        "suite_hash": row["suite_hash"],
        "fingerprint": row["fingerprint"],
        "status": row["status"],
        "pass_rate": row["pass_rate"],
        "required_pass_rate": row["required_pass_rate"],
        "totals": run["totals"],
        "duration_ms": run["duration_ms"],
        "created_at": row["created_at"],
        "live": live,
    }
    if with_cases:
        view["cases"] = run["cases"]
    return view


async def get(conn: Conn, org_id: UUID, run_id: str) -> dict[str, Any]:
    ident = store.as_uuid(run_id)
    row = None
    if ident is not None:
        row = await (
            await conn.execute(queries()["get_test_run"], {"organization_id": org_id, "id": ident})
        ).fetchone()
    if row is None:
        raise not_found(f"test run {run_id!r}")
    return _view(row, with_cases=True)


async def listing(
    conn: Conn,
    org_id: UUID,
    *,
    feature: str | None,
    suite_hash: str | None,
    status: str | None,
    fingerprint_filter: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    feature_id = None
    if feature is not None:
        row = await (
            await conn.execute(
                queries()["feature_for_test"],
                {"organization_id": org_id, "ref": feature, "ref_id": store.as_uuid(feature)},
            )
        ).fetchone()
        if row is None:
            raise not_found(f"feature {feature!r}")
        feature_id = row["id"]
        if fingerprint_filter == "live":
            fingerprint_filter = fingerprint(row["settings"])
    elif fingerprint_filter == "live":
        raise bad_query(
            "fingerprint",
            "fingerprint=live needs feature_id (live is the fingerprint of one feature)",
            "live needs feature_id",
        )
    before_at, before_id = store.time_position(cursor)
    rows = await (
        await conn.execute(
            queries()["list_test_runs"],
            {
                "organization_id": org_id,
                "feature_id": feature_id,
                "suite_hash": suite_hash,
                "status": status,
                "fingerprint": fingerprint_filter,
                "before_at": before_at,
                "before_id": before_id,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [_view(r, with_cases=False) for r in rows[:limit]]
    next_cursor = store.time_cursor(rows, limit, lambda r: (r["created_at"], r["id"]))
    return items, next_cursor
