"""The ``protobuf`` format: records of one Protobuf message, plain or in the Confluent wire format.

``source.format: {protobuf: schemas/click.proto, message: headrace.examples.Click}`` reads
records that are that message's binary encoding; with ``wire: confluent`` each record starts with
the magic byte 0, a 4-byte schema id and the message indexes (which message of the writer's
file), as Confluent's ``ProtobufSerializer`` writes them. The ``.proto`` is compiled by
grpcio-tools' protoc (``schemas/protoc.py``); the JVM decoder (``ProtoDecoder.java``) reads each
record with the job's message, by field number, as Protobuf itself does: fields the job does not
know are skipped, absent ones take their defaults. For each writer schema id of the subject,
Headrace finds the job's message in the writer's file once, at compile time, so a record whose
indexes name another message is a dead letter that says so.

==============================================================  ====================================
Protobuf field                                                  field type
==============================================================  ====================================
``string``, an enum (its value's name; an unknown number as text)  string
``bytes``                                                       string (base64)
``int32``, ``int64``, ``uint32``, ``uint64``, ``sint*``, ``*fixed*``  integer
``google.protobuf.Timestamp``                                   integer (epoch ms), null when unset
``float``, ``double``                                           number
``bool``                                                        boolean
repeated, map and other message fields                          decoded and checked, not addressable
==============================================================  ====================================

A proto3 field without presence always has a value (its default when absent) and is required;
``optional`` fields, ``oneof`` members and Timestamps are null when absent.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from headrace.operators import jvm
from headrace.operators.binary import BinaryDecoding, BinarySchema
from headrace.schemas.errors import SchemaFileError
from headrace.schemas.kinds import FormatKind
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from pydantic import Field

TIMESTAMP = "google.protobuf.Timestamp"

# FieldDescriptorProto.Type
_TYPES = {1: FieldType.NUMBER, 2: FieldType.NUMBER, 3: FieldType.INTEGER, 4: FieldType.INTEGER,
          5: FieldType.INTEGER, 6: FieldType.INTEGER, 7: FieldType.INTEGER, 8: FieldType.BOOLEAN,
          9: FieldType.STRING, 12: FieldType.STRING, 13: FieldType.INTEGER, 14: FieldType.STRING,
          15: FieldType.INTEGER, 16: FieldType.INTEGER, 17: FieldType.INTEGER, 18: FieldType.INTEGER}
_MESSAGE, _REPEATED = 11, 3


class ProtoSchemaError(SchemaFileError):
    """A .proto file protoc refuses, or a message it does not define."""


@dataclass(frozen=True)
class ProtoRecordSchema(BinarySchema):
    """A Protobuf message as a source schema; ``document`` holds the descriptors the JVM reads."""

    message: str = ""

    event_time_hint: ClassVar[str] = "make it an int64 of epoch milliseconds or a google.protobuf.Timestamp"

    def decoding(self, fmt: Any, topic: str) -> ProtoDecoding:
        return ProtoDecoding(schema=self, wire=fmt.wire, subject=fmt.subject or f"{topic}-value",
                             max_record_bytes=fmt.max_record_bytes, name="Protobuf")


def _walk(messages: list[Any], prefix: str, out: dict[str, Any], enums: dict[str, dict[str, str]],
          syntax: str) -> None:
    for m in messages:
        name = f"{prefix}.{m.name}" if prefix else m.name
        rows = []
        for f in m.field:
            presence = (f.proto3_optional or f.HasField("oneof_index") or f.type == _MESSAGE
                        or (syntax != "proto3" and f.label != 2))
            rows.append([f.number, f.name, f.type, f.label == _REPEATED, f.type_name.lstrip("."), presence])
        out[name] = rows
        for e in m.enum_type:
            enums[f"{name}.{e.name}"] = {str(v.number): v.name for v in e.value}
        _walk(list(m.nested_type), name, out, enums, syntax)


def descriptors(files: list[Any]) -> dict[str, Any]:
    """``{"messages": {full name: [[number, name, type, repeated, type name, nullable]]}, "enums":
    {full name: {number: name}}}`` of every message and enum in ``files`` (FileDescriptorProtos)."""
    messages: dict[str, Any] = {}
    enums: dict[str, dict[str, str]] = {}
    for file in files:
        for e in file.enum_type:
            enums[f"{file.package}.{e.name}" if file.package else e.name] = {str(v.number): v.name for v in e.value}
        _walk(list(file.message_type), file.package, messages, enums, file.syntax or "proto2")
    return {"messages": messages, "enums": enums}


def message_indexes(file: Any, full_name: str) -> list[int] | None:
    """Confluent's message indexes of ``full_name`` in ``file`` (a FileDescriptorProto), or None."""
    def find(messages: list[Any], prefix: str) -> list[int] | None:
        for i, m in enumerate(messages):
            name = f"{prefix}.{m.name}" if prefix else m.name
            if name == full_name:
                return [i]
            inner = find(list(m.nested_type), name)
            if inner is not None:
                return [i, *inner]
        return None

    return find(list(file.message_type), file.package)


