"""Print the service's OpenAPI document as YAML: ``python -m minerva_ai.service.openapi``.

docs/api/openapi.yaml is this output; tests/service/test_openapi.py fails when it is stale.
"""

from __future__ import annotations

import sys

import yaml

from minerva_ai.service.app import create_app
from minerva_ai.service.config import ServiceConfig


def openapi_yaml() -> str:
    # Building the schema needs no database: the lifespan (which connects) never runs.
    app = create_app(ServiceConfig(database_url="postgresql://unused", redis_url="redis://unused"))
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(openapi_yaml())
