"""JSON Schema files: loading, checking that they are valid draft 2020-12, field types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from headrace.schemas.types import FieldType


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


def read_schema_document(path: Path) -> Any:
    """A schema file's JSON (JSON Schema, Avro), or a SchemaFileError naming the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaFileError(f"schema file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def load_record_schema(path: Path) -> RecordSchema:
    """Read and check a JSON Schema file (draft 2020-12 unless it names another ``$schema``)."""
    document = read_schema_document(path)
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


# The keywords the JVM validator (operators/java/.../SchemaNode.java) checks, and the ones it
# ignores as annotations, as in draft 2020-12 (``format`` is an annotation there). Keep both
# lists equal to the Java ones: the Java side refuses anything else.
JVM_CHECKED = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "items", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties"})
JVM_ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding"})
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def jvm_unsupported(document: Any, where: str = "#") -> str | None:
    """Why the JVM validator cannot check ``document`` (None when it can).

    Outside the subset (``$ref``, ``anyOf``, ``if``, ``patternProperties`` …, or another draft)
    Headrace checks records with the Python validator (jsonschema-rs), which knows all of 2020-12.
    """
    if isinstance(document, bool):
        return None
    if not isinstance(document, dict):
        return f"{where} is not a schema object"
    if where == "#":
        dialect = str(document.get("$schema", DRAFT_2020_12)).rstrip("#")
        if dialect != DRAFT_2020_12:
            return f"it declares $schema {dialect!r}, not draft 2020-12"
    for key, value in document.items():
        if key not in JVM_CHECKED and key not in JVM_ANNOTATIONS:
            return f"it uses '{key}' (at {where})"
        if key == "pattern" and not _java_regex_safe(value):
            return f"its pattern {value!r} (at {where}) may mean something else in Java"
    for name, sub in (document.get("properties") or {}).items():
        if (reason := jvm_unsupported(sub, f"{where}/properties/{name}")) is not None:
            return reason
    for key in ("additionalProperties", "items"):
        if key in document and (reason := jvm_unsupported(document[key], f"{where}/{key}")) is not None:
            return reason
    return None


def _java_regex_safe(pattern: Any) -> bool:
    """Patterns whose meaning is the same in ECMA-262 and java.util.regex (the common subset).

    Refused: Unicode property escapes, named groups, lookbehind and possessive or atomic forms,
    where the dialects differ; such a schema is checked by the Python validator instead.
    """
    if not isinstance(pattern, str):
        return False
    return not any(token in pattern for token in ("\\p", "\\P", "(?<", "(?>", "++", "*+", "?+", "\\u{", "\\c"))
