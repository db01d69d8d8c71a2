"""Compatibility of two versions of a JSON Schema or a Protobuf schema, as reasons a reader cannot
read what a writer wrote (the Avro rules are in ``registry.py``, after the Avro specification's
schema resolution). Each function answers for one direction; the registry asks both for FULL.

JSON Schema: a reader schema can read a writer's records when every instance valid under the
writer is valid under the reader. The rules are those of the Confluent registry, each named by
the change: a type narrowed, a property newly required, a property removed from (or added to) a
content model that does not admit it, a closed content model, an enum or a bound narrowed.
Combinators are compared branch by branch; ``$ref`` is followed within the document.

>>> v1 = {"type": "object", "properties": {"page": {"type": ["string", "null"]}}}
>>> v2 = {"type": "object", "properties": {"page": {"type": "string"}}, "required": ["page"]}
>>> for why in json_schema_problems(v1, v2):
...     print(why)
property 'page' added as required
type at /page narrowed from [null, string] to [string]

Protobuf: fields are matched by number. A field whose wire type or scalar kind changed, whose
message type changed, that became repeated or singular, whose number changed (same name, another
number), that moved into an existing oneof, or a message that was removed, breaks; a field added
or removed does not (proto3 readers skip unknown fields and default missing ones).
"""

from __future__ import annotations

import json
import re
from typing import Any

# -- JSON Schema ---------------------------------------------------------------------------------

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


# -- Protobuf ------------------------------------------------------------------------------------

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


# -- field-level view, for ``headrace schema diff`` ------------------------------------------------

def fields_of(parsed: Any, schema_type: str) -> dict[str, str]:
    """``{field path: how it is declared}`` of a parsed schema (see ``registry.parse``)."""
    out: dict[str, str] = {}
    if schema_type == "PROTOBUF":
        for message, fields in _messages(parsed).items():
            for number, (name, kind, repeated, type_name, oneof, required) in sorted(fields.items()):
                out[f"{message}.{name}"] = " ".join(filter(None, [
                    "repeated" if repeated else "", "required" if required else "", type_name or kind,
                    f"= {number}", f"(oneof {oneof})" if oneof else ""]))
        return out
    if schema_type == "AVRO":
        from headrace.schemas.registry import avro_named_types

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


def field_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """``+ path: decl``, ``- path: decl`` and ``~ path: old → new`` lines, in path order."""
    lines = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            lines.append(f"+ {path}: {new[path]}")
        elif path not in new:
            lines.append(f"- {path}: {old[path]}")
        elif old[path] != new[path]:
            lines.append(f"~ {path}: {old[path]} → {new[path]}")
    return lines
