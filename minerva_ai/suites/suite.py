"""A suite file, read and checked: every mistake is a ``SuiteError`` naming the file, the line
and what is wrong (with the valid names), before any case runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from minerva_ai.core.templates import NAME, PROMPT_REF
from minerva_ai.suites import assertions as checks
from minerva_ai.suites.assertions import Assertion, AssertionProblem
from minerva_ai.suites.yamlmarks import Node, YamlError
from minerva_ai.suites.yamlmarks import load as load_yaml

TOP_KEYS = ("feature", "description", "defaults", "pass_rate", "matrix", "cases")
DEFAULT_KEYS = ("prompt", "model", "vars", "assert", "threshold", "repeat")
CASE_KEYS = (
    "name",
    "description",
    "tags",
    "input",
    "vars",
    "vars_file",
    "prompt",
    "model",
    "assert",
    "threshold",
    "repeat",
)
MATRIX_KEYS = ("model", "prompt")
MAX_REPEAT = 100


class SuiteError(ValueError):
    """A suite file that cannot be run: ``FILE:LINE: what is wrong``."""


@dataclass(frozen=True)
class Case:
    """One case of the suite (a ``vars_file`` row is a case of its own)."""

    name: str
    line: int
    input: str | None
    variables: dict[str, str]
    prompt: str | None
    model: str | None
    assertions: list[Assertion]
    threshold: float = 1.0
    repeat: int = 1
    tags: tuple[str, ...] = ()

    def matches(self, pattern: str) -> bool:
        """``--filter``: the case's name (a glob: * ?) or one of its tags."""
        return fnmatchcase(self.name, pattern) or pattern in self.tags


@dataclass(frozen=True)
class Suite:
    path: Path
    feature: str
    description: str | None
    pass_rate: float
    cases: list[Case]
    matrix: dict[str, list[str]] = field(default_factory=dict)
    hash: str = ""

    def combinations(self) -> list[dict[str, str]]:
        """Every combination of the matrix (``[{}]`` without one), in file order."""
        combos: list[dict[str, str]] = [{}]
        for key, values in self.matrix.items():
            combos = [{**c, key: v} for c in combos for v in values]
        return combos

    def filtered(self, patterns: list[str]) -> Suite:
        if not patterns:
            return self
        cases = [c for c in self.cases if any(c.matches(p) for p in patterns)]
        return Suite(
            self.path, self.feature, self.description, self.pass_rate, cases, self.matrix, self.hash
        )


