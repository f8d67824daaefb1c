"""examples/deploy/systemd/: the units load in systemd (`systemd-analyze verify`, where
installed), and their commands and environment are ones minerva-ai accepts."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from minerva_ai.service.supervisor import HttpOptions, check_http_options
from tests.conftest import MINERVA_AI
from tests.deploy.service_contract import DEPLOY, command_of, service_variables

UNITS = DEPLOY / "systemd"
INSTALLED = "/opt/minerva-ai/bin/minerva-ai"  # where the units expect the virtualenv


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def exec_start(name: str, instance: str = "8001") -> list[str]:
    argv = shlex.split(unit(name)["Service"]["ExecStart"].replace("%i", instance))
    assert argv[0] == INSTALLED
    return ["minerva-ai", *argv[1:]]


def test_an_instance_unit_runs_server_start_on_its_port_with_metrics_beside_it() -> None:
    command, params = command_of(exec_start("minerva-ai@.service", "8001"))
    assert command.name == "start"
    assert params["port"] == 8001 and params["host"] == "127.0.0.1"
    assert params["metrics_bind"] == "127.0.0.1:18001"
    assert params["proxy_headers"] is True and params["log_format"] == "json"
    service = unit("minerva-ai@.service")["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 10  # longer than the drain
    assert service["EnvironmentFile"] == "/etc/minerva-ai/env"
    assert "minerva-ai-migrate.service" in unit("minerva-ai@.service")["Unit"]["Requires"]


def test_the_migrate_unit_is_a_oneshot_server_migrate() -> None:
    assert exec_start("minerva-ai-migrate.service") == ["minerva-ai", "server", "migrate"]
    assert command_of(exec_start("minerva-ai-migrate.service"))[0].name == "migrate"
    assert unit("minerva-ai-migrate.service")["Service"]["Type"] == "oneshot"


def test_the_environment_file_names_only_variables_minerva_ai_reads() -> None:
    values = {}
    for line in (UNITS / "minerva-ai.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    assert set(values) <= service_variables(), sorted(set(values) - service_variables())
    assert {"DATABASE_URL", "REDIS_URL", "MINERVA_SECRET_KEY"} <= set(values)
    check_http_options(HttpOptions(forwarded_allow_ips=values["FORWARDED_ALLOW_IPS"]))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_loads_the_units(tmp_path: Path) -> None:
    # The same files, with the virtualenv's script where the units expect /opt/minerva-ai.
    for source in UNITS.glob("*.service"):
        text = source.read_text()
        assert text.count(INSTALLED) == 1, source.name
        (tmp_path / source.name).write_text(text.replace(INSTALLED, MINERVA_AI))
    verified = subprocess.run(
        [
            "systemd-analyze", "verify", "--man=no",
            str(tmp_path / "minerva-ai@8001.service"), str(tmp_path / "minerva-ai-migrate.service"),
        ],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
