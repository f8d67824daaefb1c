"""The check types that ask a live service: health, http, feature SLOs and alerts (real
traffic, a rule that fires), settings drift and load, each passing, warning, failing and
erroring."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from minerva_ai.readiness.model import Status
from minerva_ai.service.app import create_app
from tests.alerts_support import RULE, Alerting, alerting_service
from tests.commands.test_main import closed_port
from tests.conftest import REPO, Servers, ThreadedServer, service_config, wait_until, with_database
from tests.readiness.support import results, write


@pytest.fixture
def alerting(database_url: str, servers: Servers) -> Iterator[Alerting]:
    with alerting_service(database_url, servers.redis_url) as found:
        yield found


def check(alerting: Alerting, base: Path, text: str, token: str | None = None) -> dict:
    service = alerting.service
    return results(base, text, service.url, token or service.token)


def test_service_health_passes_warns_fails_and_errors(
    alerting: Alerting, tmp_path: Path, servers: Servers
) -> None:
    text = "checks: [{name: service, type: service-health}]"
    healthy = check(alerting, tmp_path, text)["service"]
    assert healthy.status is Status.PASS and healthy.details["postgres"] == "ok"
    # Redis unreachable: degraded, a warning
    config = service_config(alerting.service.database_url, f"redis://127.0.0.1:{closed_port()}/0")
    with ThreadedServer(create_app(config)) as url:
        degraded = results(tmp_path, text, url)["service"]
        assert degraded.status is Status.WARN
        assert degraded.observed == "degraded" and "Redis" in degraded.message
    unreachable = results(tmp_path, text, f"http://127.0.0.1:{closed_port()}")["service"]
    assert unreachable.status is Status.ERROR
    assert unreachable.message.startswith("service unreachable")


def test_service_health_fails_when_postgresql_is_gone(servers: Servers, tmp_path: Path) -> None:
    name = "readiness_gone"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{servers.template}"')
    config = service_config(with_database(servers.database_url, name), servers.redis_url)
    text = "checks: [{name: service, type: service-health}]"
    with ThreadedServer(create_app(config)) as url:
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

        def judged_down() -> object:
            found = results(tmp_path, text, url)["service"]
            return found if found.status is Status.FAIL else None

        down = wait_until(judged_down, what="the health check to see PostgreSQL down")
        assert down.observed == "down" and "PostgreSQL" in down.message


def test_http_status_and_latency_budget(alerting: Alerting, tmp_path: Path) -> None:
    found = check(
        alerting,
        tmp_path,
        f"""
        checks:
          - {{name: health, type: http, url: /api/health, max_ms: 30000}}
          - {{name: docs page, type: http, url: /no-such-page}}
          - {{name: gone, type: http, url: /no-such-page, status: [404, 410]}}
          - {{name: too slow, type: http, url: /api/health, max_ms: 0}}
          - {{name: soft, type: http, url: /no-such-page, severity: warn}}
          - {{name: elsewhere, type: http, url: "http://127.0.0.1:{closed_port()}/"}}
        """,
    )
    assert found["health"].status is Status.PASS
    assert found["docs page"].status is Status.FAIL
    assert found["docs page"].message == "GET /no-such-page answered 404, expected 200"
    assert found["gone"].status is Status.PASS
    assert found["too slow"].status is Status.FAIL and "over 0 ms" in found["too slow"].message
    assert found["soft"].status is Status.WARN
    assert found["elsewhere"].status is Status.ERROR


SLO = """
checks:
  - {name: slo, type: feature-slo, features: [tagger], window: 1h, max_error_rate: 5,
     max_p95_ms: 5000, min_uptime: 50}
  - {name: all, type: feature-slo, features: all, window: 1h, max_error_rate: 5}
  - {name: soft, type: feature-slo, features: tagger, window: 1h, max_error_rate: 5, severity: warn}
  - {name: quiet ok, type: feature-slo, features: [quiet], max_error_rate: 5, allow_no_data: true}
  - {name: quiet, type: feature-slo, features: [quiet], max_error_rate: 5}
  - {name: unknown, type: feature-slo, features: [nope], max_error_rate: 5}
"""


def test_feature_slo_on_real_traffic(alerting: Alerting, tmp_path: Path) -> None:
    alerting.http.post("/features", json={"name": "quiet"}).raise_for_status()
    alerting.calls("success", 20)
    found = check(alerting, tmp_path, SLO)
    slo = found["slo"]
    assert slo.status is Status.PASS, slo.message
    assert slo.details["features"]["tagger"]["requests"] == 20
    assert slo.details["features"]["tagger"]["error_rate"] == 0
    # "all" means the active features: quiet has no traffic, which is an error
    assert found["all"].status is Status.ERROR
    assert "no traffic in the last 1h for quiet" in found["all"].message
    assert found["quiet ok"].status is Status.PASS
    assert found["quiet"].status is Status.ERROR
    assert (
        found["unknown"].status is Status.ERROR and "no feature 'nope'" in found["unknown"].message
    )

    alerting.calls("error", 20)  # now half the calls failed
    found = check(alerting, tmp_path, SLO)
    assert found["slo"].status is Status.FAIL
    assert "tagger: error_rate 50% above 5%" in found["slo"].message
    assert found["soft"].status is Status.WARN
    unreachable = results(tmp_path, SLO, f"http://127.0.0.1:{closed_port()}")
    assert unreachable["slo"].status is Status.ERROR


ALERTS = """
checks:
  - {name: none open, type: alerts}
  - {name: no critical, type: alerts, severity: critical}
  - {name: few warnings, type: alerts, severity: warning, max_open: 1}
  - {name: unacknowledged, type: alerts, include_acknowledged: false}
  - {name: soft, type: alerts, severity: warn}
