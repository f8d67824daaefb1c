"""Prompt templates: ``{{ name }}`` placeholders and nothing else (no code runs)."""

from __future__ import annotations

from collections.abc import Mapping

from minerva_ai.core.templates import PLACEHOLDER, template_variables

__all__ = ["PLACEHOLDER", "MissingVariables", "render", "template_problem", "template_variables"]


class MissingVariables(Exception):
    """A template names variables that were not given (every one is listed)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def template_problem(template: str) -> str | None:
    """Why a prompt template is malformed, or None: ``{{ name }}`` placeholders only."""
    rest = PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest:
        return "unbalanced or malformed {{ }} placeholder (use {{ variable_name }})"
    return None


def missing_variables(templates: list[str], variables: Mapping[str, str]) -> list[str]:
    names: dict[str, None] = {}
    for template in templates:
        names.update(dict.fromkeys(template_variables(template)))
    return [name for name in names if name not in variables]


def render(template: str, variables: Mapping[str, str]) -> str:
    """The template with every placeholder replaced; a value is inserted as text, once
    (a value that itself looks like ``{{ x }}`` is not expanded again)."""
    missing = missing_variables([template], variables)
    if missing:
        raise MissingVariables(missing)
    return PLACEHOLDER.sub(lambda m: variables[m.group(1)], template)