class _Reader:
    """Reads one file's Nodes, raising SuiteError with the file and the line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashed: list[bytes] = []
        self.seen_files: set[Path] = set()

    def error(self, node: Node | int, message: str) -> SuiteError:
        line = node if isinstance(node, int) else node.line
        return SuiteError(f"{self.path}:{line}: {message}")

    def mapping(self, node: Node, keys: tuple[str, ...], what: str) -> dict[str, Node]:
        if not isinstance(node.value, dict):
            raise self.error(node, f"{what} must be a mapping")
        for key, value in node.value.items():
            if key not in keys:
                raise self.error(value, f"unknown key {key!r} in {what} (keys: {', '.join(keys)})")
        items: dict[str, Node] = node.value
        return items

    def text(self, node: Node, what: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(node.value, str) or not node.value.strip():
            raise self.error(node, f"{what} must be non-empty text")
        if pattern is not None and not pattern.match(node.value):
            raise self.error(node, f"{what} {node.value!r} is not a valid name")
        return node.value

    def number(self, node: Node, what: str, low: float, high: float) -> float:
        value = node.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.error(node, f"{what} must be a number from {low:g} to {high:g}")
        return float(value)

    def repeat(self, node: Node) -> int:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPEAT:
            raise self.error(node, f"repeat must be a whole number from 1 to {MAX_REPEAT}")
        return value

    def prompt(self, node: Node) -> str:
        text = self.text(node, "prompt")
        if not PROMPT_REF.match(text):
            raise self.error(node, f"prompt {text!r}: expected NAME or NAME@N (e.g. summarize@3)")
        return text

    def variables(self, node: Node, what: str) -> dict[str, str]:
        items = node.value
        if not isinstance(items, dict):
            raise self.error(node, f"{what} must be a mapping of variable names to text")
        out: dict[str, str] = {}
        for name, value in items.items():
            out[name] = self.variable(value, name, lambda n, m: self.error(n, m))
        return out

    @staticmethod
    def variable(node: Node, name: str, error: Callable[[Node, str], SuiteError]) -> str:
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            raise error(node, f"variable {name!r} must be text or a number")
        return value if isinstance(value, str) else str(value)

    def assertions(self, node: Node) -> list[Assertion]:
        if not isinstance(node.value, list):
            raise self.error(node, "assert must be a list of assertions")
        out: list[Assertion] = []
        for item in node.value:
            if not isinstance(item.value, dict):
                raise self.error(item, "an assertion must be a mapping with a type")
            try:
                out.append(checks.parse({k: v.plain() for k, v in item.value.items()}))
            except AssertionProblem as exc:
                raise self.error(self._where(item, str(exc)), f"assertion: {exc}") from None
        return out

    @staticmethod
    def _where(item: Node, message: str) -> int:
        """The line of the key a problem names, else the assertion's."""
        for key, value in item.value.items():
            if message.startswith((f"unknown key {key!r}", f"{key} ")) or (
                key == "type" and "unknown type" in message
            ):
                line: int = value.line
                return line
        return item.line

    def vars_file(self, node: Node) -> list[tuple[int, dict[str, str]]]:
        """The rows of a CSV or JSONL file (path relative to the suite): (row, variables)."""
        name = self.text(node, "vars_file")
        path = (self.path.parent / name).resolve()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self.error(
                node, f"vars_file {name}: cannot read it: {exc.strerror or exc}"
            ) from None
        if path not in self.seen_files:
            self.seen_files.add(path)
            self.hashed.append(data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise self.error(node, f"vars_file {name}: not UTF-8 text") from None
        if path.suffix.lower() == ".csv":
            rows = self._csv(node, name, text)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = self._jsonl(node, name, text)
        else:
            raise self.error(node, f"vars_file {name}: expected a .csv or .jsonl file")
        if not rows:
            raise self.error(node, f"vars_file {name}: has no rows")
        return rows

    def _csv(self, node: Node, name: str, text: str) -> list[tuple[int, dict[str, str]]]:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            records = list(reader)
        except csv.Error as exc:
            raise self.error(node, f"vars_file {name}: row {reader.line_num}: {exc}") from None
        if not records or not any(h.strip() for h in records[0]):
            raise self.error(node, f"vars_file {name}: the first row must name the variables")
        header = [h.strip() for h in records[0]]
        if any(not h for h in header) or len(set(header)) != len(header):
            raise self.error(node, f"vars_file {name}: row 1: empty or repeated column name")
        rows = []
        for number, record in enumerate(records[1:], start=2):
            if not record:
                continue
            if len(record) != len(header):
                raise self.error(
                    node,
                    f"vars_file {name}: row {number}: {len(record)} columns, "
                    f"the header has {len(header)}",
                )
            rows.append((number, dict(zip(header, record, strict=True))))
        return rows

    def _jsonl(self, node: Node, name: str, text: str) -> list[tuple[int, dict[str, str]]]:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise self.error(node, f"vars_file {name}: row {number}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise self.error(node, f"vars_file {name}: row {number}: not a JSON object")
            variables: dict[str, str] = {}
            for key, value in record.items():
                if isinstance(value, bool) or value is None or isinstance(value, dict | list):
                    raise self.error(
                        node,
                        f"vars_file {name}: row {number}: variable {key!r} must be text "
                        "or a number",
                    )
                variables[key] = value if isinstance(value, str) else str(value)
            rows.append((number, variables))
        return rows


def load(path: Path) -> Suite:
    """Read and check the suite file at ``path``; SuiteError says what and where."""
    reader = _Reader(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    reader.hashed.append(data)
    try:
        root = load_yaml(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not UTF-8 text") from None
    except YamlError as exc:
        raise SuiteError(f"{path}: {exc}") from None
    if root is None:
        raise SuiteError(f"{path}: the file is empty")
    top = reader.mapping(root, TOP_KEYS, "the suite")
    if "feature" not in top:
        raise reader.error(root, "feature is required (the feature's name)")
    feature = reader.text(top["feature"], "feature")
    description = reader.text(top["description"], "description") if "description" in top else None
    pass_rate = (
        reader.number(top["pass_rate"], "pass_rate", 0, 100) if "pass_rate" in top else 100.0
    )
    defaults = (
        reader.mapping(top["defaults"], DEFAULT_KEYS, "defaults") if "defaults" in top else {}
    )
    matrix = _matrix(reader, top["matrix"]) if "matrix" in top else {}
    if "cases" not in top:
        raise reader.error(root, "cases is required (a list of cases)")
    case_nodes = top["cases"]
    if not isinstance(case_nodes.value, list) or not case_nodes.value:
        raise reader.error(case_nodes, "cases must be a non-empty list")
    cases: list[Case] = []
    for node in case_nodes.value:
        cases += _cases(reader, node, defaults, matrix)
    names = [c.name for c in cases]
    for case in cases:
        if names.count(case.name) > 1:
            raise reader.error(case.line, f"case name {case.name!r} is used twice")
    digest = hashlib.sha256()
    for chunk in reader.hashed:
        digest.update(chunk)
    return Suite(path, feature, description, pass_rate, cases, matrix, digest.hexdigest())


def _matrix(reader: _Reader, node: Node) -> dict[str, list[str]]:
    items = reader.mapping(node, MATRIX_KEYS, "matrix")
    matrix: dict[str, list[str]] = {}
    for key, values in items.items():
        if not isinstance(values.value, list) or not values.value:
            raise reader.error(values, f"matrix.{key} must be a non-empty list")
        names = [
            reader.prompt(v) if key == "prompt" else reader.text(v, "matrix.model", NAME)
            for v in values.value
        ]
        if len(set(names)) != len(names):
            raise reader.error(values, f"matrix.{key} names a value twice")
        matrix[key] = names
    return matrix


def _cases(
    reader: _Reader, node: Node, defaults: dict[str, Node], matrix: dict[str, list[str]]
) -> list[Case]:
    items = reader.mapping(node, CASE_KEYS, "a case")
    if "name" not in items:
        raise reader.error(node, "a case needs a name")
    name = reader.text(items["name"], "name")
    if not any(k in items for k in ("input", "vars", "vars_file")):
        raise reader.error(node, f"case {name!r} has neither input nor vars (nor vars_file)")
    for key in MATRIX_KEYS:
        if key in matrix and key in items:
            raise reader.error(
                items[key], f"case {name!r} sets {key}, which the matrix varies: remove one"
            )

    def pick(key: str) -> Node | None:
        return items.get(key, defaults.get(key))

    text_input = items.get("input")
    input_value = None
    if text_input is not None:
        if not isinstance(text_input.value, str):
            raise reader.error(text_input, "input must be text")
        input_value = text_input.value
    prompt_node, model_node = pick("prompt"), pick("model")
    prompt = reader.prompt(prompt_node) if prompt_node is not None else None
    model = reader.text(model_node, "model", NAME) if model_node is not None else None
    variables = reader.variables(defaults["vars"], "defaults.vars") if "vars" in defaults else {}
    if "vars" in items:
        variables.update(reader.variables(items["vars"], "vars"))
    assertions = reader.assertions(defaults["assert"]) if "assert" in defaults else []
    if "assert" in items:
        assertions += reader.assertions(items["assert"])
    threshold_node = pick("threshold")
    threshold = reader.number(threshold_node, "threshold", 0, 1) if threshold_node else 1.0
    repeat_node = pick("repeat")
    repeat = reader.repeat(repeat_node) if repeat_node is not None else 1
    tags: tuple[str, ...] = ()
    if "tags" in items:
        tag_nodes = items["tags"].value
        if not isinstance(tag_nodes, list):
            raise reader.error(items["tags"], "tags must be a list of names")
        tags = tuple(reader.text(t, "a tag") for t in tag_nodes)
    base = Case(
        name, node.line, input_value, variables, prompt, model, assertions, threshold, repeat, tags
    )
    if "vars_file" not in items:
        return [base]
    cases = []
    for row, row_vars in reader.vars_file(items["vars_file"]):
        merged = {**variables, **row_vars}
        row_input = merged.pop("input", None) if input_value is None else input_value
        cases.append(
            Case(
                f"{name} #{row}",
                node.line,
                row_input,
                merged,
                prompt,
                model,
                assertions,
                threshold,
                repeat,
                tags,
            )
        )
    return cases
