"""The ``avro`` format: records in Avro's binary encoding, plain or in the Confluent wire format.

``source.format: {avro: schemas/click.avsc}`` reads records written with that schema;
``{avro: schemas/click.avsc, wire: confluent}`` reads records framed by Confluent's serializers
(the magic byte 0, a 4-byte schema id, then the data), each decoded with the writer schema its id
names in the schema registry and resolved against the job's schema (the reader's) by Avro's
rules: fields matched by name or alias, writer fields the job lacks skipped, reader fields the
writer lacks taken from their defaults, ints promoted to longs and doubles, enum symbols mapped.

Records are decoded in the JVM by ``hr_decode`` (``operators/java/.../DecodeBinary.java``); no
record crosses into Python. The job addresses the record's top-level fields as it would a JSON
record's properties:

==============================================  =====================================
Avro type                                       field type
==============================================  =====================================
``string``, ``enum`` (its symbol), ``uuid``      string
``bytes``, ``fixed``                            string (base64)
``int``, ``long``, ``date`` (days)              integer
``timestamp-millis``, ``timestamp-micros``      integer (epoch ms; micros are floored)
``float``, ``double``, ``decimal``              number
``boolean``                                     boolean
``["null", T]``                                 T, not required
records, arrays, maps, other unions             decoded and checked, not addressable
==============================================  =====================================

>>> schema = avro_record_schema({"type": "record", "name": "Click", "fields": [
...     {"name": "page", "type": "string"}, {"name": "ms", "type": ["null", "long"], "default": None}]},
...     Path("click.avsc"))
>>> schema.field_type("ms"), sorted(schema.required)
(<FieldType.INTEGER: 'integer'>, ['page'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from headrace.operators import jvm
from headrace.operators.binary import BinaryDecoding, BinarySchema
from headrace.schemas.errors import SchemaFileError
from headrace.schemas.jsonschema import read_schema_document
from headrace.schemas.kinds import FormatKind
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType

_PRIMITIVE = {"string": FieldType.STRING, "bytes": FieldType.STRING, "int": FieldType.INTEGER,
              "long": FieldType.INTEGER, "float": FieldType.NUMBER, "double": FieldType.NUMBER,
              "boolean": FieldType.BOOLEAN}


class AvroSchemaError(SchemaFileError):
    """An .avsc file that is not a valid Avro record schema."""


@dataclass(frozen=True)
class AvroRecordSchema(BinarySchema):
    """An Avro record schema as a source schema; ``document`` is the JSON form the JVM compiles."""

    event_time_hint: ClassVar[str] = 'give it "type": {"type": "long", "logicalType": "timestamp-millis"}'

    def decoding(self, fmt: Any, topic: str) -> AvroDecoding:
        return AvroDecoding(schema=self, wire=fmt.wire, subject=fmt.subject or f"{topic}-value",
                            max_record_bytes=fmt.max_record_bytes, name="Avro")


def _field_type(avro_type: Any, named: dict[str, Any]) -> tuple[FieldType | None, bool]:
    """``(field type, nullable)`` of an Avro field type; None where it is not a scalar."""
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        if len(others) == 1:
            return _field_type(others[0], named)[0], len(others) < len(avro_type)
        return None, "null" in avro_type
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE:
            return _PRIMITIVE[avro_type], False
        if avro_type in named:
            return _field_type(named[avro_type], named)
        return None, False
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if avro_type.get("logicalType") == "decimal":
            return FieldType.NUMBER, False
        if kind == "enum":
            return FieldType.STRING, False
        if kind == "fixed":
            return FieldType.STRING, False
        if isinstance(kind, str) and kind in _PRIMITIVE:
            return _PRIMITIVE[kind], False
        return None, False
    return None, False


def avro_record_schema(document: Any, path: Path) -> AvroRecordSchema:
    """Check ``document`` with fastavro and derive the field types of its top-level record."""
    try:
        import fastavro
    except ImportError:
        raise AvroSchemaError(f"{path}: reading Avro schemas needs fastavro; pip install 'headrace[avro]'") from None
    try:
        fastavro.parse_schema(document, _write_hint=False)
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, TypeError, KeyError
        raise AvroSchemaError(f"{path}: not a valid Avro schema: {exc}") from None
    if not isinstance(document, dict) or document.get("type") != "record":
        raise AvroSchemaError(f"{path}: a source's Avro schema must be a record")
    named = avro_named_types(document)
    types: dict[str, FieldType | None] = {}
    required = set()
    for f in document.get("fields", []):
        kind, nullable = _field_type(f["type"], named)
        types[f["name"]] = kind
        if not nullable:
            required.add(f["name"])
    return AvroRecordSchema(path=path, document=document, types=types, required=frozenset(required))


def load_avro_schema(path: Path) -> AvroRecordSchema:
    return avro_record_schema(read_schema_document(path), path)


@dataclass(frozen=True)
class AvroDecoding(BinaryDecoding):
    """Avro: the reader schema, and each writer schema by id (resolved against it in the JVM)."""

    def format_spec(self) -> dict[str, Any]:
        return {"body": f"{jvm.PACKAGE}.AvroBody", "reader": self.schema.document,
                "writers": {str(i): w for i, w in sorted(self.writers.items())}}

    def subject_writers(self, profile: Profile) -> dict[int, Any]:
        """Each writer schema, standing alone: the named types its references give it written in."""
        from headrace.connectors.registry import subject_writers

        return {i: parse_avro(text, referenced)
                for i, (text, referenced) in subject_writers(profile, self.subject, "AVRO").items()}


def parse_avro(text: str, referenced: dict[str, str]) -> Any:
    """A registered Avro schema standing alone: the named types its references give it written in."""
    try:
        document = json.loads(text)
        return inline_avro(document, {name: json.loads(t) for name, t in referenced.items()}) if referenced \
            else document
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None


def inline_avro(document: Any, referenced: dict[str, Any]) -> Any:
    """``document`` with each named type it takes from ``referenced`` (Avro schemas by reference
    name) defined where it is first named, so the schema stands alone (as a reader and the JVM
    decoder need it).

    >>> inline_avro({"type": "record", "name": "A", "fields": [{"name": "b", "type": "x.B"}]},
    ...             {"x.B": {"type": "enum", "name": "B", "namespace": "x", "symbols": ["P"]}})["fields"][0]["type"]
    {'type': 'enum', 'name': 'B', 'namespace': 'x', 'symbols': ['P']}
    """
    named: dict[str, Any] = {}
    for ref_doc in referenced.values():
        for full, definition in avro_named_types(ref_doc).items():
            named.setdefault(full, definition)
    own = set(avro_named_types(document))
    done: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            full = node if "." in node or not namespace else f"{namespace}.{node}"
            for key in (full, node):
                if key in named and key not in own and key not in done:
                    done.add(key)
                    definition = named[key]
                    done.update(n for n in avro_named_types(definition))
                    return walk(definition, namespace)
            return node
        if isinstance(node, list):
            return [walk(n, namespace) for n in node]
        if isinstance(node, dict):
            space = namespace
            if node.get("type") in ("record", "error", "enum", "fixed") and "name" in node:
                name = str(node["name"])
                space = node.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
            return {k: (walk(v, space) if k in ("type", "items", "values", "fields") else v) for k, v in node.items()}
        return node

    return walk(document, "")


# -- Avro schema resolution (the specification's rules), as reasons ------------------------------

_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
               "string": {"bytes"}, "bytes": {"string"}}


def avro_named_types(document: Any) -> dict[str, Any]:
    """Every named type (record, enum, fixed) of an Avro schema, by full and by short name."""
    return _named(document, {})


def _named(document: Any, out: dict[str, Any], namespace: str = "") -> dict[str, Any]:
    if isinstance(document, dict):
        kind = document.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in document:
            space = document.get("namespace", namespace)
            name = document["name"]
            full = name if "." in name or not space else f"{space}.{name}"
            out[full] = document
            out.setdefault(name, document)
            namespace = full.rsplit(".", 1)[0] if "." in full else ""
        for value in document.values():
            _named(value, out, namespace)
    elif isinstance(document, list):
        for value in document:
            _named(value, out, namespace)
    return out


def _kind(schema: Any, named: dict[str, Any]) -> tuple[str, Any]:
    if isinstance(schema, list):
        return "union", schema
    if isinstance(schema, str):
        if schema in named:
            return _kind(named[schema], named)
        return schema, schema
    if isinstance(schema, dict):
        kind = schema.get("type")
        if isinstance(kind, (dict, list)):
            return _kind(kind, named)
        if kind in named and kind not in ("record", "enum", "fixed", "array", "map", "error"):
            return _kind(named[kind], named)
        return ("record" if kind == "error" else str(kind)), schema
    return "unknown", schema


def avro_resolution_problems(writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
    """Why records written with ``writer`` cannot be read with ``reader`` (empty: they can)."""
    wn, rn = avro_named_types(writer), avro_named_types(reader)
    out: list[str] = []
    seen: set[tuple[str, str]] = set()

    def name_of(s: Any) -> str:
        return str(s.get("name", "")).rsplit(".", 1)[-1] if isinstance(s, dict) else str(s)

    def matches(w: Any, r: Any) -> bool:
        wk, ws = _kind(w, wn)
        rk, rs = _kind(r, rn)
        if wk == rk:
            if wk in ("record", "enum", "fixed"):
                return name_of(ws) == name_of(rs) or name_of(ws) in [str(a).rsplit(".", 1)[-1]
                                                                    for a in rs.get("aliases", [])]
            return True
        return rk in _PROMOTIONS.get(wk, set())

    def walk(w: Any, r: Any, path: str) -> None:
        wk, ws = _kind(w, wn)
        rk, rs = _kind(r, rn)
        where = f" at {path}" if path else ""
        if wk == "union":
            for branch in ws:
                targets = rs if rk == "union" else [r]
                fit = next((t for t in targets if matches(branch, t)), None)
                if fit is None:
                    out.append(f"type {_kind(branch, wn)[0]}{where} can no longer be read (not in the reader's "
                               f"{'union' if rk == 'union' else rk})")
                else:
                    walk(branch, fit, path)
            return
        if rk == "union":
            fit = next((t for t in rs if matches(w, t)), None)
            if fit is None:
                out.append(f"type {wk}{where} is not among the reader's union branches")
            else:
                walk(w, fit, path)
            return
        if not matches(w, r):
            out.append(f"type{where} changed from {wk} to {rk}" if wk != rk else
                       f"{wk}{where} renamed from '{name_of(ws)}' to '{name_of(rs)}'")
            return
        if wk == "record":
            key = (json.dumps(ws, sort_keys=True)[:200], json.dumps(rs, sort_keys=True)[:200])
            if key in seen:
                return
            seen.add(key)
            wfields = {f["name"]: f for f in ws.get("fields", [])}
            for rf in rs.get("fields", []):
                names = [rf["name"], *rf.get("aliases", [])]
                wf = next((wfields[n] for n in names if n in wfields), None)
                field_path = f"{path}.{rf['name']}" if path else rf["name"]
                if wf is None:
                    if "default" not in rf:
                        out.append(f"field '{field_path}' removed, and it has no default" if reader_is_old
                                   else f"field '{field_path}' added without a default")
                else:
                    walk(wf["type"], rf["type"], field_path)
        elif wk == "enum":
            missing = [s for s in ws.get("symbols", []) if s not in rs.get("symbols", [])]
            if missing and "default" not in rs:
                out.append(f"enum{where} symbols {missing} " + ("added" if reader_is_old else "removed")
                           + " and the reader's enum has no default")
        elif wk == "fixed" and ws.get("size") != rs.get("size"):
            out.append(f"fixed{where} size changed from {ws.get('size')} to {rs.get('size')}")
        elif wk in ("array", "map"):
            part = "items" if wk == "array" else "values"
            walk(ws[part], rs[part], f"{path}[]" if path else "[]")

    walk(writer, reader, "")
    return out


def avro_fields(parsed: Any) -> dict[str, str]:
    """``{field path: its declaration}`` of an Avro schema, for ``headrace schema diff``."""
    out: dict[str, str] = {}
    named = avro_named_types(parsed)

    def avro(schema: Any, path: str, seen: frozenset[str]) -> None:
        if isinstance(schema, str) and schema in named and schema not in seen:
            avro(named[schema], path, seen | {schema})
        elif isinstance(schema, list):
            for branch in schema:
                avro(branch, path, seen)
        elif isinstance(schema, dict) and schema.get("type") in ("record", "error"):
            for f in schema.get("fields", []):
                where = f"{path}.{f['name']}" if path else f["name"]
                default = f" (default {json.dumps(f['default'])})" if "default" in f else ""
                out[where] = _avro_type(f["type"]) + default
                avro(f["type"], where, seen | {str(schema.get("name"))})
        elif isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            avro(schema["type"], path, seen)
        elif isinstance(schema, dict) and schema.get("type") == "array":
            avro(schema.get("items"), f"{path}[]", seen)
        elif isinstance(schema, dict) and schema.get("type") == "map":
            avro(schema.get("values"), f"{path}{{}}", seen)

    avro(parsed, "", frozenset())
    return out


def _avro_type(schema: Any) -> str:
    if isinstance(schema, list):
        return " | ".join(_avro_type(s) for s in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if schema.get("logicalType"):
            return f"{kind}:{schema['logicalType']}"
        if kind in ("record", "error", "enum", "fixed"):
            return f"{kind} {schema.get('name')}"
        if kind == "array":
            return f"array<{_avro_type(schema.get('items'))}>"
        if kind == "map":
            return f"map<{_avro_type(schema.get('values'))}>"
        return _avro_type(kind)
    return str(schema)


class AvroFormat(FormatKind):
    """``format: {avro: schemas/x.avsc}``: Avro records, decoded in the JVM (``hr_decode``)."""

    name, schema_type, suffixes, file_hint = "avro", "AVRO", (".avsc",), ".avsc file"

    def load(self, path: Path, options: dict[str, Any]) -> AvroRecordSchema:
        return load_avro_schema(path)

    def encoder(self, schema: Any) -> Any:
        import io

        import fastavro

        parsed = fastavro.parse_schema(schema.document)

        def encode(record: dict[str, Any]) -> bytes:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, record)
            return out.getvalue()

        return encode

    def parse(self, text: str, referenced: dict[str, str]) -> Any:
        return parse_avro(text, referenced)

    def incompatibilities(self, writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
        return avro_resolution_problems(writer, reader, reader_is_old)

    def fields(self, parsed: Any) -> dict[str, str]:
        return avro_fields(parsed)
