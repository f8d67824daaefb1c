"""The production suite's fixtures: one stack of real servers (harness.py) per pytest
worker, made whole again before each test. Without the Debian packages every test is
skipped, loudly (tests/conftest.py says so at the end of the run); with
MINERVA_REQUIRE_PRODUCTION=1 (CI) that skip is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.production.harness import INSTALL_SCRIPT, REPO, Stack, missing_packages, production_stack

REQUIRE = "MINERVA_REQUIRE_PRODUCTION"
SKIPPED = "production suite skipped"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.production)


@pytest.fixture(scope="session")
def stack_of_this_worker() -> Iterator[Stack]:
    missing = missing_packages()
    if missing:
        reason = (
            f"{SKIPPED}: {', '.join(missing)} not installed "
            f"(run `sudo {INSTALL_SCRIPT.relative_to(REPO)}`)"
        )
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{reason}, and {REQUIRE}=1 requires it")
        pytest.skip(reason)
    with production_stack() as stack:
        yield stack


@pytest.fixture
def stack(stack_of_this_worker: Stack) -> Stack:
    """The stack with every server up and every instance ready (a test before may have
    stopped or killed some)."""
    stack_of_this_worker.ensure_up()
    return stack_of_this_worker
