"""Planning the mask step: rules per field, refused at their line when they cannot apply."""

from __future__ import annotations

from pathlib import Path

from headrace.schemas.types import FieldType

from tests.unit.test_graph import HEAD, TAIL, error_of, plan_of

JOB = HEAD + """steps:
  - validate: {}
  - mask:
      fields: {user_id: hash, email: email_domain, tenant_id: {keep_last: 2}}
  - aggregate: {group_by: [tenant_id, user_id], window: {tumbling: 1m}, measures: {events: count()}}
sinks:
  - postgres: {table: t}
""" + TAIL


def test_mask_sits_between_validate_and_aggregate_and_yields_text(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, JOB)
    mask = plan.node("mask")
    assert plan.inputs == {"validate": None, "mask": "validate", "aggregate": "mask", "sink.postgres.t": "aggregate"}
    assert mask.rules == {"user_id": "hash", "email": "email_domain", "tenant_id": "keep_last:2"}
    assert mask.output.field_type("user_id") is FieldType.STRING
    assert "mask user_id: hash, email: email_domain, tenant_id: keep_last 2" in mask.explain()
    assert ("email", FieldType.STRING) in plan.fields  # decoded once, to be masked


def test_masking_the_event_time_is_refused(tmp_path: Path) -> None:
    message, at = error_of(tmp_path, JOB.replace("user_id: hash,", "ts: hash,"))
    assert "the event-time field 'ts' cannot be masked" in message
    assert at == next(i for i, row in enumerate(JOB.splitlines(), 1) if "fields: {user_id" in row)


def test_a_text_rule_on_a_number_and_an_unknown_field_are_refused(tmp_path: Path) -> None:
    message, _ = error_of(tmp_path, JOB.replace("email: email_domain", "latency_ms: truncate_ip"))
    assert "'truncate_ip' masks text, and 'latency_ms' is a integer; use hash or redact" in message
    message, _ = error_of(tmp_path, JOB.replace("email: email_domain", "emial: email_domain"))
    assert "masked field 'emial' is not a scalar property of click.schema.json; did you mean 'email'?" in message


def test_an_unknown_rule_is_refused_by_the_spec(tmp_path: Path) -> None:
    message, _ = error_of(tmp_path, JOB.replace("email: email_domain", "email: scramble"))
    assert "steps[1].mask.fields.email" in message
