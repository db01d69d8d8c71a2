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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from headrace.operators.binary import BinaryDecoding, BinarySchema
from headrace.schemas.jsonschema import SchemaFileError, read_schema_document
from headrace.schemas.kinds import FormatKind
from headrace.schemas.registry import avro_named_types
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
        return {"format": "avro", "reader": self.schema.document,
                "writers": {str(i): w for i, w in sorted(self.writers.items())}}

    def subject_writers(self, profile: Any) -> dict[int, Any]:
        """Each writer schema, standing alone: the named types its references give it written in."""
        from headrace.connectors.registry import subject_writers
        from headrace.schemas.registry import parse

        return {i: parse(text, "AVRO", referenced)
                for i, (text, referenced) in subject_writers(profile, self.subject, "AVRO").items()}


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
