"""YAML loading that remembers where every value came from.

Pydantic reports errors as key paths (``('steps', 1, 'aggregate', 'windw')``); users
need ``file:line``. :func:`load_yaml` returns the plain data plus a :class:`SourceMap`
that turns such a path into the line of the nearest key that exists in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from headrace.schemas.errors import SpecError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceMap:
    """Line numbers (1-based) of every key and sequence item in one YAML file."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """``file:line`` for ``path``, falling back to its nearest ancestor in the file."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return f"{self.file}:{self.lines.get(p, 1)}"


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document; syntax errors become a :class:`SpecError` at file:line."""
    name = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError(f"no such file {name}", hint="check the path") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}", where=f"{name}:{line}",
                        hint="fix the indentation or quoting there") from None
    lines: dict[KeyPath, int] = {}
    if node is None:
        return {}, SourceMap(name, lines)
    return _build(node, (), lines), SourceMap(name, lines)
