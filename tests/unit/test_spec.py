"""Spec parsing and planning: good specs load, bad ones get one line with file:line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.spec import spec_json_schema
from headrace.schemas.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "jobs" / "page_activity.yaml"
TEXT = EXAMPLE.read_text()


def error_for(old: str, new: str, *, plan: bool = False) -> str:
    assert old in TEXT, old
    text = TEXT.replace(old, new, 1)
    with pytest.raises(SpecError) as info:
        job = parse_job(EXAMPLE, text)
        if plan:
            build_plan(job)
    return str(info.value)


def line_of(fragment: str) -> int:
    return next(i for i, line in enumerate(TEXT.splitlines(), 1) if fragment in line)


def test_example_job_loads_and_plans() -> None:
    plan = build_plan(parse_job(EXAMPLE))
    assert plan.name == "page-activity"
    assert plan.spec.parallelism == 2
    assert [n for n, _ in plan.node("aggregate").group_by] == ["tenant_id", "page"]
    assert plan.node("aggregate").window.tumbling == 60_000
    assert plan.node("aggregate").allowed_lateness_ms == 30_000
    assert [m.name for m in plan.node("aggregate").measures] == ["events", "total_bytes", "avg_ms", "min_ms", "max_ms"]
    assert plan.node("aggregate").key_columns == ("tenant_id", "page", "window_start", "window_end")


def test_uids_derive_from_job_name_and_step_path() -> None:
    plan = build_plan(parse_job(EXAMPLE))
    assert plan.source_uid == "page-activity.source"
    assert plan.decoder.uid == "page-activity.validate"
    assert plan.node("aggregate").uid == "page-activity.aggregate"
    assert [s.uid for s in plan.sinks] == ["page-activity.sink.postgres.page_activity_1m"]
    assert build_plan(parse_job(EXAMPLE)) == plan  # the same spec gives the same uids every time


def test_unknown_key_names_line_and_suggests_the_right_one() -> None:
    message = error_for("window: {tumbling: 1m}", "windw: {tumbling: 1m}")
    assert message.startswith(f"{EXAMPLE}:{line_of('window: {tumbling')}: unknown key 'windw' in steps[1].aggregate")
    assert message.endswith("did you mean 'window'?")


def test_unknown_step_kind_is_refused_with_hint() -> None:
    message = error_for("- validate: {}", "- validat: {}")
    assert message == (f"{EXAMPLE}:{line_of('- validate')}: unknown step kind 'validat' in steps[0]; "
                       "did you mean 'validate'?")


def test_missing_key_is_reported_at_its_parent() -> None:
    message = error_for("  kafka: {topic: clicks, group: page-activity}\n", "")
    assert message.startswith(f"{EXAMPLE}:{line_of('source:')}: missing key 'kafka' in source")


def test_wrong_type_and_bad_duration() -> None:
    assert "parallelism: Input should be a valid integer" in error_for("parallelism: 2", "parallelism: two")
    message = error_for("allowed_lateness: 30s", "allowed_lateness: 30")
    assert message.startswith(f"{EXAMPLE}:{line_of('allowed_lateness')}: steps[1].aggregate.allowed_lateness")
    assert "with a unit" in message


def test_unknown_measure_function_points_at_the_measure() -> None:
    message = error_for("avg_ms: avg(latency_ms)", "avg_ms: avgg(latency_ms)")
    assert message == (f"{EXAMPLE}:{line_of('avg_ms')}: steps[1].aggregate.measures.avg_ms: "
                       "unknown measure function 'avgg'; did you mean 'avg'?")


def test_two_window_kinds_are_refused() -> None:
    message = error_for("window: {tumbling: 1m}", "window: {tumbling: 1m, session: {gap: 1m}}")
    assert "a window is exactly one of 'tumbling', 'sliding' or 'session'" in message


def test_missing_schema_file_is_an_undefined_reference() -> None:
    message = error_for("schemas/click.schema.json", "schemas/clck.schema.json", plan=True)
    assert message.startswith(f"{EXAMPLE}:{line_of('format:')}: schema file 'schemas/clck.schema.json' not found")


def test_group_by_field_missing_from_schema_gets_a_suggestion() -> None:
    message = error_for("group_by: [tenant_id, page]", "group_by: [tenant, page]", plan=True)
    assert message == (f"{EXAMPLE}:{line_of('group_by')}: group_by field 'tenant' is not a scalar property "
                       "of click.schema.json; did you mean 'tenant_id'?")


def test_sum_of_a_string_field_is_refused() -> None:
    message = error_for("total_bytes: sum(bytes)", "total_bytes: sum(page)", plan=True)
    assert "measure field 'page' is a string, not a number" in message


def test_session_window_with_allowed_lateness_is_refused() -> None:
    message = error_for("window: {tumbling: 1m}", "window: {session: {gap: 5m}}", plan=True)
    assert message == (f"{EXAMPLE}:{line_of('allowed_lateness')}: session windows do not support "
                       "allowed_lateness yet; set allowed_lateness: 0s, or raise max_out_of_orderness instead")


def test_duplicate_step_ids_are_refused() -> None:
    message = error_for("- validate: {}", "- validate: {id: same}\n  - validate: {id: same}", plan=True)
    assert "duplicate step id 'same' (steps[0] and steps[1])" in message


def test_sink_from_an_undefined_step_is_refused() -> None:
    message = error_for("postgres: {table: page_activity_1m}",
                        "postgres: {table: page_activity_1m, from: agregate}", plan=True)
    assert "sink reads from step 'agregate', which does not exist; did you mean 'aggregate'?" in message


def test_invalid_yaml_names_the_line() -> None:
    message = error_for("dead_letter: {kafka: {topic: clicks.dlq}}", "dead_letter: [\n")
    assert message.startswith(f"{EXAMPLE}:") and "invalid YAML" in message


def test_spec_json_schema_is_exported_for_editors() -> None:
    schema = spec_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"job", "source", "steps", "sinks", "dead_letter"}
    assert schema["additionalProperties"] is False


def _with_schema(tmp_path: Path, change: dict[str, object], validate: str = "{}") -> Path:
    """The example job over a copy of the click schema with ``change`` merged into it."""
    import json

    schema = json.loads((ROOT / "schemas" / "click.schema.json").read_text()) | change
    (tmp_path / "click.json").write_text(json.dumps(schema))
    job = tmp_path / "job.yaml"
    job.write_text(TEXT.replace("schemas/click.schema.json", str(tmp_path / "click.json"))
                   .replace("- validate: {}", f"- validate: {validate}"))
    return job


def test_validate_runs_in_the_jvm_when_the_schema_is_in_its_subset() -> None:
    plan = build_plan(parse_job(EXAMPLE))
    assert plan.decoder.engine == "jvm"


def test_schema_outside_the_jvm_subset_falls_back_to_python(tmp_path: Path) -> None:
    plan = build_plan(parse_job(_with_schema(tmp_path, {"unevaluatedProperties": False})))
    assert plan.decoder.engine == "python"
    assert "uses 'unevaluatedProperties' (at #)" in plan.decoder.engine_note
    either = {"anyOf": [{"required": ["bytes"]}, {"required": ["email"]}]}
    combined = build_plan(parse_job(_with_schema(tmp_path, either)))
    assert combined.decoder.engine == "jvm"
    pinned = build_plan(parse_job(_with_schema(tmp_path, {}, "{engine: python}")))
    assert pinned.decoder.engine == "python"


def test_engine_jvm_with_a_schema_outside_its_subset_is_refused_at_its_line(tmp_path: Path) -> None:
    job = _with_schema(tmp_path, {"$defs": {"x": {"$dynamicRef": "#x"}}}, "{engine: jvm}")
    with pytest.raises(SpecError) as info:
        build_plan(parse_job(job))
    message = str(info.value)
    line = next(i for i, text in enumerate(job.read_text().splitlines(), 1) if "engine: jvm" in text)
    assert message.startswith(f"{job}:{line}: engine 'jvm' cannot check click.json: it uses '$dynamicRef'")
    assert "use engine: auto (or python)" in message


def test_jvm_subset_check_walks_nested_schemas_and_patterns() -> None:
    from headrace.schemas.jsonschema import jvm_unsupported

    assert jvm_unsupported({"type": "object", "properties": {"a": {"items": {"unevaluatedItems": {}}}}}) == (
        "it uses 'unevaluatedItems' (at #/properties/a/items)")
    assert jvm_unsupported({"allOf": [{"if": {"$ref": "#/$defs/x"}}], "$defs": {"x": {"not": {}}}}) is None
    assert jvm_unsupported({"$ref": "other.json#/a"}) == (
        "its $ref 'other.json#/a' (at #) is not a JSON Pointer into the document")
    assert jvm_unsupported({"$ref": "#/enum/0", "enum": [{}]}) == (
        "its $ref '#/enum/0' (at #) does not point at a schema of the document")
    assert jvm_unsupported({"patternProperties": {"\\p{L}": {}}}) is not None
    assert jvm_unsupported({"properties": {"a": {"$id": "http://x/a"}}}) == "it sets a nested '$id' (at #/properties/a)"
    assert jvm_unsupported({"properties": {"a": {"pattern": "\\p{L}+"}}}) is not None
    assert jvm_unsupported({"$schema": "http://json-schema.org/draft-07/schema#"}) is not None
    assert jvm_unsupported({"additionalProperties": False, "properties": {"a": True}}) is None


# -- binary formats -----------------------------------------------------------------------------

FORMAT = "format: {json: schemas/click.schema.json}"


def test_protobuf_needs_its_message_at_the_format_line() -> None:
    message = error_for(FORMAT, "format: {protobuf: schemas/click.proto}")
    assert message.startswith(f"{EXAMPLE}:{line_of(FORMAT)}:") and "needs message:" in message


def test_two_formats_are_refused() -> None:
    message = error_for(FORMAT, "format: {json: schemas/click.schema.json, avro: schemas/click.avsc}")
    assert "name exactly one format" in message and "(got json and avro)" in message


def test_a_message_the_proto_does_not_define_gets_a_suggestion() -> None:
    message = error_for(FORMAT, "format: {protobuf: schemas/click.proto, message: Clik}", plan=True)
    assert "defines no message 'Clik'; did you mean 'headrace.examples.Click'?" in message
    assert f":{line_of(FORMAT)}:" in message


def test_a_proto_that_protoc_refuses_is_one_line(tmp_path: Path) -> None:
    proto = tmp_path / "bad.proto"
    proto.write_text('syntax = "proto3";\nmessage Click {\n  strin name = 1;\n}\n')
    message = error_for(FORMAT, f"format: {{protobuf: {proto}, message: Click}}", plan=True)
    assert "protoc refused bad.proto: bad.proto:3:3:" in message and "\n" not in message.strip()


def test_binary_formats_plan_their_fields_and_event_time() -> None:
    avro = build_plan(parse_job(EXAMPLE, TEXT.replace(FORMAT, "format: {avro: schemas/click.avsc, wire: confluent}")))
    assert avro.decoder.decoding is not None and avro.decoder.decoding.subject == "clicks-value"
    proto = build_plan(parse_job(EXAMPLE, TEXT.replace(FORMAT, "format: {protobuf: schemas/click.proto, "
                                                                "message: headrace.examples.Click}")))
    assert dict(proto.decoder.output.fields)["sent_at"].value == "integer"
    assert "tags" not in dict(proto.decoder.output.fields)  # repeated: not addressable


def test_a_timestamp_field_can_be_the_event_time_of_a_protobuf_source() -> None:
    text = TEXT.replace(FORMAT, "format: {protobuf: schemas/click.proto, message: headrace.examples.Click}")
    plan = build_plan(parse_job(EXAMPLE, text.replace("event_time: {field: ts", "event_time: {field: sent_at")))
    assert plan.decoder.event_time_field == "sent_at"
    with pytest.raises(SpecError) as refused:
        build_plan(parse_job(EXAMPLE, text.replace("event_time: {field: ts", "event_time: {field: email")))
    assert "event-time field 'email' must be a non-null epoch-milliseconds integer" in str(refused.value)
