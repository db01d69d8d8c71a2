"""JSON Schema files: loading, checking that they are valid draft 2020-12, field types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from headrace.schemas.kinds import FormatKind
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
    "minProperties", "maxProperties", "$ref", "$defs", "allOf", "anyOf", "oneOf", "not",
    "if", "then", "else", "patternProperties", "prefixItems", "contains", "minContains",
    "maxContains", "dependentRequired", "dependentSchemas", "propertyNames"})
#: keywords whose value is one subschema, a list of them, or a map of names to them
_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "dependentSchemas")
JVM_ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding",
    "contentSchema", "$anchor"})
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def jvm_unsupported(document: Any, where: str = "#", root: Any = None) -> str | None:
    """Why the JVM validator cannot check ``document`` (None when it can).

    Outside the subset (``$dynamicRef``, ``unevaluatedProperties``, a ``$ref`` that is not a JSON
    Pointer into the document, a nested ``$id``, another draft …) Headrace checks records with the
    Python validator (jsonschema-rs), which knows all of 2020-12.
    """
    if isinstance(document, bool):
        return None
    if not isinstance(document, dict):
        return f"{where} is not a schema object"
    if root is None:
        root = document
        dialect = str(document.get("$schema", DRAFT_2020_12)).rstrip("#")
        if dialect != DRAFT_2020_12:
            return f"it declares $schema {dialect!r}, not draft 2020-12"
    elif "$id" in document:
        return f"it sets a nested '$id' (at {where})"
    for key, value in document.items():
        if key not in JVM_CHECKED and key not in JVM_ANNOTATIONS:
            return f"it uses '{key}' (at {where})"
        if key == "pattern" and not _java_regex_safe(value):
            return f"its pattern {value!r} (at {where}) may mean something else in Java"
        if key == "$ref" and (reason := _local_ref_problem(value, root, where)) is not None:
            return reason
    for key in _ONE:
        if key in document and (reason := jvm_unsupported(document[key], f"{where}/{key}", root)) is not None:
            return reason
    for key in _LIST:
        value = document.get(key)
        if key in document and (not isinstance(value, list) or not value):
            return f"'{key}' at {where} is not a non-empty list of schemas"
        for i, sub in enumerate(value or []):
            if (reason := jvm_unsupported(sub, f"{where}/{key}/{i}", root)) is not None:
                return reason
    for key in _MAP:
        for name, sub in (document.get(key) or {}).items():
            if key == "patternProperties" and not _java_regex_safe(name):
                return f"its pattern {name!r} (at {where}/patternProperties) may mean something else in Java"
            if (reason := jvm_unsupported(sub, f"{where}/{key}/{name}", root)) is not None:
                return reason
    return None


def _local_ref_problem(ref: Any, root: Any, where: str) -> str | None:
    """Why a ``$ref`` is outside the JVM subset: not ``#`` or a JSON Pointer ``#/…``, or pointing nowhere."""
    from urllib.parse import unquote

    if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and ref[1] != "/"):
        return f"its $ref {ref!r} (at {where}) is not a JSON Pointer into the document"
    target = root
    parts = [p.replace("~1", "/").replace("~0", "~") for p in unquote(ref[1:]).split("/")[1:]]
    i = 0
    while i < len(parts):  # only through keywords holding schemas, which jvm_unsupported walks too
        key = parts[i]
        if not isinstance(target, dict) or key not in target or key not in (*_ONE, *_LIST, *_MAP):
            return f"its $ref {ref!r} (at {where}) does not point at a schema of the document"
        target = target[key]
        if key in _LIST or key in _MAP:
            if i + 1 == len(parts):
                return f"its $ref {ref!r} (at {where}) does not point at a schema of the document"
            name = parts[i + 1]
            if isinstance(target, list) and name.isdigit() and int(name) < len(target):
                target = target[int(name)]
            elif isinstance(target, dict) and name in target:
                target = target[name]
            else:
                return f"its $ref {ref!r} (at {where}) does not point at a schema of the document"
            i += 1
        i += 1
    return None


def _java_regex_safe(pattern: Any) -> bool:
    """Patterns whose meaning is the same in ECMA-262 and java.util.regex (the common subset).

    Refused: Unicode property escapes, named groups, lookbehind and possessive or atomic forms,
    where the dialects differ; such a schema is checked by the Python validator instead.
    """
    if not isinstance(pattern, str):
        return False
    return not any(token in pattern for token in ("\\p", "\\P", "(?<", "(?>", "++", "*+", "?+", "\\u{", "\\c"))


class JsonFormat(FormatKind):
    """``format: {json: schemas/x.schema.json}``: records are JSON, checked against a JSON Schema
    (draft 2020-12) by the validate step (``operators/validate.py``), in the JVM or in Python."""

    name, schema_type, suffixes, binary = "json", "JSON", (".json",), False

    def load(self, path: Path, options: dict[str, Any]) -> RecordSchema:
        return load_record_schema(path)

    def encoder(self, schema: Any) -> Any:
        return lambda record: json.dumps(record).encode()
