"""The readiness file: ``checks:``, a list of ``{name, type, severity, timeout, options}``.
Every mistake is a ``ConfigError`` naming the file, the line and the valid names, raised
before any check runs. ``${ENV}`` and ``${ENV:-default}`` are interpolated in values."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minerva_ai.core.errors import ConfigError, UsageError
from minerva_ai.core.timeparse import parse_duration, parse_size
from minerva_ai.readiness.checks_service import SEVERITIES
from minerva_ai.readiness.model import slug
from minerva_ai.readiness.registry import TYPES
from minerva_ai.readiness.spec import CheckSpec, Opt

DEFAULT_FILES = ("readiness.yaml", "readiness.yml")
COMMON = ("name", "type", "severity", "timeout")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class ReadinessConfig:
    path: Path
    checks: list[CheckSpec]


def find_config(path: Path | None, cwd: Path | None = None) -> Path:
    if path is not None:
        return path
    where = cwd or Path.cwd()
    for name in DEFAULT_FILES:
        if (where / name).is_file():
            return where / name if cwd else Path(name)
    raise ConfigError(
        f"no readiness.yaml in {where}: give -c FILE, or write one with "
        "`minerva-ai readiness-check init`"
    )


def load_config(path: Path, env: dict[str, str] | None = None) -> ReadinessConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return ReadinessConfig(path, parse_config(text, str(path), env))


def parse_config(
    text: str, source: str = "<readiness>", env: dict[str, str] | None = None
) -> list[CheckSpec]:
    reader = _Reader(source, os.environ if env is None else env)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{source}: expected a mapping with `checks:`")
    top = reader.mapping(root)
    unknown = [k for k in top if k != "checks"]
    if unknown:
        raise reader.error(top[unknown[0]][0], f"unknown key {unknown[0]!r} (valid: checks)")
    if "checks" not in top or not isinstance(top["checks"][1], yaml.SequenceNode):
        raise reader.error(root, "`checks:` must be a list of checks")
    specs: list[CheckSpec] = []
    seen: dict[str, int] = {}
    for node in top["checks"][1].value:
        spec = reader.check(node)
        if spec.id in seen:
            raise reader.error(
                node, f"duplicate check name {spec.name!r} (first on line {seen[spec.id]})"
            )
        seen[spec.id] = spec.line
        specs.append(spec)
    if not specs:
        raise reader.error(root, "`checks:` is empty")
    return specs


class _Reader:
    def __init__(self, source: str, env: Any) -> None:
        self.source = source
        self.env = env
        self.loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.source}, line {node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in found:
                raise self.error(key, f"{name!r} given twice")
            found[name] = (key, value)
        return found

    def value(self, node: yaml.Node) -> Any:
        """A node as Python data, ``${ENV}`` interpolated in each string."""
        if isinstance(node, yaml.ScalarNode):
            if isinstance(node.value, str) and "${" in node.value:
                text = self.interpolate(node)
                node = yaml.ScalarNode(node.tag, text, node.start_mark, node.end_mark, node.style)
                if node.style is None:  # plain: let the result be a number or a bool
                    return yaml.safe_load(text) if text.strip() else ""
                return text
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            return {str(k.value): self.value(v) for k, v in node.value}
        raise self.error(node, "unsupported YAML")

    def interpolate(self, node: yaml.ScalarNode) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match[1], match[2]
            if name in self.env:
                return str(self.env[name])
            if default is not None:
                return default
            raise self.error(node, f"${{{name}}} is not set (give a default: ${{{name}:-...}})")

        return _ENV.sub(replace, str(node.value))

    def check(self, node: yaml.Node) -> CheckSpec:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "each check is a mapping: {name: ..., type: ..., ...}")
        fields = self.mapping(node)
        for key in ("name", "type"):
            if key not in fields:
                raise self.error(node, f"a check needs `{key}`")
        name = self.value(fields["name"][1])
        if not isinstance(name, str) or not name.strip():
            raise self.error(fields["name"][1], "`name` must be a non-empty string")
        kind = self.value(fields["type"][1])
        if kind not in TYPES:
            raise self.error(
                fields["type"][1],
                f"unknown check type {kind!r} (valid: {', '.join(sorted(TYPES))})",
            )
        check_type = TYPES[kind]
        severity = "fail"
        options: dict[str, Any] = {}
        timeout_s = check_type.timeout_s
        for key, (key_node, value_node) in fields.items():
            if key in ("name", "type"):
                continue
            value = self.value(value_node)
            if key == "severity" and kind == "alerts" and value in SEVERITIES:
                options["alert_severity"] = value  # the alerts' severity, not the check's
            elif key == "severity":
                if value not in ("fail", "warn"):
                    valid = "fail, warn" + (
                        "; or, for alerts, info, warning, critical" if kind == "alerts" else ""
                    )
                    raise self.error(value_node, f"severity {value!r} (valid: {valid})")
                severity = value
            elif key == "timeout":
                timeout_s = self.option(value_node, key, Opt("duration"), value)
                if timeout_s <= 0:
                    raise self.error(value_node, "timeout must be above 0")
            elif key in check_type.options:
                options[key] = self.option(value_node, key, check_type.options[key], value)
            else:
                valid = ", ".join([*COMMON, *check_type.options])
                raise self.error(
                    key_node, f"unknown option {key!r} for a {kind} check (valid: {valid})"
                )
        for key, opt in check_type.options.items():
            if key not in options:
                if opt.required:
                    raise self.error(node, f"a {kind} check needs `{key}`")
                options[key] = (
                    _parse(opt.kind, opt.default) if opt.kind == "thresholds" else opt.default
                )
        self.cross_checks(node, kind, options)
        return CheckSpec(
            slug(name), name, kind, severity, timeout_s, options, node.start_mark.line + 1
        )

    def option(self, node: yaml.Node, key: str, opt: Opt, value: Any) -> Any:
        try:
            return _parse(opt.kind, value)
        except (ValueError, TypeError, ConfigError, UsageError) as exc:
            raise self.error(node, f"{key}: {exc}") from None

    def cross_checks(self, node: yaml.Node, kind: str, options: dict[str, Any]) -> None:
        if kind == "coverage" and options["warn"] is not None and options["warn"] > options["pass"]:
            raise self.error(node, "coverage: `warn` must not be above `pass`")
        if kind == "size" and options["warn"] is not None and options["warn"] > options["max"]:
            raise self.error(node, "size: `warn` must not be above `max`")
        if kind == "openapi" and options["command"] and options["url"]:
            raise self.error(node, "openapi: give `command` or `url`, not both")
        if kind == "feature-slo" and not any(
            options[k] is not None
            for k in ("max_error_rate", "max_p95_ms", "min_uptime", "min_health_score")
        ):
            raise self.error(
                node,
                "feature-slo needs a limit: max_error_rate, max_p95_ms, min_uptime "
                "or min_health_score",
            )


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, not {text!r}") from None


def _strings(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a string or a non-empty list of strings")
    return list(items)


def _parse(kind: str, value: Any) -> Any:
    if kind.startswith("choice:"):
        choices = kind.split(":", 1)[1].split(",")
        if value not in choices:
            raise ValueError(f"{value!r} (valid: {', '.join(choices)})")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError("expected a non-empty string")
        return value
    if kind == "regex":
        try:
            re.compile(str(value))
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return str(value)
    if kind in ("int", "number"):
        if isinstance(value, str):  # "${FLOOR}", quoted in a flow mapping
            value = _number(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"expected a number >= 0, not {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise ValueError(f"expected a whole number, not {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, not {value!r}")
        return value
    if kind == "duration":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return parse_duration(str(value)).total_seconds()
    if kind == "window":
        parse_duration(str(value))
        return str(value)
    if kind == "size":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return parse_size(str(value))
    if kind in ("paths", "strlist", "features"):
        return _strings(value)
    if kind == "argv":
        return value if isinstance(value, str) and value.strip() else _strings(value)
    if kind == "url_or_bool":
        if isinstance(value, bool) or (isinstance(value, str) and value):
            return value
        raise ValueError("expected true, or a URL or path")
    if kind == "statuses":
        codes = [value] if isinstance(value, int) else value
        if not isinstance(codes, list) or not all(
            isinstance(c, int) and 100 <= c <= 599 for c in codes
        ):
            raise ValueError("expected an HTTP status or a list of them (100-599)")
        return codes
    if kind == "thresholds":
        from minerva_ai.loadtest.thresholds import parse_threshold

        return [parse_threshold(expr) for expr in _strings(value)]
    if kind == "ignores":
        from minerva_ai.readiness.checks_local import ignore_entry

        if not isinstance(value, list):
            raise ValueError("expected a list of {id, expires, reason}")
        return [ignore_entry(item) for item in value]
    raise AssertionError(f"unknown option kind {kind}")
