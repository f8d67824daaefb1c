"""Helpers of the readiness tests: run a config through the library, or the CLI."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from minerva_ai.readiness.config import parse_config
from minerva_ai.readiness.model import Result
from minerva_ai.readiness.runner import Run, run_checks
from minerva_ai.readiness.spec import Context
from tests.commands.conftest import run_process


def run_config(
    base: Path, text: str, url: str | None = None, token: str | None = None, jobs: int = 4
) -> Run:
    specs = parse_config(textwrap.dedent(text), "readiness.yaml", env=dict(os.environ))
    return run_checks(specs, Context(base, url, token), jobs=jobs)


def results(
    base: Path, text: str, url: str | None = None, token: str | None = None
) -> dict[str, Result]:
    return {r.name: r for r in run_config(base, text, url, token).results}


def cli(
    cwd: Path, *args: str, before: tuple[str, ...] = (), timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`minerva-ai [BEFORE] readiness-check ARGS` in a subprocess, in ``cwd``."""
    return run_process([*before, "readiness-check", *args], timeout=timeout, cwd=cwd, **env)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path
