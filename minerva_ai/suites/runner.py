"""Running a suite through the service: check it against the feature's settings first (every
model, prompt version and variable a case needs), then run its cases concurrently through
``POST /features/{id}/test``, waiting out 429s up to ``max_wait``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minerva_ai.client.http import AsyncClient
from minerva_ai.core.errors import NotFoundError, ServiceError, UnreachableError
from minerva_ai.core.fingerprint import fingerprint
from minerva_ai.core.templates import PROMPT_REF, template_variables
from minerva_ai.suites.assertions import Answer, judge
from minerva_ai.suites.suite import Case, Suite, SuiteError


@dataclass(frozen=True)
class Job:
    """One call: a case, in one matrix combination, one of its repeats."""

    case: Case
    combination: dict[str, str]
    repeat: int
    model: str | None
    prompt: str | None

    def body(self, cache: bool, candidate: Mapping[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "prompt" if self.prompt else "model",
            "content": self.case.input or "",
            "variables": self.case.variables,
            "repeat": self.repeat,
            "cache": cache,
        }
        if self.prompt:
            body["prompt"] = self.prompt
        if self.model:
            body["modelId"] = self.model
        if candidate is not None:
            body["settings"] = dict(candidate)
        return body


@dataclass
class Outcome:
    """What one job came to: ``pass``, ``fail`` (answered, assertions failed) or ``error``
    (no answer)."""

    job: Job
    status: str
    latency_ms: float | None = None
    cost: float | None = None
    model: str | None = None
    cached: bool = False
    test_id: str | None = None
    score: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    waited_s: float = 0.0
    fingerprint: str | None = None


@dataclass
class Plan:
    jobs: list[Job]
    fingerprint: str


async def _version(client: AsyncClient, feature: str, version: int, cache: dict[int, Any]) -> Any:
    if version not in cache:
        try:
            cache[version] = (await client.settings.version(feature, version))["settings"]
        except NotFoundError:
            cache[version] = None
    return cache[version]


def _variables(prompt: Mapping[str, Any]) -> list[str]:
    texts = [m["content"] for m in prompt.get("messages", [])] or [prompt.get("template", "")]
    names: dict[str, None] = {}
    for text in texts:
        names.update(dict.fromkeys(template_variables(text)))
    return list(names)


async def prepare(client: AsyncClient, suite: Suite, candidate: Mapping[str, Any] | None) -> Plan:
    """The jobs to run, every one checked: SuiteError names the case (and its line) whose
    model, prompt or variables the feature's settings cannot serve."""
    try:
        live = await client.settings.get(suite.feature)
    except NotFoundError:
        raise SuiteError(f"{suite.path}:1: feature {suite.feature!r} does not exist") from None
    settings = dict(live["settings"])
    if candidate is not None:
        settings.update({k: v for k, v in candidate.items() if k in ("models", "prompts")})
    definitions = (settings.get("models") or {}).get("definitions", {})
    versions: dict[int, Any] = {}
    jobs: list[Job] = []
    where = f"{suite.path}"
    for case in suite.cases:
        for combination in suite.combinations():
            model = combination.get("model", case.model)
            prompt_ref = combination.get("prompt", case.prompt)
            label = f"{where}:{case.line}: case {case.name!r}"
            if model is not None and model not in definitions:
                known = ", ".join(sorted(definitions)) or "none"
                raise SuiteError(f"{label}: the feature has no model {model!r} (models: {known})")
            if model is None and not (settings.get("models") or {}).get("primary"):
                raise SuiteError(f"{label}: the feature has no primary model: set model")
            if prompt_ref is not None:
                await _check_prompt(client, suite, case, label, settings, prompt_ref, versions)
            elif case.input is None:
                raise SuiteError(f"{label}: has vars but no prompt to fill and no input to send")
            jobs += [Job(case, combination, i, model, prompt_ref) for i in range(case.repeat)]
    return Plan(jobs, fingerprint(settings))


