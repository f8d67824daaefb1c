"""Without the real servers the production suite is skipped, and says so loudly at the end of
the run; with MINERVA_REQUIRE_PRODUCTION=1 (CI) the same run fails."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def _run_suite(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/production/test_nginx.py",
            "-k",
            "reach_every_instance",
        ],
        cwd=REPO,
        env={**os.environ, "MINERVA_PG_BIN": "/nonexistent/postgresql/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_servers_skip_the_suite_loudly() -> None:
    run = _run_suite(MINERVA_REQUIRE_PRODUCTION="")
    assert run.returncode == 0, run.stdout
    assert "1 PRODUCTION TESTS SKIPPED" in run.stdout
    assert "postgresql not installed (run `sudo examples/deploy/install-servers.sh`)" in run.stdout


def test_a_required_suite_fails_without_its_servers() -> None:
    run = _run_suite(MINERVA_REQUIRE_PRODUCTION="1")
    assert run.returncode == 1, run.stdout
    assert "MINERVA_REQUIRE_PRODUCTION=1 requires it" in run.stdout


def test_the_install_script_checks_without_installing() -> None:
    script = REPO / "examples" / "deploy" / "install-servers.sh"
    checked = subprocess.run(
        [str(script), "--check"], capture_output=True, text=True, timeout=30, check=False
    )
    # Here the packages are present (the suite above runs); elsewhere it names what is not.
    assert checked.returncode in (0, 1)
    assert checked.stdout.startswith("install-servers: ")
    assert ("are present" in checked.stdout) == (checked.returncode == 0)