def load_proto_schema(path: Path, message: str) -> ProtoRecordSchema:
    """Compile ``path`` with protoc and take ``message`` (its full name, or its name if unique)."""
    from google.protobuf import descriptor_pb2
    from headrace.schemas.protoc import ProtocError, descriptor_set

    if not path.is_file():
        raise ProtoSchemaError(f"schema file {path} does not exist")
    try:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(path)).file)
    except ProtocError as exc:
        raise ProtoSchemaError(f"protoc refused {path.name}: {exc}") from None
    tables = descriptors(files)
    own = descriptors([files[-1]])["messages"]  # the file itself comes last, after its imports
    found = message if message in own else next((n for n in own if n.rsplit(".", 1)[-1] == message), None)
    if found is None:
        names = {n.rsplit(".", 1)[-1]: n for n in own}
        close = [names.get(c, c) for c in difflib.get_close_matches(message, [*own, *names], n=1)]
        raise ProtoSchemaError(f"{path.name} defines no message '{message}'"
                               + (f"; did you mean '{close[0]}'?" if close else f" (it has {', '.join(own)})"))
    types: dict[str, FieldType | None] = {}
    required: set[str] = set()
    timestamps: set[str] = set()
    for _number, name, kind, repeated, type_name, nullable in tables["messages"][found]:
        if repeated:
            types[name] = None
        elif kind == _MESSAGE:
            types[name] = FieldType.INTEGER if type_name == TIMESTAMP else None
            if type_name == TIMESTAMP:
                timestamps.add(name)
        else:
            types[name] = _TYPES.get(kind)
            if not nullable:
                required.add(name)
    return ProtoRecordSchema(path=path, document={"message": found, **tables}, types=types,
                             required=frozenset(required), timestamps=frozenset(timestamps), message=found)


def writer_file(text: str, imports: dict[str, str] | None = None) -> Any:
    """A registered Protobuf schema as a FileDescriptorProto (base64 descriptor or .proto text;
    ``imports``: the files its references name, by import path)."""
    return proto_file(text, imports)


@dataclass(frozen=True)
class ProtoDecoding(BinaryDecoding):
    """Protobuf: the job's descriptors, and for each writer id the indexes of the job's message."""

    def format_spec(self) -> dict[str, Any]:
        return {"body": f"{jvm.PACKAGE}.ProtoDecoder$Messages", **self.schema.document,
                "writers": {str(i): w for i, w in sorted(self.writers.items())}}

    def subject_writers(self, profile: Profile) -> dict[int, Any]:
        from headrace.connectors.registry import subject_writers
        from headrace.schemas.protoc import ProtocError

        message = self.schema.document["message"]
        out: dict[int, Any] = {}
        for schema_id, (text, imports) in subject_writers(profile, self.subject, "PROTOBUF").items():
            try:
                file = writer_file(text, imports)
            except ProtocError as exc:
                out[schema_id] = f"protoc refused the registered schema: {exc}"
                continue
            indexes = message_indexes(file, message)
            out[schema_id] = indexes if indexes is not None else (
                f"it defines {', '.join(descriptors([file])['messages']) or 'no message'}, not {message}")
        return out


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- compatibility of two versions: fields by number ----------------------------------------------

#: FieldDescriptorProto type numbers, by name
_NAMES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
          8: "bool", 9: "string", 10: "group", 11: "message", 12: "bytes", 13: "uint32", 14: "enum",
          15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64"}