async def _check_prompt(
    client: AsyncClient,
    suite: Suite,
    case: Case,
    label: str,
    settings: Mapping[str, Any],
    ref: str,
    versions: dict[int, Any],
) -> None:
    match = PROMPT_REF.match(ref)
    assert match is not None  # checked when the suite was read
    name, version = match.group(1), match.group(2)
    prompts = settings.get("prompts") or {}
    source = "the settings"
    if version is not None:
        old = await _version(client, suite.feature, int(version), versions)
        if old is None:
            raise SuiteError(
                f"{label}: prompt {ref!r}: the feature has no settings version {version}"
            )
        prompts, source = old.get("prompts") or {}, f"settings version {version}"
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise SuiteError(f"{label}: no prompt {name!r} in {source} (prompts: {known})")
    given = set(case.variables) | ({"input"} if case.input is not None else set())
    missing = [v for v in _variables(prompts[name]) if v not in given]
    if missing:
        raise SuiteError(
            f"{label}: prompt {ref!r} needs variable{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which the case does not give"
        )


Progress = Callable[[Outcome, int, int], None]


async def _one(
    client: AsyncClient,
    feature: str,
    job: Job,
    *,
    cache: bool,
    candidate: Mapping[str, Any] | None,
    max_wait: float,
) -> Outcome:
    waited = 0.0
    body = job.body(cache, candidate)
    while True:
        try:
            result = await client.tests.run(feature, body)
            break
        except ServiceError as exc:
            if exc.status == 429:
                details = exc.details if isinstance(exc.details, dict) else {}
                delay = float(details.get("retry_after") or 1)
                if waited + delay > max_wait:
                    return Outcome(
                        job,
                        "error",
                        error=f"rate limited ({details.get('limit', 'a limit')}) past "
                        f"--max-wait {max_wait:g} s: {exc.message}",
                        waited_s=waited,
                    )
                waited += delay
                await asyncio.sleep(delay)
                continue
            if exc.status in (401, 403):
                raise  # the token, not the case: the whole run is refused (exit 3)
            return Outcome(job, "error", error=f"{exc.code}: {exc.message}", waited_s=waited)
        except UnreachableError as exc:
            return Outcome(job, "error", error=str(exc), waited_s=waited)
    output = result["output"]
    outcome = Outcome(
        job,
        "error",
        latency_ms=output["processingTime"],
        cost=output["cost"],
        model=result["model"],
        cached=bool(result.get("cached")),
        test_id=result["id"],
        waited_s=waited,
        fingerprint=result.get("fingerprint"),
    )
    if result["status"] != "success":
        error = result.get("error") or {}
        outcome.error = f"{result['status']}: {error.get('message', 'no answer')}"
        return outcome
    verdict = judge(
        job.case.assertions,
        Answer(output["response"] or "", output["processingTime"], output["cost"]),
        job.case.threshold,
    )
    outcome.status = "pass" if verdict.passed else "fail"
    outcome.score, outcome.failures = verdict.score, verdict.failures
    return outcome


async def run(
    client: AsyncClient,
    suite: Suite,
    jobs: list[Job],
    *,
    concurrency: int,
    cache: bool,
    candidate: Mapping[str, Any] | None,
    max_wait: float,
    progress: Progress | None = None,
) -> tuple[list[Outcome], bool]:
    """Every job's outcome, in job order, and whether the run was interrupted (then only
    the jobs that finished are there)."""
    gate = asyncio.Semaphore(concurrency)
    done: dict[int, Outcome] = {}

    async def one(index: int, job: Job) -> None:
        async with gate:
            outcome = await _one(
                client, suite.feature, job, cache=cache, candidate=candidate, max_wait=max_wait
            )
        done[index] = outcome
        if progress is not None:
            progress(outcome, len(done), len(jobs))

    tasks = [asyncio.ensure_future(one(i, job)) for i, job in enumerate(jobs)]
    interrupted = False
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        interrupted = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [done[i] for i in sorted(done)], interrupted
