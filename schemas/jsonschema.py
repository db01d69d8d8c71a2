"""The ``json`` format: JSON Schema files (loading, checking that they are valid draft 2020-12,
field types) and the compatibility of two versions of a JSON Schema.

A reader schema can read a writer's records when every instance valid under the writer is valid
under the reader. The rules are those of the Confluent registry, each named by the change: a type
narrowed, a property newly required, a property removed from (or added to) a content model that
does not admit it, a closed content model, an enum or a bound narrowed. Combinators are compared
branch by branch; ``$ref`` is followed within the document.

>>> v1 = {"type": "object", "properties": {"page": {"type": ["string", "null"]}}}
>>> v2 = {"type": "object", "properties": {"page": {"type": "string"}}, "required": ["page"]}
>>> for why in json_schema_problems(v1, v2):
...     print(why)
property 'page' added as required
type at /page narrowed from [null, string] to [string]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from headrace.schemas.errors import SchemaFileError
from headrace.schemas.kinds import FormatKind
from headrace.schemas.types import FieldType


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
            return FieldType(kind) if isinstance(kind, str) and kind != FieldType.BYTES else None
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


# -- compatibility of two versions ---------------------------------------------------------------

_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})
#: bounds a reader may not tighten: (keyword, True when a larger reader value is tighter)
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")


def _types(schema: dict[str, Any]) -> frozenset[str]:
    kind = schema.get("type")
    if kind is None:
        return _ALL_TYPES
    names = frozenset([kind] if isinstance(kind, str) else kind)
    return names | {"integer"} if "number" in names else names


def _listed(types: frozenset[str]) -> str:
    shown = sorted(types - {"integer"} if "number" in types else types)
    return "[" + ", ".join(shown) + "]"


def _closed(schema: Any) -> bool:
    return schema is False or (isinstance(schema, dict) and schema.get("not") == {})


def _open(schema: Any) -> bool:
    return schema is True or schema == {} or schema is None


class _Document:
    """One schema document, its local ``$ref``s resolved (``#/$defs/x``, ``#/definitions/x``, ``#``)."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < 50:
            target: Any = self.root
            ref = schema["$ref"]
            if not ref.startswith("#"):
                return schema  # a remote ref: compared as written
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) and rest else target
            depth += 1
        if isinstance(schema, dict) and isinstance(schema.get("allOf"), list) and all(
                isinstance(s, dict) for s in schema["allOf"]):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in (self.resolve(s, depth + 1) for s in schema["allOf"]):
                if not isinstance(part, dict):
                    continue
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required":
                        merged["required"] = sorted({*merged.get("required", []), *value})
                    else:
                        merged.setdefault(key, value)
            return merged
        return schema


