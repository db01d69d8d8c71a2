"""Compatibility rules of the registry for JSON Schema and Protobuf, each change named, and each
verdict checked against an independent judge: for JSON Schema, jsonschema-rs validating records
under both versions (a change said to break has a record of the writer the reader refuses; one said
to be safe has none among the witnesses); for Protobuf, the protobuf runtime reading bytes written
with one version through the other."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from headrace.jobs.registry import FORMATS
from headrace.operators.protobuf import proto_file, protobuf_problems
from headrace.schemas.jsonschema import json_schema_problems
from headrace.schemas.registry import Incompatible, SchemaRegistry

ROOT = Path(__file__).resolve().parents[2]
CLICK = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
RECORD = {"tenant_id": "t", "user_id": "u", "page": "/p", "ts": 1, "latency_ms": 5}


def changed(**edits: Any) -> dict[str, Any]:
    schema = copy.deepcopy(CLICK)
    for key, value in edits.items():
        if key.startswith("prop_"):
            name = key[5:]
            if value is None:
                schema["properties"].pop(name)
            else:
                schema["properties"][name] = value
        elif value is None:
            schema.pop(key, None)
        else:
            schema[key] = value
    return schema


OPEN = changed(additionalProperties=None)
#: (writer, reader, the reason expected or None, a record valid under the writer)
JSON_CASES = [
    (CLICK, changed(prop_plan={"type": "string"}), None, RECORD),  # closed writer: no 'plan' in its records
    (changed(prop_plan={"type": "string"}), CLICK, "property 'plan' removed from a closed content model",
     {**RECORD, "plan": "pro"}),
    (CLICK, changed(required=[*CLICK["required"], "bytes"]), "property 'bytes' added as required", RECORD),
    (CLICK, changed(prop_ts={"type": "integer", "minimum": 10}), "minimum at /ts raised to 10 from 0", RECORD),
    (CLICK, changed(prop_page={"type": "string"}), None, RECORD),  # a pattern dropped widens
    (CLICK, changed(prop_tenant_id={"type": "string", "maxLength": 8}),
     "maxLength at /tenant_id lowered to 8 from 64", {**RECORD, "tenant_id": "t" * 20}),
    (changed(prop_bytes={"type": ["integer", "null"]}), CLICK,
     "type at /bytes narrowed from [integer, null] to [integer]", {**RECORD, "bytes": None}),
    (changed(prop_ts={"type": "number"}), CLICK, "type at /ts narrowed from [number] to [integer]",
     {**RECORD, "ts": 1.5}),
    (CLICK, changed(prop_ts={"type": "number", "minimum": 0}), None, RECORD),  # integer widened to number
    (OPEN, CLICK, "content model closed (additionalProperties: false)", {**RECORD, "x": 1}),
    (OPEN, changed(additionalProperties=None, prop_plan={"type": "string"}),
     "property 'plan' added to an open content model (a record may hold any value under it)", {**RECORD, "plan": 3}),
    (changed(prop_email={"enum": ["a", "b"]}), changed(prop_email={"enum": ["a"]}),
     "enum at /email narrowed: ['b'] no longer allowed", {**RECORD, "email": "b"}),
    (changed(prop_email={"enum": ["a"]}), changed(prop_email={"enum": ["a", "b"]}), None, {**RECORD, "email": "a"}),
]


@pytest.mark.parametrize(("writer", "reader", "expected", "record"), JSON_CASES)
def test_json_schema_changes_are_named_and_agree_with_a_validator(
        writer: dict[str, Any], reader: dict[str, Any], expected: str | None, record: dict[str, Any]) -> None:
    problems = json_schema_problems(writer, reader)
    assert jsonschema_rs.validator_for(writer).is_valid(record)
    if expected is None:
        assert problems == []
        assert jsonschema_rs.validator_for(reader).is_valid(record)
    else:
        assert expected in problems
        assert not jsonschema_rs.validator_for(reader).is_valid(record)  # the witness: a real breaking record


def test_json_schema_refs_defs_recursion_and_combinators() -> None:
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"}
    narrowed = copy.deepcopy(tree)
    narrowed["$defs"]["node"]["properties"]["name"] = {"type": "string", "maxLength": 3}
    assert json_schema_problems(tree, tree) == []
    assert json_schema_problems(tree, narrowed) == ["maxLength at /name lowered to 3"]
    either = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert json_schema_problems({"type": "string"}, either) == []
    assert json_schema_problems(either, {"type": "string"}) == ["type narrowed from [integer] to [string]"]
    merged = {"allOf": [{"properties": {"a": {"type": "string"}}}, {"required": ["a"]}]}
    assert json_schema_problems({"properties": {"a": {"type": "string"}}}, merged) == ["property 'a' added as required"]


def test_forward_wording_names_the_removed_required_property() -> None:
    old, new = CLICK, changed(required=["tenant_id", "user_id", "page", "ts"])  # latency_ms no longer required
    assert json_schema_problems(new, old, reader_is_old=True) == ["required property 'latency_ms' removed"]


V1 = """syntax = "proto3";
package shop;
message Click { string page = 1; int64 ts = 2; oneof who { string user = 3; } string tenant = 4; }
message Other { int32 x = 1; }
"""


def proto(text: str) -> Any:
    return proto_file(text)


PROTO_CASES = [
    (V1.replace("string tenant = 4;", "string tenant = 4; int32 plan = 5;"), []),  # a field added
    (V1.replace("string tenant = 4;", ""), []),                                  # a field removed
    (V1.replace("int64 ts = 2", "int32 ts = 2"), []),                             # varint family
    (V1.replace("int64 ts = 2", "double ts = 2"),
     ["field 'Click.ts' (2) changed type from int64 to double (wire type varint to 64-bit)"]),
    (V1.replace("int64 ts = 2", "sint64 ts = 2"),
     ["field 'Click.ts' (2) changed type from int64 to sint64 (the same wire type, read as another kind)"]),
    (V1.replace("string tenant = 4", "string tenant = 6"), ["field 'Click.tenant' number changed from 4 to 6"]),
    (V1.replace("int64 ts = 2", "repeated int64 ts = 2"), ["field 'Click.ts' (2) changed from singular to repeated"]),
    (V1.replace("message Other { int32 x = 1; }", ""), ["message 'shop.Other' removed"]),
    (V1.replace("string user = 3; } string tenant = 4;", "string user = 3; string tenant = 4; }"),
     ["field 'Click.tenant' (4) moved into oneof 'who'"]),
]


@pytest.mark.parametrize(("new", "expected"), PROTO_CASES)
def test_protobuf_changes_are_named(new: str, expected: list[str]) -> None:
    assert protobuf_problems(proto(V1), proto(new)) == expected


def _message_class(text: str, name: str) -> Any:
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto(text))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def test_protobuf_verdicts_agree_with_the_runtime() -> None:
    """Safe changes: v1 bytes read through v2 keep every shared field's value; a changed wire type
    loses it (the runtime keeps it as an unknown field)."""
    v1 = _message_class(V1, "shop.Click")
    written = v1(page="/a", ts=1234, tenant="t").SerializeToString()
    for new, _ in PROTO_CASES[:3]:
        read = _message_class(new, "shop.Click").FromString(written)
        assert read.page == "/a" and read.ts == 1234
    broken = _message_class(PROTO_CASES[3][0], "shop.Click").FromString(written)
    assert broken.ts != 1234


def test_the_registry_applies_the_rules_per_mode() -> None:
    registry = SchemaRegistry(":memory:", formats=FORMATS)
    registry.register("c-value", json.dumps(CLICK), "JSON")
    with pytest.raises(Incompatible, match=r"c-value v2: property 'bytes' added as required — breaks BACKWARD "
                                           r"\(readers of v2 cannot read v1 records\)"):
        registry.register("c-value", json.dumps(changed(required=[*CLICK["required"], "bytes"])), "JSON")
    registry.set_compatibility("FORWARD", "c-value")
    with pytest.raises(Incompatible, match=r"property 'plan' added, and the reader's content model is closed — "
                                           r"breaks FORWARD \(readers of v1 cannot read v2 records\)"):
        registry.register("c-value", json.dumps(changed(prop_plan={"type": "string"})), "JSON")
    assert registry.register("c-value", json.dumps(changed(prop_bytes=None)), "JSON").version == 2
    registry.register("p-value", V1, "PROTOBUF")
    registry.set_compatibility("FULL_TRANSITIVE", "p-value")
    assert registry.register("p-value", PROTO_CASES[0][0], "PROTOBUF").version == 2
    with pytest.raises(Incompatible, match=r"p-value v3: field 'Click.ts' \(2\) changed type from int64 to double"):
        registry.register("p-value", PROTO_CASES[3][0], "PROTOBUF")
    with pytest.raises(Incompatible, match="schema type changed from PROTOBUF to AVRO"):
        registry.register("p-value", '"string"', "AVRO")
