"""YAML that remembers where each value was written: every value is a ``Node`` with its line,
so a suite's errors name the file and line of what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

# libyaml's parser when PyYAML was built with it (ten times faster on a large suite), with
# the same safe constructor either way.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """Not YAML: the message has the line."""


@dataclass(frozen=True)
class Node:
    """A value and the line (1-based) it starts on. A mapping's value is a dict of str to
    Node, a sequence's a list of Node, a scalar's the Python value."""

    value: Any
    line: int

    def plain(self) -> Any:
        """The value with no Node left in it."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def load(text: str) -> Node | None:
    """The document as Nodes (None when it is empty); YamlError when it is not YAML or a
    mapping repeats a key."""
    loader = SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(loader, root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise YamlError(f"{where}not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _convert(loader: Any, node: yaml.Node) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        items: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                raise YamlError(f"line {key_node.start_mark.line + 1}: a key must be text")
            name = str(key)
            if name in items:
                raise YamlError(f"line {key_node.start_mark.line + 1}: {name!r} is repeated")
            items[name] = _convert(loader, value_node)
        return Node(items, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item) for item in node.value], line)
    return Node(loader.construct_object(node, deep=True), line)
