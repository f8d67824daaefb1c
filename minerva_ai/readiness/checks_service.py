"""Check types that ask the service over HTTP, like any user: ``http``, ``service-health``,
``feature-slo``, ``alerts`` and ``settings-drift``. An unreachable service or a refused
request makes the check ``error``, never the run."""

from __future__ import annotations

import time
from typing import Any

from minerva_ai.core.errors import NotFoundError
from minerva_ai.readiness.model import CheckError, Outcome, Status
from minerva_ai.readiness.service import get, service_errors
from minerva_ai.readiness.spec import CheckSpec, Context

SEVERITIES = ("info", "warning", "critical")


def check_http(spec: CheckSpec, ctx: Context) -> Outcome:
    url, expected = spec["url"], spec["status"]
    started = time.monotonic()
    response = get(ctx, url, min(spec.timeout_s, 60.0))
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    details = {"url": url, "status": response.status_code, "latency_ms": elapsed_ms}
    if response.status_code not in expected:
        return Outcome(
            Status.FAIL,
            f"GET {url} answered {response.status_code}, expected {_either(expected)}",
            response.status_code,
            expected,
            f"look at what serves {url}",
            details,
        )
    budget = spec["max_ms"]
    if budget is not None and elapsed_ms > budget:
        return Outcome(
            Status.FAIL,
            f"GET {url} answered {response.status_code} in {elapsed_ms:g} ms, over {budget:g} ms",
            elapsed_ms,
            budget,
            "find what makes it slow",
            details,
        )
    return Outcome(
        Status.PASS,
        f"GET {url} answered {response.status_code} in {elapsed_ms:g} ms",
        elapsed_ms if budget is not None else response.status_code,
        budget if budget is not None else expected,
        None,
        details,
    )


def _either(values: list[int]) -> str:
    return " or ".join(str(v) for v in values)


def check_service_health(spec: CheckSpec, ctx: Context) -> Outcome:
    with service_errors():
        health = ctx.client().health()
    status = health.get("status")
    details = {"url": ctx.url, **health}
    if status == "ok":
        return Outcome(
            Status.PASS,
            f"service {health.get('version', '')} healthy".replace("  ", " "),
            status,
            "ok",
            None,
            details,
        )
    if status == "degraded":
        return Outcome(
            Status.WARN,
            "service degraded: Redis unreachable (live updates paused; ingest and queries go on)",
            status,
            "ok",
            "restore Redis (REDIS_URL)",
            details,
        )
    return Outcome(
        Status.FAIL,
        f"service {status}: PostgreSQL unreachable",
        status,
        "ok",
        "restore PostgreSQL (DATABASE_URL)",
        details,
    )


# ---------------------------------------------------------------- feature SLOs

# option -> (metric field, "max" or "min", unit)
SLO_LIMITS = {
    "max_error_rate": ("error_rate", "max", "%"),
    "max_p95_ms": ("p95_ms", "max", " ms"),
    "min_uptime": ("uptime", "min", "%"),
    "min_health_score": ("health_score", "min", ""),
}


def _features(spec: CheckSpec, ctx: Context) -> list[str]:
    wanted = spec["features"]
    if wanted == ["all"]:
        with service_errors():
            return [f["name"] for f in ctx.client().features.list(status="active")]
    return list(wanted)


def check_feature_slo(spec: CheckSpec, ctx: Context) -> Outcome:
    limits = {key: spec[key] for key in SLO_LIMITS if spec[key] is not None}
    window = spec["window"]
    names = _features(spec, ctx)
    if not names:
        raise CheckError("no active feature to judge", "create features, or name them")
    per_feature: dict[str, Any] = {}
    breaches: list[str] = []
    no_data: list[str] = []
    for name in names:
        with service_errors():
            try:
                figures = ctx.client().metrics.current(name, window=window)
            except NotFoundError:
                raise CheckError(f"no feature {name!r}", "fix `features`") from None
        per_feature[name] = {
            "requests": figures.get("requests"),
            **{SLO_LIMITS[k][0]: figures.get(SLO_LIMITS[k][0]) for k in limits},
        }
        if not figures.get("requests"):
            no_data.append(name)
            continue
        for key, limit in limits.items():
            field, sense, unit = SLO_LIMITS[key]
            value = figures.get(field)
            if value is None:
                continue
            if (sense == "max" and value > limit) or (sense == "min" and value < limit):
                word = "above" if sense == "max" else "below"
                shown = round(value, 2)
                breaches.append(f"{name}: {field} {shown:g}{unit} {word} {limit:g}{unit}")
    details = {"window": window, "features": per_feature, "limits": limits}
    threshold = dict(limits)
    if breaches:
        return Outcome(
            Status.FAIL,
            "; ".join(breaches),
            len(breaches),
            threshold,
            "look at `minerva-ai features metrics FEATURE` and the open alerts",
            details,
        )
    if no_data and not spec["allow_no_data"]:
        raise CheckError(
            f"no traffic in the last {window} for {', '.join(no_data)}: nothing to judge",
            "send traffic first, widen `window`, or set allow_no_data: true",
        )
    judged = len(names) - len(no_data)
    quiet = f" ({len(no_data)} without traffic)" if no_data else ""
    return Outcome(
        Status.PASS,
        f"{judged} feature(s) within their SLO over {window}{quiet}",
        0,
        threshold,
        None,
        details,
    )


