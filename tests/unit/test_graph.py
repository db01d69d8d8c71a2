"""Job graphs: steps read the previous step or 'from:', several aggregates and sinks per job,
and every wiring mistake refused at its line with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import Plan, build_plan
from headrace.jobs.registry import SINKS, STEPS
from headrace.jobs.spec import spec_json_schema
from headrace.schemas.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schemas" / "click.schema.json"

HEAD = f"""job: graph
source:
  kafka: {{topic: clicks}}
  format: {{json: {SCHEMA}}}
  event_time: {{field: ts, max_out_of_orderness: 5s}}
"""
TAIL = """dead_letter: {kafka: {topic: clicks.dlq}}
"""
TWO_AGGREGATES = HEAD + """steps:
  - validate: {}
  - aggregate:
      id: per_minute
      group_by: [tenant_id, page]
      window: {tumbling: 1m}
      measures: {events: count()}
  - aggregate:
      id: per_hour
      from: validate
      group_by: [tenant_id]
      window: {sliding: {size: 1h, slide: 10m}}
      measures: {events: count(), max_ms: max(latency_ms)}
sinks:
  - postgres: {table: per_minute_a, from: per_minute}
  - postgres: {table: per_minute_b, from: per_minute}
  - postgres: {table: per_hour}
""" + TAIL


def plan_of(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return build_plan(parse_job(path))


def error_of(tmp_path: Path, text: str) -> tuple[str, int]:
    """The one-line error and the line number it names."""
    with pytest.raises(SpecError) as info:
        plan_of(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "job.yaml") + ":"), message
    return message, int(message.split(":")[1])


def line(text: str, fragment: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if fragment in row)


def test_two_aggregates_over_one_stream_with_several_sinks_each(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, TWO_AGGREGATES)
    assert [s.id for s in plan.steps] == ["validate", "per_minute", "per_hour"]
    assert plan.inputs["per_minute"] == "validate" and plan.inputs["per_hour"] == "validate"
    assert {s.view.name: plan.inputs[s.id] for s in plan.sinks} == {
        "per_minute_a": "per_minute", "per_minute_b": "per_minute", "per_hour": "per_hour"}  # default: last aggregate
    # the decoder extracts what any step reads, once
    assert [n for n, _ in plan.fields] == ["tenant_id", "page", "latency_ms"]
    assert [s.uid for s in plan.sinks] == ["graph.sink.postgres.per_minute_a", "graph.sink.postgres.per_minute_b",
                                        "graph.sink.postgres.per_hour"]
    assert plan.sinks[2].view.key_names == ("tenant_id", "window_start", "window_end")
    assert [n for n, _ in plan.sinks[2].view.measures] == ["events", "max_ms"]


def test_a_step_reading_a_missing_step_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    text = TWO_AGGREGATES.replace("from: validate", "from: validat")
    message, at = error_of(tmp_path, text)
    assert "step 'per_hour' reads from step 'validat', which does not exist; did you mean 'validate'?" in message
    assert at == line(text, "from: validat")


def test_a_sink_reading_a_missing_step_is_refused(tmp_path: Path) -> None:
    text = TWO_AGGREGATES.replace("from: per_minute}\n  - postgres: {table: per_minute_b",
                                  "from: per_minut}\n  - postgres: {table: per_minute_b")
    message, at = error_of(tmp_path, text)
    assert "sink reads from step 'per_minut', which does not exist; did you mean 'per_minute'?" in message
    assert at == line(text, "per_minut}")


def test_a_cycle_is_refused_at_its_line(tmp_path: Path) -> None:
    text = HEAD + """steps:
  - validate: {}
  - aggregate: {id: a, from: b, group_by: [page], window: {tumbling: 1m}, measures: {n: count()}}
  - aggregate: {id: b, from: a, group_by: [page], window: {tumbling: 1m}, measures: {n: count()}}
sinks:
  - postgres: {table: t}
""" + TAIL
    message, at = error_of(tmp_path, text)
    assert "steps read each other in a cycle: a → b → a" in message
    assert "every chain of 'from' must lead back to the first step" in message
    assert at == line(text, "id: a,")


def test_a_duplicate_step_id_is_refused_at_the_second(tmp_path: Path) -> None:
    text = TWO_AGGREGATES.replace("id: per_hour", "id: per_minute")
    message, at = error_of(tmp_path, text)
    assert "duplicate step id 'per_minute' (steps[1] and steps[2])" in message
    assert at == line(text, "from: validate") - 2


def test_an_aggregate_no_sink_stores_is_refused(tmp_path: Path) -> None:
    text = TWO_AGGREGATES.replace("  - postgres: {table: per_hour}\n", "")
    message, at = error_of(tmp_path, text)
    assert "the rows of aggregate step 'per_hour' are stored by no sink" in message
    assert "add a sink with 'from: per_hour'" in message


def test_a_sink_cannot_store_records_and_a_step_cannot_read_a_view(tmp_path: Path) -> None:
    message, _ = error_of(tmp_path, TWO_AGGREGATES.replace("{table: per_hour}", "{table: per_hour, from: validate}"))
    assert "sink reads from step 'validate', but only an aggregate step's rows can be stored" in message
    # an aggregate reading an aggregate is a roll-up (tests/flink/test_rollup.py), of tumbling windows
    message, line = error_of(tmp_path, TWO_AGGREGATES.replace("from: validate", "from: per_minute"))
    assert "a roll-up of step 'per_minute' needs tumbling windows a whole number of its windows" in message
    assert line == 17  # its window


def test_two_sinks_writing_one_table_are_refused(tmp_path: Path) -> None:
    message, _ = error_of(tmp_path, TWO_AGGREGATES.replace("per_minute_b", "per_minute_a"))
    assert "two sinks write the same place ('sink.postgres.per_minute_a')" in message


def test_every_registered_kind_is_in_the_spec_schema() -> None:
    schema = str(spec_json_schema())
    for name in (*STEPS, *SINKS):
        assert f"'{name}'" in schema


def test_explain_draws_the_graph_with_uids(tmp_path: Path) -> None:
    from headrace.jobs.cli import explain_tree
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(explain_tree(plan_of(tmp_path, TWO_AGGREGATES)))
    lines = console.export_text().splitlines()
    # each sink hangs under the aggregate it stores, each aggregate under validate
    minute = next(i for i, row in enumerate(lines) if "step per_minute (aggregate): tumbling 1m" in row)
    hour = next(i for i, row in enumerate(lines) if "step per_hour (aggregate): sliding 1h every 10m" in row)
    assert "graph.per_minute.*" in lines[minute] and "graph.per_hour.*" in lines[hour]
    assert "table 'per_minute_a'" in lines[minute + 1] and "table 'per_minute_b'" in lines[minute + 2]
    assert "table 'per_hour'" in lines[hour + 1] and "graph.sink.postgres.per_hour.*" in lines[hour + 1]
    indent = [len(row) - len(row.lstrip("│ ├└─")) for row in (lines[minute], lines[minute + 1])]
    assert indent[1] > indent[0]
