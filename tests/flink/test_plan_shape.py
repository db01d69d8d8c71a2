"""The hot path: Python runs once per record, however many outputs the job has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.jars import required_jars
from jobs.compiler import compile_job
from jobs.loader import parse_job
from jobs.plan import build_plan
from jobs.profiles import load_profile
from jobs.runner import compiled_plan_json, table_environment

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]


def test_embedded_job_validates_each_record_once() -> None:
    compiled = compile_job(build_plan(parse_job(ROOT / "jobs" / "page_activity.yaml")), load_profile("local"))
    t_env = table_environment(compiled, [])
    def optimized(sql: str) -> str:
        return t_env.explain_sql(sql).split("== Optimized Execution Plan ==")[1]

    # the validated stream is produced once (one Python call) and materialized ...
    assert optimized(compiled.checked_select).count("hr_validate(") == 1
    # ... and the three outputs read that one stream, calling no Python of their own
    outputs = optimized(compiled.collect_query)
    assert outputs.count("hr_validate(") == 0
    assert outputs.count("anonymous_datastream_source") == 1
    assert outputs.count("Reused(reference_id=[1])") == 2
    assert outputs.count("GroupWindowAggregate(") == 1


def test_service_job_validates_each_record_once_and_pins_uids(tmp_path: Path) -> None:
    profiles = tmp_path / "p.yaml"  # compiling needs no running services
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    postgres: {port: 9, database: d, user: u}\n")
    compiled = compile_job(build_plan(parse_job(ROOT / "jobs" / "page_activity.yaml")), load_profile("svc", profiles))
    t_env = table_environment(compiled, required_jars({"kafka", "postgres"}))
    nodes = json.loads(compiled_plan_json(t_env, compiled))["nodes"]
    assert sum("python-calc" in n["type"] for n in nodes) == 1
    uids = [n["configuration"]["table.exec.uid.format"] for n in nodes]
    assert len(set(uids)) == len(uids)
    assert "page-activity.source.table-source-scan_<transformation>" in uids
    assert "page-activity.validate.python-calc_<transformation>" in uids
    assert "page-activity.aggregate.group-window-aggregate_<transformation>" in uids
    assert "page-activity.sink.page_activity_1m.sink_<transformation>" in uids
    assert "page-activity.dead-letter.sink_<transformation>" in uids
    assert "page-activity.late.sink_<transformation>" in uids
