"""The container image's command and health check, run outside Docker (no engine here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from minerva_ai.service.embedded import free_port

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def _exec_form(instruction: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(rf"^\s*{instruction}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, f"no exec-form {instruction} in the Dockerfile"
    return json.loads(match.group(1))


def _healthcheck() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "no exec-form HEALTHCHECK in the Dockerfile"
    return json.loads(match.group(1))


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_image_command_serves_health_against_external_databases(database_url, servers, tmp_path):
    command = _exec_form("CMD")
    assert command[:3] == ["minerva-ai", "server", "start"]
    port = free_port()
    command = [str(Path(sys.executable).with_name("minerva-ai")), *command[1:]]
    command[command.index("--port") + 1] = str(port)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "MINERVA_HOME": str(tmp_path / "unused-home"),
        "MINERVA_SECRET_KEY": "w1Sw0tKx3Jm0bTqvnF8gq4kUj2yq9p3r5W8cX6dZ7aE=",  # one for all
    }
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the image command never answered /api/health"
            time.sleep(0.1)
        probe = [arg.replace("8765", str(port)) for arg in _healthcheck()]
        probe[0] = sys.executable if probe[0] == "python" else probe[0]
        assert subprocess.run(probe, timeout=10).returncode == 0
        # It owns nothing: no home, no embedded servers.
        assert not (tmp_path / "unused-home" / "postgres").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
