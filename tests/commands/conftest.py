"""Helpers for the CLI tests: run `minerva-ai` in-process (CliRunner) or as a subprocess."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from minerva_ai.commands.main import cli
from tests.conftest import MINERVA_AI, LiveService

Run = Callable[..., Result]


def invoke(args: Sequence[str], input: str | None = None, **env: str | None) -> Result:
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner(env=env).invoke(cli, list(args), input=input, catch_exceptions=False)


def run_process(
    args: Sequence[str],
    input: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `minerva-ai` script in a subprocess (in ``cwd``)."""
    return subprocess.run(
        [MINERVA_AI, *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture
def run(live_service: LiveService) -> Run:
    """The CLI pointed at the live service with the admin token of "acme" (MINERVA_*)."""

    def runner(*args: str, input: str | None = None, **env: str | None) -> Result:
        base: dict[str, str | None] = {
            "MINERVA_URL": live_service.url,
            "MINERVA_TOKEN": live_service.token,
        }
        return invoke(args, input=input, **{**base, **env})

    return runner
