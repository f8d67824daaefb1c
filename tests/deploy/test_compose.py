"""examples/deploy/docker-compose.yml: valid by the Compose Specification's JSON schema
(vendored: COMPOSE-SPEC-SOURCE.md), and saying only what minerva-ai accepts: each command
parsed by the real Click command, each variable one the service reads, the probes and
commands of the real-server suite (service_contract.py). No Docker engine runs here."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

from minerva_ai.service.supervisor import HttpOptions, check_http_options
from tests.deploy import nginx_compose
from tests.deploy.service_contract import (
    APP_PORT,
    DEPLOY,
    LIVE_PATH,
    MIGRATE_COMMAND,
    READY_PATH,
    REPO,
    START_COMMAND,
    command_of,
    service_variables,
)

COMPOSE = DEPLOY / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(node: Any, values: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, and $$ for a literal $."""
    if isinstance(node, dict):
        return {key: interpolate(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, values) for item in node]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if values.get(name):
            return values[name]
        if kind == "-":
            return rest
        raise AssertionError(f"${{{name}}} is unset and has no default: {rest}")

    return _VARIABLE.sub(one, node.replace("$$", "\0")).replace("\0", "$")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def filled() -> dict[str, Any]:
    values = {**env_example(), "MINERVA_SECRET_KEY": "k" * 43 + "="}
    return dict(interpolate(compose(), values))


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def apps(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in document["services"].items()
        if service.get("command", [None])[:3] == START_COMMAND[:3]
    }


def test_the_compose_file_is_valid_by_the_compose_specification() -> None:
    assert schema_errors(compose()) == []
    assert schema_errors(filled()) == []


def test_the_schema_check_does_catch_a_mistake() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["app1"]["helthcheck"] = broken["services"]["app1"].pop("healthcheck")
    broken["services"]["redis"]["restart"] = ["always"]
    errors = schema_errors(broken)
    assert any("helthcheck" in error for error in errors)
    assert any(error.startswith("services/redis/restart") for error in errors)


def test_two_instances_of_the_repository_image_behind_nginx_with_the_harness_probes() -> None:
    document = filled()
    instances = apps(document)
    assert sorted(instances) == ["app1", "app2"]
    for name, service in instances.items():
        assert (DEPLOY / service["build"]["context"]).resolve() == REPO, name
        assert (REPO / service["build"]["dockerfile"]).is_file()
        assert service["command"][: len(START_COMMAND)] == START_COMMAND
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{APP_PORT}{LIVE_PATH}" in probe
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "ports" not in service  # only nginx is published; metrics stay private
    nginx = document["services"]["nginx"]
    assert READY_PATH in " ".join(nginx["healthcheck"]["test"])
    assert {name: dep["condition"] for name, dep in nginx["depends_on"].items()} == {
        "app1": "service_healthy",
        "app2": "service_healthy",
    }
    mounted = [volume.split(":") for volume in nginx["volumes"]]
    config = next(source for source, target, *_ in mounted if target.startswith("/etc/nginx/"))
    assert (DEPLOY / config).resolve() == DEPLOY / "nginx.compose.conf"
    # the shipped configuration the production suite runs, with compose's instances filled in
    assert (DEPLOY / config).read_text() == nginx_compose.rendered()
    assert f"server app1:{APP_PORT} max_fails" in (DEPLOY / config).read_text()


def test_every_command_is_one_minerva_ai_accepts() -> None:
    document = filled()
    for name, service in apps(document).items():
        command, params = command_of(service["command"])
        assert command.name == "start", name
        metrics = str(params["metrics_bind"])
        assert metrics.rpartition(":")[2] != str(params["port"])  # never the public port
        assert params["proxy_headers"] is True
    migrate = document["services"]["migrate"]
    assert migrate["command"] == MIGRATE_COMMAND
    assert command_of(migrate["command"])[0].name == "migrate"
    assert migrate["restart"] == "no"


def test_every_variable_given_to_minerva_ai_is_one_it_reads() -> None:
    document = filled()
    known = service_variables()
    users = {**apps(document), "migrate": document["services"]["migrate"]}
    for name, service in users.items():
        given = set(service["environment"])
        assert given <= known, f"{name}: {sorted(given - known)} are not read by minerva-ai"
        assert "DATABASE_URL" in given
    for name, service in apps(document).items():
        environment = service["environment"]
        assert {"REDIS_URL", "MINERVA_SECRET_KEY"} <= set(environment), name
        check_http_options(HttpOptions(forwarded_allow_ips=environment["FORWARDED_ALLOW_IPS"]))


def test_the_urls_point_at_the_compose_databases_with_their_credentials() -> None:
    document = filled()
    postgres = document["services"]["postgres"]
    redis = document["services"]["redis"]
    for service in [*apps(document).values(), document["services"]["migrate"]]:
        database = urlsplit(service["environment"]["DATABASE_URL"])
        assert (database.hostname, database.port) == ("postgres", 5432)
        assert database.username == postgres["environment"]["POSTGRES_USER"]
        assert database.password == postgres["environment"]["POSTGRES_PASSWORD"]
        assert database.path == "/" + postgres["environment"]["POSTGRES_DB"]
    for service in apps(document).values():
        cache = urlsplit(service["environment"]["REDIS_URL"])
        assert (cache.hostname, cache.port) == ("redis", 6379)
        assert cache.password == redis["command"][redis["command"].index("--requirepass") + 1]


def test_postgresql_15_and_redis_7_with_aof_keep_their_data_in_volumes() -> None:
    document = filled()
    postgres, redis = document["services"]["postgres"], document["services"]["redis"]
    assert postgres["image"].startswith("postgres:15")
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    declared = set(document["volumes"])
    assert {v.split(":")[0] for v in postgres["volumes"]} <= declared
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "redis-data:/data" in redis["volumes"]


def test_every_variable_the_file_needs_is_in_env_example() -> None:
    needed = {m[1] for m in _VARIABLE.finditer(COMPOSE.read_text()) if m[2] != "-"}
    assert needed <= set(env_example()), sorted(needed - set(env_example()))
    for name in set(env_example()) & service_variables():
        assert name.startswith(("MINERVA_", "DATABASE_", "REDIS_"))


def test_env_example_holds_no_real_secret() -> None:
    values = env_example()
    assert values["MINERVA_SECRET_KEY"] == ""
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert values[name].startswith("change-me"), name