#: kinds a reader may read each other's values as (the Protobuf language guide's "compatible")
_FAMILIES = [{"int32", "uint32", "int64", "uint64", "bool", "enum"}, {"sint32", "sint64"},
             {"fixed32", "sfixed32"}, {"fixed64", "sfixed64"}, {"string", "bytes"}]
_WIRE = {"double": "64-bit", "fixed64": "64-bit", "sfixed64": "64-bit", "float": "32-bit", "fixed32": "32-bit",
         "sfixed32": "32-bit", "string": "length-delimited", "bytes": "length-delimited",
         "message": "length-delimited", "group": "group"}


def proto_file(text: str, imports: dict[str, str] | None = None) -> Any:
    """A registered Protobuf schema as a FileDescriptorProto: Confluent's Python serializer registers
    the serialized descriptor in base64, its Java one the .proto text (compiled by protoc, whose
    refusal is a ``ProtocError``)."""
    import base64
    import binascii
    import tempfile
    from pathlib import Path

    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError
    from headrace.schemas.protoc import descriptor_set

    try:
        return descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, DecodeError):  # not base64, or not a descriptor: .proto text
        pass
    with tempfile.TemporaryDirectory(prefix="headrace-proto-") as tmp:
        # the files it imports, at their import paths: .proto text as files, serialized descriptors
        # (as Confluent's Python serializer registers them) as a descriptor set protoc reads
        given = descriptor_pb2.FileDescriptorSet()
        for name, imported in (imports or {}).items():
            target = Path(tmp) / name
            if Path(tmp).resolve() not in target.resolve().parents:
                raise ValueError(f"reference name {name!r} is not a relative import path")
            try:
                given.file.append(descriptor_pb2.FileDescriptorProto.FromString(
                    base64.b64decode(imported, validate=True)))
                continue
            except (binascii.Error, ValueError, DecodeError):
                pass
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(imported, encoding="utf-8")
        proto = Path(tmp) / "__schema__.proto"
        proto.write_text(text, encoding="utf-8")
        extra: tuple[str, ...] = ()
        if given.file:
            (Path(tmp) / "__imports__.pb").write_bytes(given.SerializeToString())
            extra = (f"--descriptor_set_in={Path(tmp) / '__imports__.pb'}",)
        return descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(proto, extra=extra)).file[-1]


def _messages(file: Any) -> dict[str, dict[int, tuple[str, str, bool, str, str | None, bool]]]:
    """``{full name: {number: (name, kind, repeated, type name, oneof, required)}}`` of a
    FileDescriptorProto (synthetic oneofs of proto3 ``optional`` fields are not oneofs)."""
    out: dict[str, dict[int, tuple[str, str, bool, str, str | None, bool]]] = {}

    def walk(messages: Any, prefix: str) -> None:
        for m in messages:
            name = f"{prefix}.{m.name}" if prefix else m.name
            oneofs = [o.name for o in m.oneof_decl]
            fields = {}
            for f in m.field:
                real = f.HasField("oneof_index") and not f.proto3_optional
                fields[f.number] = (f.name, _NAMES.get(f.type, str(f.type)), f.label == 3,
                                    f.type_name.lstrip("."), oneofs[f.oneof_index] if real else None, f.label == 2)
            out[name] = fields
            walk(m.nested_type, name)

    walk(file.message_type, file.package)
    return out


def _same_family(a: str, b: str) -> bool:
    return a == b or any(a in f and b in f for f in _FAMILIES)