# ---------------------------------------------------------------- alerts


def check_alerts(spec: CheckSpec, ctx: Context) -> Outcome:
    floor = spec["alert_severity"]
    with service_errors():
        found = ctx.client().alerts.list(state="open", feature=spec["feature"])
    wanted = SEVERITIES[SEVERITIES.index(floor) :] if floor else SEVERITIES
    counted = [
        a
        for a in found
        if a.get("severity") in wanted
        and (spec["include_acknowledged"] or not a.get("acknowledged_at"))
    ]
    limit = spec["max_open"]
    kind = f"{floor}+ " if floor and floor != "critical" else f"{floor} " if floor else ""
    listed = [
        {k: a.get(k) for k in ("id", "feature", "rule", "severity", "acknowledged_at", "opened_at")}
        for a in counted
    ]
    details = {"open": listed, "severities": list(wanted)}
    if len(counted) > limit:
        names = ", ".join(f"{a.get('feature')}/{a.get('rule')}" for a in counted[:5])
        return Outcome(
            Status.FAIL,
            f"{len(counted)} open {kind}alert(s), at most {limit} allowed: {names}",
            len(counted),
            limit,
            "resolve them (`minerva-ai alerts list`), or acknowledge them when "
            "include_acknowledged is false",
            details,
        )
    return Outcome(
        Status.PASS,
        f"{len(counted)} open {kind}alert(s) (at most {limit})",
        len(counted),
        limit,
        None,
        details,
    )


# ---------------------------------------------------------------- settings drift

SECTIONS = ("models", "prompts", "rate_limits", "monitoring")


def check_settings_drift(spec: CheckSpec, ctx: Context) -> Outcome:
    import yaml

    from minerva_ai.core.settings_diff import diff_settings
    from minerva_ai.readiness.spec import expand

    files, missing = expand(ctx, spec["paths"])
    if missing:
        raise CheckError(f"nothing matches {', '.join(missing)}")
    drifted: dict[str, list[str]] = {}
    for path in files:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckError(f"cannot read {path}: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("feature"), str):
            raise CheckError(f"{path}: no `feature:` naming the feature these settings are for")
        feature = document["feature"]
        # `features settings get F -o yaml` prints the sections under `settings:`
        body = document["settings"] if isinstance(document.get("settings"), dict) else document
        sections = {k: v for k, v in body.items() if k in SECTIONS}
        if not sections:
            raise CheckError(f"{path}: no settings section ({', '.join(SECTIONS)})")
        try:
            with service_errors():
                live = ctx.client().settings.get(feature)
        except CheckError as exc:
            raise CheckError(f"{path}: feature {feature!r}: {exc}") from None
        current = live.get("settings", live)
        changes = diff_settings({k: current.get(k) for k in sections}, sections)
        if changes:
            drifted[str(path.name)] = [
                f"{c['path']}: live {c['old']!r}, file {c['new']!r}" for c in changes[:20]
            ]
    details = {"files": [p.name for p in files], "drifted": drifted}
    if drifted:
        first = next(iter(drifted.items()))
        return Outcome(
            Status.FAIL,
            f"{len(drifted)} of {len(files)} file(s) differ from the live settings; "
            f"{first[0]}: {first[1][0]}",
            len(drifted),
            0,
            "apply the file (`minerva-ai features settings set FEATURE FILE`) or commit "
            "the live settings (`features settings get FEATURE -o yaml`)",
            details,
        )
    return Outcome(
        Status.PASS, f"{len(files)} file(s) equal the live settings", 0, 0, None, details
    )
