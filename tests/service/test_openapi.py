from pathlib import Path

from minerva_ai.service.openapi import openapi_yaml

SPEC = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.yaml"


def test_published_openapi_matches_the_service():
    assert SPEC.read_text() == openapi_yaml(), "docs/api/openapi.yaml is stale: run `make openapi`"


def test_openapi_lists_the_plans_paths():
    text = openapi_yaml()
    for path in (
        "/api/platform/ai-management/features:",
        "/api/platform/ai-management/features/{feature}/settings:",
        "/api/platform/ai-management/features/{feature}/settings/rollback:",
        "/api/health:",
    ):
        assert path in text