def json_schema_problems(writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
    """Why some record valid under ``writer`` is not valid under ``reader`` (empty: none is)."""
    wd, rd = _Document(writer), _Document(reader)
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    kept: list[Any] = []  # the pairs seen stay alive, so that their ids are not reused

    def walk(w: Any, r: Any, path: str) -> None:
        w, r = wd.resolve(w), rd.resolve(r)
        if (id(w), id(r)) in seen:
            return
        seen.add((id(w), id(r)))
        kept.append((w, r))
        at = f" at {path}" if path else ""
        if _open(r):
            return
        if r is False:
            if w is not False:
                out.append(f"schema{at} now admits nothing (false)")
            return
        if w is False:
            return
        if w is True or w is None:
            w = {}
        if not isinstance(w, dict) or not isinstance(r, dict):
            return
        for key in ("anyOf", "oneOf"):
            if isinstance(w.get(key), list):
                for branch in w[key]:
                    walk({**{k: v for k, v in w.items() if k != key}, **wd.resolve(branch)}, r, path)
                return
            if isinstance(r.get(key), list):
                rest = {k: v for k, v in r.items() if k != key}
                if not any(not _problems_of(w, {**rest, **rd.resolve(b)}) for b in r[key]):
                    out.append(f"{key}{at}: no branch of the reader admits every record of the writer")
                return
        if "not" in r and json.dumps(r["not"], sort_keys=True) != json.dumps(w.get("not"), sort_keys=True):
            out.append(f"'not'{at} changed")
        wt, rt = _types(w), _types(r)
        if not wt <= rt:
            out.append(f"type{at} narrowed from {_listed(wt)} to {_listed(rt)}")
        for key in ("enum", "const"):
            if key in r:
                allowed = r["enum"] if key == "enum" else [r["const"]]
                given = w.get("enum") if "enum" in w else ([w["const"]] if "const" in w else None)
                if given is None or any(v not in allowed for v in given):
                    out.append(f"{key}{at} narrowed" + ("" if given is None else
                               f": {[v for v in given if v not in allowed]} no longer allowed"))
        for key in _LOWER:
            if key in r and (key not in w or r[key] > w[key]):
                out.append(f"{key}{at} raised to {r[key]}" + (f" from {w[key]}" if key in w else ""))
        for key in _UPPER:
            if key in r and (key not in w or r[key] < w[key]):
                out.append(f"{key}{at} lowered to {r[key]}" + (f" from {w[key]}" if key in w else ""))
        if "pattern" in r and r.get("pattern") != w.get("pattern"):
            out.append(f"pattern{at} changed to {r['pattern']!r}")
        if "multipleOf" in r and (not w.get("multipleOf") or (w["multipleOf"] / r["multipleOf"]) % 1):
            out.append(f"multipleOf{at} changed to {r['multipleOf']}")
        if "object" in wt & rt:
            objects(w, r, path)
        if "array" in wt & rt:
            arrays(w, r, path)

    def extra(schema: dict[str, Any], name: str) -> Any:
        """The subschema ``schema`` applies to a property it does not list."""
        for pattern, sub in (schema.get("patternProperties") or {}).items():
            if re.search(pattern, name):
                return sub
        return schema.get("additionalProperties", True)

    def objects(w: dict[str, Any], r: dict[str, Any], path: str) -> None:
        wp, rp = w.get("properties") or {}, r.get("properties") or {}
        for name in sorted(set(r.get("required") or []) - set(w.get("required") or [])):
            out.append(f"required property '{_prop(path, name)}' removed" if reader_is_old
                       else f"property '{_prop(path, name)}' added as required")
        for name, sub in rp.items():
            where = f"{path}/{name}"
            if name in wp:
                walk(wp[name], sub, where)
                continue
            given = wd.resolve(extra(w, name))
            if _closed(given) or _open(rd.resolve(sub)):
                continue
            if _open(given):
                out.append(f"property '{_prop(path, name)}' " + ("removed from" if reader_is_old else "added to")
                           + " an open content model (a record may hold any value under it)")
            else:
                walk(given, sub, where)
        for name, sub in wp.items():
            if name in rp:
                continue
            taken = rd.resolve(extra(r, name))
            if _closed(taken) and not _closed(wd.resolve(sub)):
                out.append(f"property '{_prop(path, name)}' "
                           + ("added, and the reader's content model is closed" if reader_is_old
                              else "removed from a closed content model"))
            elif not _open(taken):
                walk(sub, taken, f"{path}/{name}")
        wa, ra = wd.resolve(w.get("additionalProperties", True)), rd.resolve(r.get("additionalProperties", True))
        if not _open(ra) and not _closed(wa):
            if _closed(ra) and not w.get("patternProperties") and (r.get("patternProperties") or {}) == {}:
                out.append(f"content model{' at ' + path if path else ''} closed (additionalProperties: false)")
            elif not _closed(ra):
                walk(wa, ra, f"{path}/*")
        if "propertyNames" in r and r["propertyNames"] != w.get("propertyNames"):
            out.append(f"propertyNames{' at ' + path if path else ''} changed")

    def arrays(w: dict[str, Any], r: dict[str, Any], path: str) -> None:
        wprefix, rprefix = w.get("prefixItems") or [], r.get("prefixItems") or []
        witems, ritems = w.get("items", True), r.get("items", True)
        for i in range(max(len(wprefix), len(rprefix))):
            wsub = wprefix[i] if i < len(wprefix) else witems
            rsub = rprefix[i] if i < len(rprefix) else ritems
            if not _closed(wd.resolve(wsub)):
                walk(wsub, rsub, f"{path}/{i}")
        walk(witems, ritems, f"{path}/[]")
        if "contains" in r and r["contains"] != w.get("contains"):
            out.append(f"contains{' at ' + path if path else ''} changed")
        if r.get("uniqueItems") and not w.get("uniqueItems"):
            out.append(f"uniqueItems{' at ' + path if path else ''} now required")

    walk(writer, reader, "")
    return list(dict.fromkeys(out))


def _prop(path: str, name: str) -> str:
    return f"{path[1:]}/{name}" if path else name


def _problems_of(writer: Any, reader: Any) -> list[str]:
    return json_schema_problems(writer, reader)


def json_schema_fields(parsed: Any) -> dict[str, str]:
    """``{property path: its declaration}`` of a JSON Schema, for ``headrace schema diff``."""
    out: dict[str, str] = {}
    document = _Document(parsed)

    def walk(schema: Any, path: str, depth: int) -> None:
        schema = document.resolve(schema)
        if not isinstance(schema, dict) or depth > 20:
            return
        required = set(schema.get("required") or [])
        for name, sub in (schema.get("properties") or {}).items():
            where = f"{path}.{name}" if path else name
            resolved = document.resolve(sub)
            shown = {k: v for k, v in resolved.items() if k not in ("properties", "items", "description", "$defs")} \
                if isinstance(resolved, dict) else resolved
            out[where] = ("required " if name in required else "") + json.dumps(shown, sort_keys=True)
            walk(resolved, where, depth + 1)
            if isinstance(resolved, dict) and "items" in resolved:
                walk(resolved["items"], f"{where}[]", depth + 1)
        if "additionalProperties" in schema and path == "":
            out["(additionalProperties)"] = json.dumps(schema["additionalProperties"])

    walk(parsed, "", 0)
    return out




class JsonFormat(FormatKind):
    """``format: {json: schemas/x.schema.json}``: records are JSON, checked against a JSON Schema
    (draft 2020-12) by the validate step (``operators/validate.py``), in the JVM or in Python."""

    name, schema_type, suffixes, binary = "json", "JSON", (".json",), False
    json_objects = True

    def load(self, path: Path, options: dict[str, Any]) -> RecordSchema:
        return load_record_schema(path)

    def encoder(self, schema: Any) -> Any:
        return lambda record: json.dumps(record).encode()

    takes_references = False  # Confluent's JSON references are not supported (refused at registration)

    def incompatibilities(self, writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
        return json_schema_problems(writer, reader, reader_is_old)

    def fields(self, parsed: Any) -> dict[str, str]:
        return json_schema_fields(parsed)
