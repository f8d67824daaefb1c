"""What a check produces: a ``Result`` with one of five statuses, and the run's exit code."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DOCS = "docs/readiness.md"


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


# For people: a symbol and a word per status, so no meaning hangs on colour alone.
SYMBOLS = {
    Status.PASS: "✔",
    Status.WARN: "!",
    Status.FAIL: "✘",
    Status.SKIP: "-",
    Status.ERROR: "?",
}


class CheckError(Exception):
    """The check could not be evaluated (unreadable file, unreachable service, ...)."""

    def __init__(self, message: str, remediation: str | None = None) -> None:
        super().__init__(message)
        self.remediation = remediation


@dataclass
class Outcome:
    """What a check type's function returns; the runner adds name, type, timing."""

    status: Status
    message: str
    observed: Any = None
    threshold: Any = None
    remediation: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    id: str
    name: str
    type: str
    status: Status
    message: str
    observed: Any = None
    threshold: Any = None
    remediation: str | None = None
    duration_ms: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    docs_url: str = DOCS

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "status": str(self.status),
            "observed": self.observed,
            "threshold": self.threshold,
            "message": self.message,
            "remediation": self.remediation,
            "duration_ms": self.duration_ms,
            "details": self.details,
            "docs_url": self.docs_url,
        }


def slug(name: str) -> str:
    """A check's id: its name in lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "check"


def docs_url(check_type: str) -> str:
    return f"{DOCS}#{check_type}"


def worst(statuses: list[Status]) -> Status:
    order = [Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.SKIP]
    for status in order:
        if status in statuses:
            return status
    return Status.PASS


def counts(results: list[Result]) -> dict[str, int]:
    found = {str(s): 0 for s in Status}
    for result in results:
        found[str(result.status)] += 1
    return found


def summary_line(results: list[Result]) -> str:
    """The plan's summary line: "N passed, N warnings, N failed, N errors" (and skips)."""
    n = counts(results)
    line = f"{n['pass']} passed, {n['warn']} warnings, {n['fail']} failed, {n['error']} errors"
    return line + (f", {n['skip']} skipped" if n["skip"] else "")


def exit_code(results: list[Result], *, fail_on: str = "fail", interrupted: bool = False) -> int:
    """0 ready; 1 a check failed (or warned, with ``fail_on="warn"``); 5 nothing failed but
    a check could not be evaluated; 130 interrupted."""
    if interrupted:
        return 130
    statuses = {r.status for r in results}
    if Status.FAIL in statuses or (fail_on == "warn" and Status.WARN in statuses):
        return 1
    if Status.ERROR in statuses:
        return 5
    return 0


def now_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
