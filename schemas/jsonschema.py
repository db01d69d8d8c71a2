"""JSON Schema files: loading, checking that they are valid draft 2020-12, field types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from schemas.types import FieldType


class SchemaFileError(ValueError):
    """The schema file cannot be read or is not a valid JSON Schema."""


@dataclass(frozen=True)
class RecordSchema:
    """A JSON Schema for the records of a source, with the facts the planner needs."""

    path: Path
    document: dict[str, Any]

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.document.get("required", ()))

    def field_type(self, name: str) -> FieldType | None:
        """Scalar type of top-level property ``name`` (None if absent or not a scalar type)."""
        prop = self.document.get("properties", {}).get(name)
        if not isinstance(prop, dict):
            return None
        kind = prop.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        try:
            return FieldType(kind) if isinstance(kind, str) else None
        except ValueError:
            return None

    @property
    def properties(self) -> list[str]:
        return list(self.document.get("properties", {}))


def load_record_schema(path: Path) -> RecordSchema:
    """Read and check a JSON Schema file (draft 2020-12 unless it names another ``$schema``)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaFileError(f"schema file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise SchemaFileError(f"{path}: a record schema must be a JSON object")
    validator = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(document)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise SchemaFileError(f"{path}: not a valid JSON Schema at {where}: {exc.message}") from None
    if document.get("type", "object") != "object":
        raise SchemaFileError(f"{path}: a record schema must describe an object (\"type\": \"object\")")
    return RecordSchema(path=path, document=document)
