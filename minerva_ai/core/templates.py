"""Prompt template placeholders, ``{{ name }}``: what the service renders and what a suite
checks before it runs (the variables a prompt needs)."""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def template_variables(template: str) -> list[str]:
    """The variables a template names, each once, in order."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))