def protobuf_problems(writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
    """Why records written with ``writer`` cannot be read with ``reader`` (FileDescriptorProtos)."""
    wm, rm = _messages(writer), _messages(reader)
    old, new = (rm, wm) if reader_is_old else (wm, rm)
    out = [f"message '{name}' removed" for name in old if name not in new]
    for message in (m for m in old if m in new):
        before, after = old[message], new[message]
        by_name = {f[0]: n for n, f in after.items()}
        for number, (name, kind, repeated, type_name, oneof, required) in sorted(before.items()):
            field = f"{message.rsplit('.', 1)[-1]}.{name}"
            if number not in after:
                moved = by_name.get(name)
                if moved is not None and moved not in before:
                    out.append(f"field '{field}' number changed from {number} to {moved}")
                elif required:
                    out.append(f"required field '{field}' ({number}) removed")
                continue
            name2, kind2, repeated2, type_name2, oneof2, required2 = after[number]
            label = f"field '{field}' ({number})"
            if not _same_family(kind, kind2):
                wire = (_WIRE.get(kind, "varint"), _WIRE.get(kind2, "varint"))
                out.append(f"{label} changed type from {type_name or kind} to {type_name2 or kind2}"
                           + (f" (wire type {wire[0]} to {wire[1]})" if wire[0] != wire[1] else
                              " (the same wire type, read as another kind)"))
            elif kind == kind2 == "message" and type_name != type_name2:
                out.append(f"{label} changed message type from {type_name} to {type_name2}")
            elif kind == "enum" == kind2 and type_name != type_name2:
                out.append(f"{label} changed enum type from {type_name} to {type_name2}")
            if repeated != repeated2:
                out.append(f"{label} changed from {'repeated' if repeated else 'singular'} to "
                           f"{'repeated' if repeated2 else 'singular'}")
            if required2 and not required:
                out.append(f"{label} made required")
            if oneof2 is not None and oneof != oneof2:
                existing = any(f[4] == oneof2 for f in before.values())
                joined = [n for n, f in after.items() if f[4] == oneof2 and n in before and before[n][4] != oneof2]
                if existing or len(joined) > 1:
                    out.append(f"{label} moved into oneof '{oneof2}'"
                               + ("" if existing else f" with {len(joined) - 1} other existing field(s)"))
        for number, field_info in sorted(after.items()):
            if number not in before and field_info[5]:
                out.append(f"required field '{message.rsplit('.', 1)[-1]}.{field_info[0]}' ({number}) added")
    return list(dict.fromkeys(out))


def protobuf_fields(parsed: Any) -> dict[str, str]:
    """``{message.field: its declaration}`` of a FileDescriptorProto, for ``headrace schema diff``."""
    out: dict[str, str] = {}
    for message, fields in _messages(parsed).items():
        for number, (name, kind, repeated, type_name, oneof, required) in sorted(fields.items()):
            out[f"{message}.{name}"] = " ".join(filter(None, [
                "repeated" if repeated else "", "required" if required else "", type_name or kind,
                f"= {number}", f"(oneof {oneof})" if oneof else ""]))
    return out


class ProtobufFormat(FormatKind):
    """``format: {protobuf: schemas/x.proto, message: pkg.Msg}``: Protobuf messages, decoded in
    the JVM (``hr_decode``) by field number."""

    name, schema_type, suffixes, file_hint = "protobuf", "PROTOBUF", (".proto",), ".proto file"
    keys = {"message": (str | None, Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"),
                        "the message's full name")}

    def load(self, path: Path, options: dict[str, Any]) -> ProtoRecordSchema:
        return load_proto_schema(path, options.get("message") or "")

    def _classes(self, schema: Any) -> tuple[Any, Any]:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from headrace.schemas.protoc import descriptor_set

        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(schema.path)).file
        pool = descriptor_pool.DescriptorPool()
        for file in files:
            pool.Add(file)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.message)), files[-1]

    def encoder(self, schema: Any) -> Any:
        cls, _ = self._classes(schema)
        fields = {f.name for f in cls.DESCRIPTOR.fields}
        return lambda record: cls(**{k: v for k, v in record.items() if k in fields}).SerializeToString()

    def framing(self, schema: Any, schema_id: int) -> bytes:
        _, file = self._classes(schema)
        indexes = message_indexes(file, schema.message) or [0]
        return super().framing(schema, schema_id) + (
            b"\x00" if indexes == [0] else b"".join(_zigzag(i) for i in [len(indexes), *indexes]))

    def canonical(self, text: str) -> str:
        return text.strip()

    def parse(self, text: str, referenced: dict[str, str]) -> Any:
        from headrace.schemas.protoc import ProtocError

        try:
            return proto_file(text, referenced)
        except ProtocError as exc:
            raise ValueError(f"protoc refused it: {exc}") from None

    def incompatibilities(self, writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
        return protobuf_problems(writer, reader, reader_is_old)

    def fields(self, parsed: Any) -> dict[str, str]:
        return protobuf_fields(parsed)
