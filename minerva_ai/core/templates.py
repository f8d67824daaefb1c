"""Prompt template placeholders, ``{{ name }}``: what the service renders and what a suite
checks before it runs (the variables a prompt needs)."""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# A model's or prompt's name in a feature's settings, and a prompt named at a settings
# version (``NAME@N``): what the service resolves and what a suite checks before it runs.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
NAME = re.compile(rf"^{NAME_PATTERN}$")
PROMPT_REF = re.compile(rf"^({NAME_PATTERN})(?:@([1-9][0-9]{{0,9}}))?$")


def template_variables(template: str) -> list[str]:
    """The variables a template names, each once, in order."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))
