"""The hot path: each record is validated once, however many outputs the job has, and the
validate step runs in the JVM unless the schema needs the Python validator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from headrace.connectors.jars import required_jars
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import compiled_plan_json, table_environment

from tests.jobfiles import example_job_on

pytestmark = pytest.mark.flink


@pytest.mark.parametrize("engine", ["jvm", "python"])
def test_embedded_job_validates_in_one_operator(tmp_path: Path, engine: str) -> None:
    compiled = compile_job(build_plan(parse_job(example_job_on(tmp_path, engine))), load_profile("local"))
    t_env = table_environment(compiled, [])

    def optimized(sql: str) -> str:
        return t_env.explain_sql(sql).split("== Optimized Execution Plan ==")[1]

    checked = optimized(compiled.checked_select)
    if engine == "python":
        assert checked.count("PythonCalc(") == 1 and checked.count("hr_validate(") == 1
    else:
        # no Python at all; the calls that read the result's fields share one parse (a cache)
        assert "Python" not in checked and "hr_validate(" in checked
    # the outputs read the validated stream, which is materialized once, and call nothing; the
    # late judgement (one keyed OVER aggregate) is shared by the late output, the sink check and
    # the window
    outputs = optimized(compiled.collect_query)
    assert outputs.count("hr_validate(") == 0
    assert outputs.count("anonymous_datastream_source") == 1
    assert outputs.count("OverAggregate(partitionBy=[_partition]") == 1
    assert outputs.count("GroupWindowAggregate(") == 1


@pytest.mark.parametrize("engine", ["jvm", "python"])
def test_service_job_validates_in_one_operator_and_pins_uids(tmp_path: Path, engine: str) -> None:
    profiles = tmp_path / "p.yaml"  # compiling needs no running services
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    postgres: {port: 9, database: d, user: u}\n")
    compiled = compile_job(build_plan(parse_job(example_job_on(tmp_path, engine))), load_profile("svc", profiles))
    t_env = table_environment(compiled, required_jars({"kafka", "postgres"}))
    nodes = json.loads(compiled_plan_json(t_env, compiled))["nodes"]
    calling = [n for n in nodes if "hr_validate(" in json.dumps(n) and "source-scan" not in n["type"]]
    assert len(calling) == 1  # one operator validates, for all three outputs
    assert ("python-calc" in calling[0]["type"]) == (engine == "python")
    uids = [n["configuration"]["table.exec.uid.format"] for n in nodes]
    assert len(set(uids)) == len(uids)
    kind = "python-calc" if engine == "python" else "calc"
    assert "page-activity.source.table-source-scan_<transformation>" in uids
    assert f"page-activity.validate.{kind}_<transformation>" in uids
    assert "page-activity.aggregate.group-window-aggregate_<transformation>" in uids
    # the late judgement (one per-partition maximum, shared by every aggregate) belongs to the decoding step
    assert "page-activity.validate.over-aggregate_<transformation>" in uids
    assert "page-activity.sink.postgres.page_activity_1m.sink_<transformation>" in uids
    assert "page-activity.dead-letter.sink_<transformation>" in uids
    assert "page-activity.late.sink_<transformation>" in uids
