"""``minerva-ai readiness-check init``: a commented starter ``readiness.yaml``."""

from __future__ import annotations

STARTER = """\
# readiness.yaml: the checks `minerva-ai readiness-check` runs (docs/readiness.md).
# Each check: name, type, its options; severity (fail, or warn: a failure only warns) and
# timeout (e.g. 30s, 20m). ${ENV} and ${ENV:-default} are replaced by environment variables.
checks:
  # The documentation people need is there and not empty.
  - {name: docs, type: files, paths: [README.md]}

  # A command passes when it exits 0; the tail of its output is in the report.
  - {name: unit tests, type: command, run: "make test-fast", timeout: 20m}

  # coverage.py JSON (coverage json) or Cobertura XML (coverage xml / pytest --cov-report=xml).
  - {name: coverage, type: coverage, file: coverage.xml, pass: 90, warn: 85}

  # A size budget for any artifact, each file matched (gzip: true to measure it gzipped).
  - {name: wheel size, type: size, paths: ["dist/*.whl"], max: 2MB}

  # The service, asked over HTTP (MINERVA_URL and MINERVA_TOKEN, or --url and a profile).
  - {name: service, type: service-health}
  - name: slo
    type: feature-slo
    features: all          # the active features; or a name, or a list
    window: 1h
    max_error_rate: 1      # percent
    max_p95_ms: 2000
    min_uptime: 99         # percent
    allow_no_data: false   # a feature without traffic in the window is an error
  - {name: no critical alerts, type: alerts, severity: critical, max_open: 0}

  # Suites and load (see docs/readiness.md for test-suite, load-test, openapi,
  # settings-drift, http and dependency-audit):
  # - {name: summaries, type: test-suite, file: suites/summarizer.yaml}
  # - name: load
  #   type: load-test
  #   scenario: scenarios/journey.yaml
  #   users: 20
  #   duration: 30s
  #   thresholds: ["http_req_duration:p(95)<500"]
"""
