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
from tests.conftest import MINERVA_AI


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
    cwd: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`minerva-ai readiness-check ARGS` in a subprocess, in ``cwd``."""
    return subprocess.run(
        [MINERVA_AI, *args[: args.index("--")], "readiness-check", *args[args.index("--") + 1 :]]
        if "--" in args
        else [MINERVA_AI, "readiness-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path
