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


#: a job spec or profile is small: more values than this, or deeper nesting, is a mistake or an
#: attack (YAML aliases expanding exponentially: 9 levels of 9 aliases are 387 million values)
MAX_VALUES, MAX_DEPTH = 20_000, 64


class _Builder:
    def __init__(self, name: str) -> None:
        self.name, self.values = name, 0
        self.lines: dict[KeyPath, int] = {}
        self.loader = yaml.SafeLoader("")  # one per file: building one per scalar was most of the cost

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise SpecError(f"the file holds more than {MAX_VALUES:,} values once its YAML aliases are expanded",
                            where=f"{self.name}:{node.start_mark.line + 1}",
                            hint="write the values out instead of repeating aliases (*name)")
        if len(path) > MAX_DEPTH:
            raise SpecError(f"values are nested more than {MAX_DEPTH} levels deep",
                            where=f"{self.name}:{node.start_mark.line + 1}", hint="a job spec nests a few levels")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in out:
                    raise SpecError(f"duplicate key '{key}' (first at line {self.lines[path + (key,)]})",
                                    where=f"{self.name}:{line}", hint="keep one of them")
                self.lines[path + (key,)] = line
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, SourceMap]:
    """Parse one YAML document; every problem with the file (not there, not UTF-8 text, invalid
    YAML, duplicate keys, aliases expanding to too much, nesting too deep) is a
    :class:`SpecError` at file:line."""
    name = str(path)
    if text is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SpecError(f"no such file {name}", hint="check the path") from None
        except OSError as exc:
            raise SpecError(f"cannot read {name}: {exc.strerror or exc}",
                            hint="give a YAML file you can read") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise SpecError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at position {exc.start}",
                            where=f"{name}:{line}", hint="save the file as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}", where=f"{name}:{line}",
                        hint="fix the indentation or quoting there") from None
    except yaml.YAMLError as exc:  # the reader's: a control character, a NUL
        position = getattr(exc, "position", 0) or 0
        character = getattr(exc, "character", None)
        code = ord(character) if isinstance(character, str) and character else character
        what = f"character U+{code:04X}" if isinstance(code, int) else "a character YAML does not allow"
        raise SpecError(f"invalid YAML: {what} at position {position}",
                        where=f"{name}:{text[:position].count(chr(10)) + 1}",
                        hint="a job spec is text: remove control characters") from None
    except RecursionError:
        raise SpecError(f"values are nested more than {MAX_DEPTH} levels deep", where=f"{name}:1",
                        hint="a job spec nests a few levels") from None
    if node is None:
        return {}, SourceMap(name, {})
    builder = _Builder(name)
    return builder.build(node, ()), SourceMap(name, builder.lines)