"""


def test_alerts_with_a_firing_alert(alerting: Alerting, tmp_path: Path) -> None:
    found = check(alerting, tmp_path, ALERTS)
    assert all(r.status is Status.PASS for r in found.values()), found
    alerting.rules(RULE)  # error_rate > 5 over 1h, severity warning
    alerting.calls("error", 10)
    alert = alerting.open_alert()
    assert alert["severity"] == "warning"
    found = check(alerting, tmp_path, ALERTS)
    none_open = found["none open"]
    assert (none_open.status, none_open.observed, none_open.threshold) == (Status.FAIL, 1, 0)
    assert "tagger/errors" in none_open.message
    assert none_open.details["open"][0]["id"] == alert["id"]
    assert found["no critical"].status is Status.PASS  # a warning is below critical
    assert found["few warnings"].status is Status.PASS
    assert found["unacknowledged"].status is Status.FAIL
    assert found["soft"].status is Status.WARN
    alerting.http.post(f"/alerts/{alert['id']}/acknowledge").raise_for_status()
    found = check(alerting, tmp_path, ALERTS)
    assert found["unacknowledged"].status is Status.PASS  # acknowledged ones left out
    assert found["none open"].status is Status.FAIL  # and counted by default
    refused = check(alerting, tmp_path, ALERTS, token="not-a-token")["none open"]
    assert refused.status is Status.ERROR and "401" in refused.message


def test_settings_drift_against_the_live_settings(alerting: Alerting, tmp_path: Path) -> None:
    live = alerting.http.get("/features/tagger/settings").json()["data"]["settings"]
    write(tmp_path / "settings" / "tagger.yaml", yaml.safe_dump({"feature": "tagger", **live}))
    text = """
    checks:
      - {name: drift, type: settings-drift, paths: ["settings/*.yaml"]}
      - {name: soft, type: settings-drift, paths: ["settings/*.yaml"], severity: warn}
    """
    found = check(alerting, tmp_path, text)
    assert found["drift"].status is Status.PASS
    changed = {**live, "rate_limits": {**live["rate_limits"], "requests_per_minute": 7}}
    write(tmp_path / "settings" / "tagger.yaml", yaml.safe_dump({"feature": "tagger", **changed}))
    found = check(alerting, tmp_path, text)
    drift = found["drift"]
    assert drift.status is Status.FAIL
    assert "rate_limits.requests_per_minute: live" in drift.message and "file 7" in drift.message
    assert found["soft"].status is Status.WARN
    write(tmp_path / "settings" / "other.yaml", "rate_limits: {requests_per_minute: 7}\n")
    found = check(alerting, tmp_path, text)
    assert found["drift"].status is Status.ERROR
    assert "no `feature:`" in found["drift"].message


def test_openapi_equals_the_served_document(alerting: Alerting, tmp_path: Path) -> None:
    spec = REPO / "docs" / "api" / "openapi.yaml"
    (tmp_path / "stale.yaml").write_text(spec.read_text().replace("settings_history", "history"))
    found = check(
        alerting,
        tmp_path,
        f"""
        checks:
          - {{name: served, type: openapi, file: "{spec}", url: true}}
          - {{name: stale, type: openapi, file: stale.yaml, url: /openapi.json}}
        """,
    )
    assert found["served"].status is Status.PASS, found["served"].message
    assert "equals /openapi.json served" in found["served"].message
    assert found["stale"].status is Status.FAIL


def test_load_test_thresholds(alerting: Alerting, tmp_path: Path) -> None:
    scenario = write(
        tmp_path / "scenario.yaml",
        """
        name: health
        think_time: "0"
        steps:
          - name: health
            http: {path: /api/health}
        """,
    )
    found = check(
        alerting,
        tmp_path,
        f"""
        checks:
          - name: load
            type: load-test
            scenario: {scenario.name}
            users: 2
            duration: 1s
            thresholds: ["http_req_failed:rate<0.01", "http_reqs:count>5"]
          - {{name: impossible, type: load-test, scenario: {scenario.name}, users: 1,
             duration: 1s, thresholds: ["http_req_duration:p(95)<0"]}}
          - {{name: soft, type: load-test, scenario: {scenario.name}, users: 1, duration: 1s,
             thresholds: ["http_req_duration:p(95)<0"], severity: warn}}
        """,
    )
    load = found["load"]
    assert load.status is Status.PASS, load.message
    assert load.observed["http_reqs:count>5"] > 5
    assert found["impossible"].status is Status.FAIL
    assert "http_req_duration:p(95)<0 (observed" in found["impossible"].message
    assert found["soft"].status is Status.WARN
    gone = results(
        tmp_path,
        f"checks: [{{name: load, type: load-test, scenario: {scenario.name}, duration: 1s}}]",
        f"http://127.0.0.1:{closed_port()}",
    )["load"]
    assert gone.status is Status.ERROR and "unreachable" in gone.message


def test_a_load_test_past_its_timeout_is_stopped(alerting: Alerting, tmp_path: Path) -> None:
    write(
        tmp_path / "scenario.yaml",
        "name: health\nsteps:\n  - {name: h, http: {path: /api/health}}\n",
    )
    found = check(
        alerting,
        tmp_path,
        "checks: [{name: long, type: load-test, scenario: scenario.yaml, users: 1, "
        "duration: 10m, timeout: 1s}]",
    )
    assert (found["long"].status, found["long"].message) == (Status.ERROR, "timed out after 1 s")
    wait_until(
        lambda: not any(t.name == "check-long" for t in threading.enumerate()),
        what="the load test to stop",
    )
