"""The JVM validator (hr_validate) against the Python one (jsonschema-rs), record by record.

Both engines must agree on which records are dead letters and on the fields they extract;
where a record has exactly one error, on its JSON Pointer too. The schema uses every keyword
of the JVM subset, and the records probe JSON edge cases (numbers, Unicode, duplicates, junk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from headrace.connectors.sqltext import literal
from headrace.jobs.sample import click_events
from headrace.operators import jvm
from headrace.operators.validate import RecordCheck
from headrace.schemas.jsonschema import jvm_unsupported
from headrace.schemas.types import FieldType

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "probe", "type": "object",
    "required": ["id", "ts", "kind"],
    "properties": {
        "id": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-zé😀]+$"},
        "ts": {"type": "integer", "minimum": 0, "format": "unix-ms"},
        "kind": {"enum": ["a", "b", 1]},
        "version": {"const": 2},
        "score": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5},
        "count": {"type": "integer", "maximum": 9007199254740993},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 3,
                 "uniqueItems": True},
        "meta": {"type": "object", "properties": {"k": {"type": "integer"}}, "additionalProperties": False,
                 "minProperties": 1, "maxProperties": 2},
    },
    "additionalProperties": {"type": "string"},
}
FIELDS = [("id", FieldType.STRING), ("ts", FieldType.INTEGER), ("score", FieldType.NUMBER),
          ("count", FieldType.INTEGER), ("flag", FieldType.BOOLEAN)]
OK = '"id": "ab", "ts": 5, "kind": "a"'
PAYLOADS = [
    "{" + OK + "}", "{" + OK + ', "version": 2, "score": 9.5, "count": 3, "flag": true, "tags": ["x"]}',
    "", " ", "null", "[]", "5", '"text"', "{", "{}" + "x", '{"id": "ab"} {}', "{" + OK + "} ",
    "NaN", '{"id": "ab", "ts": NaN, "kind": "a"}', "{" + OK + ', "score": 1e400}',
    '{"id": "ab", "kind": "a"}', '{"ts": 5, "kind": "a"}',
    '{"id": "a", "ts": 5, "kind": "a"}', '{"id": "abcdef", "ts": 5, "kind": "a"}',
    '{"id": "éé", "ts": 5, "kind": "a"}', '{"id": "😀😀😀😀😀", "ts": 5, "kind": "a"}',
    '{"id": "😀😀😀😀😀😀", "ts": 5, "kind": "a"}', '{"id": "AB", "ts": 5, "kind": "a"}',
    '{"id": "ab\\n", "ts": 5, "kind": "a"}', '{"id": 12, "ts": 5, "kind": "a"}',
    '{"id": "ab", "ts": 5.0, "kind": "a"}', '{"id": "ab", "ts": 5.5, "kind": "a"}',
    '{"id": "ab", "ts": 1e2, "kind": "a"}', '{"id": "ab", "ts": -1, "kind": "a"}',
    '{"id": "ab", "ts": "5", "kind": "a"}', '{"id": "ab", "ts": true, "kind": "a"}',
    '{"id": "ab", "ts": 18446744073709551616, "kind": "a"}', '{"id": "ab", "ts": 9223372036854775807, "kind": "a"}',
    '{"id": "ab", "ts": 5, "kind": 1.0}', '{"id": "ab", "ts": 5, "kind": "c"}', '{"id": "ab", "ts": 5, "kind": null}',
    "{" + OK + ', "version": 2.0}', "{" + OK + ', "version": "2"}',
    "{" + OK + ', "score": 0}', "{" + OK + ', "score": 10}', "{" + OK + ', "score": 0.25}',
    "{" + OK + ', "score": null}', "{" + OK + ', "score": 1}',
    "{" + OK + ', "count": 9007199254740993}', "{" + OK + ', "count": 9007199254740994}',
    "{" + OK + ', "flag": 1}', "{" + OK + ', "flag": false}',
    "{" + OK + ', "tags": []}', "{" + OK + ', "tags": ["a", "b", "c", "d"]}', "{" + OK + ', "tags": ["a", "a"]}',
    "{" + OK + ', "tags": ["a", ""]}', "{" + OK + ', "tags": "a"}',
    "{" + OK + ', "meta": {}}', "{" + OK + ', "meta": {"k": 1}}', "{" + OK + ', "meta": {"k": "1"}}',
    "{" + OK + ', "meta": {"j": 1}}', "{" + OK + ', "meta": {"k": 1, "j": 2, "l": 3}}',
    "{" + OK + ', "extra": "s"}', "{" + OK + ', "extra": 1}', "{" + OK + ', "a/b~c": 1}',
    '{"id": "ab", "ts": 5, "kind": "a", "ts": 6}', '{"id": "ab", "ts": "x", "kind": "a", "ts": 7}',
    '{"id": "ab", "ts": 5, "kind": "a", "tags": [[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]}',
    '\ufeff{"id": "ab", "ts": 5, "kind": "a"}', '{"id": "ab",, "ts": 5}', "{'id': 'ab'}",
]


def _jvm_results(payloads: list[str | None], spec: str) -> list[tuple[Any, ...]]:
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("pipeline.jars", jvm.build().resolve().as_uri())
    t_env.get_config().set("parallelism.default", "1")
    t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION hr_validate AS {literal(jvm.VALIDATE_CLASS)} LANGUAGE JAVA")
    rows = t_env.from_elements(list(enumerate(payloads)), DataTypes.ROW(
        [DataTypes.FIELD("i", DataTypes.INT()), DataTypes.FIELD("s", DataTypes.STRING())]))
    t_env.create_temporary_view("probe", rows)
    names = ["err_path", "err_msg", "event_ms"] + [name for name, _ in json.loads(spec)["fields"]]
    columns = ", ".join(f"v.`{name}`" for name in names)  # PyFlink cannot collect a nested ROW with nulls
    query = f"SELECT i, {columns} FROM (SELECT i, hr_validate(s, {literal(spec)}) AS v FROM probe)"
    with t_env.execute_sql(query).collect() as result:
        by_index = {row[0]: tuple(row[1:]) for row in result}
    return [by_index[i] for i in range(len(payloads))]


def _agree(schema: dict[str, Any], fields: list[tuple[str, FieldType]], event_time: str,
           payloads: list[str | None]) -> None:
    assert jvm_unsupported(schema) is None
    spec = json.dumps({"schema": schema, "event_time": event_time, "fields": [[n, t.value] for n, t in fields]})
    python = RecordCheck(schema, fields)
    reference = jsonschema.Draft202012Validator(schema)
    for payload, got in zip(payloads, _jvm_results(payloads, spec), strict=True):
        path, message, _event_ms, *values = got
        want_path, want_message, *want_values = python.check(payload)
        where = f"payload {payload!r}: JVM said {path} {message!r}, Python said {want_path} {want_message!r}"
        assert (message is None) == (want_message is None), where
        if message is None:
            assert values == want_values, where
            continue
        try:
            errors = list(reference.iter_errors(json.loads(payload or "")))
        except (ValueError, OverflowError):  # the stdlib reads NaN and 1e400, which both engines refuse
            errors = []
        if len(errors) == 1:
            assert path == want_path, where


@pytest.mark.parametrize("path", ["stream", "tree"])
def test_jvm_and_python_validators_agree_on_edge_cases(path: str) -> None:
    # the JVM reads a flat object schema's records as a token stream; a root keyword such as
    # minProperties needs the whole object, and sends every record down the tree path instead
    schema = SCHEMA if path == "stream" else {**SCHEMA, "minProperties": 1}
    _agree(schema, FIELDS, "ts", [*PAYLOADS, None])


def test_jvm_and_python_validators_agree_on_generated_clicks() -> None:
    schema = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
    fields = [("tenant_id", FieldType.STRING), ("page", FieldType.STRING), ("bytes", FieldType.INTEGER),
              ("latency_ms", FieldType.INTEGER), ("ts", FieldType.INTEGER)]
    payloads = [e.payload.decode() for e in click_events(3_000, seed=7)]
    _agree(schema, fields, "ts", payloads)


def test_jvm_validator_reads_event_time_from_invalid_records_too() -> None:
    spec = json.dumps({"schema": SCHEMA, "event_time": "ts", "fields": []})
    got = _jvm_results(['{"id": "x", "ts": 42, "kind": "zzz"}', '{"ts": 4.0}', '{"ts": "4"}', "junk"], spec)
    assert [row[1] is not None for row in got] == [True] * 4
    assert [row[2] for row in got] == [42, 4, None, None]


# a record schema as people write them: shared definitions, combinators, conditionals
COMBINED: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "id": {"type": "string", "pattern": "^[a-z]+$"},
        "money": {"type": "object", "required": ["amount"], "properties": {
            "amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR", "USD"]}}},
        "tree": {"type": "object", "properties": {"name": {"$ref": "#/$defs/id"},
                                                  "children": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}},
    },
    "required": ["id", "ts"],
    "properties": {
        "id": {"$ref": "#/$defs/id"},
        "ts": {"type": "integer", "minimum": 0},
        "kind": {"enum": ["order", "refund", "view"]},
        "price": {"$ref": "#/$defs/money"},
        "where": {"oneOf": [{"type": "string"}, {"type": "object", "required": ["lat", "lon"]}]},
        "tags": {"type": "array", "prefixItems": [{"const": "v1"}], "items": {"type": "string"},
                 "contains": {"pattern": "^x"}, "maxContains": 2},
        "tree": {"$ref": "#/$defs/tree"},
        "note": {"not": {"type": "null"}},
    },
    "patternProperties": {"^x-": {"type": "string"}},
    "propertyNames": {"maxLength": 8},
    "dependentRequired": {"price": ["kind"]},
    "allOf": [{"if": {"properties": {"kind": {"const": "refund"}}, "required": ["kind"]},
               "then": {"required": ["price"]}, "else": {"not": {"required": ["reason"]}}}],
    "anyOf": [{"required": ["kind"]}, {"required": ["tags"]}],
}
BASE = '"id": "ab", "ts": 5'
COMBINED_PAYLOADS = [
    "{" + BASE + ', "kind": "view"}', "{" + BASE + "}", "{" + BASE + ', "tags": ["v1", "xa"]}',
    "{" + BASE + ', "tags": ["v2", "xa"]}', "{" + BASE + ', "tags": ["v1", "a"]}',
    "{" + BASE + ', "tags": ["v1", "xa", "xb", "xc"]}', "{" + BASE + ', "tags": ["v1", "xa", 3]}',
    '{"id": "AB", "ts": 5, "kind": "view"}', "{" + BASE + ', "kind": "refund"}',
    "{" + BASE + ', "kind": "refund", "price": {"amount": 3}}', "{" + BASE + ', "price": {"amount": 3}}',
    "{" + BASE + ', "kind": "order", "price": {"amount": -1}}', "{" + BASE + ', "kind": "order", "price": {}}',
    "{" + BASE + ', "kind": "order", "price": {"amount": 1, "currency": "GBP"}}',
    "{" + BASE + ', "kind": "view", "reason": "r"}', "{" + BASE + ', "kind": "refund", "price": {"amount": 1}, '
                                                     '"reason": "r"}',
    "{" + BASE + ', "kind": "view", "where": "home"}', "{" + BASE + ', "kind": "view", "where": {"lat": 1}}',
    "{" + BASE + ', "kind": "view", "where": {"lat": 1, "lon": 2}}', "{" + BASE + ', "kind": "view", "where": 5}',
    "{" + BASE + ', "kind": "view", "x-a": "s"}', "{" + BASE + ', "kind": "view", "x-a": 1}',
    "{" + BASE + ', "kind": "view", "longer-name": 1}', "{" + BASE + ', "kind": "view", "note": null}',
    "{" + BASE + ', "kind": "view", "tree": {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}}',
    "{" + BASE + ', "kind": "view", "tree": {"name": "a", "children": [{"name": "b", "children": [{"name": "C"}]}]}}',
    "{" + BASE + ', "kind": "view", "tree": {"children": [{"children": [{"children": 1}]}]}}',
]


def test_jvm_and_python_validators_agree_on_refs_and_combinators() -> None:
    _agree(COMBINED, [("id", FieldType.STRING), ("kind", FieldType.STRING)], "ts", COMBINED_PAYLOADS)
    got = _jvm_results(COMBINED_PAYLOADS, json.dumps({"schema": COMBINED, "event_time": "ts", "fields": []}))
    valid = sum(row[1] is None for row in got)
    assert 5 <= valid <= len(got) - 15, [row[1] for row in got]  # both verdicts, for many reasons
