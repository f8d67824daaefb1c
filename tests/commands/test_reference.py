from pathlib import Path

from minerva_ai.commands.reference import reference

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "cli-reference.md"


def test_published_cli_reference_matches_help():
    assert PUBLISHED.read_text() == reference(), "docs/cli-reference.md is stale: make cli-docs"


def test_reference_covers_every_command():
    text = reference()
    for command in (
        "minerva-ai features settings set",
        "minerva-ai server start",
        "minerva-ai auth token create",
        "minerva-ai completion",
        "minerva-ai logs tail",
        "minerva-ai logs export",
        "minerva-ai logs ingest",
        "minerva-ai load-test",
    ):
        assert f"## `{command}`" in text
