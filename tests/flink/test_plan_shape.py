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
        # decoded in the source: no function call, no Python
        assert "Python" not in checked and "hr_validate(" not in checked
    # every output reads one scan of the source (or, with Python, the validated stream
    # materialized once) and calls no decoder; the late judgement is the source's column, so no
    # keyed aggregate stands between the source and the window
    outputs = optimized(compiled.collect_query)
    assert outputs.count("hr_validate(") == 0
    if engine == "python":
        assert outputs.count("anonymous_datastream_source") == 1
    else:
        assert outputs.count("TableSourceScan(") == 1
    assert "OverAggregate" not in outputs
    # the window: a window TVF aggregated in two phases (local in the source task, global after
    # the one exchange), the records behind their partition's watermark beside it, one by one,
    # and the two merged per window in keyed state (MergeWindows.java)
    assert "GroupWindowAggregate(" not in outputs
    assert outputs.count("LocalWindowAggregate(") == 1 and outputs.count("GlobalWindowAggregate(") == 1
    assert outputs.count("hr_merge_windows(") == 1


@pytest.mark.parametrize("engine", ["jvm", "python"])
def test_service_job_validates_in_one_operator_and_pins_uids(tmp_path: Path, engine: str) -> None:
    profiles = tmp_path / "p.yaml"  # compiling needs no running services
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    postgres: {port: 9, database: d, user: u}\n")
    compiled = compile_job(build_plan(parse_job(example_job_on(tmp_path, engine))), load_profile("svc", profiles))
    t_env = table_environment(compiled, required_jars({"kafka", "postgres"}))
    nodes = json.loads(compiled_plan_json(t_env, compiled))["nodes"]
    calling = [n for n in nodes if "hr_validate(" in json.dumps(n) and "source-scan" not in n["type"]]
    if engine == "python":
        assert len(calling) == 1 and "python-calc" in calling[0]["type"]  # one validator for all outputs
    else:
        assert calling == []  # decoded in the source
    sources = [n for n in nodes if "source-scan" in n["type"]]
    # one scan, of Headrace's source (the plan names the table, its DDL the connector)
    assert len(sources) == 1 and "hr_source" in json.dumps(sources[0]) and "_max_seen" in json.dumps(sources[0])
    assert any("'connector' = 'headrace-source'" in s for s in compiled.statements if "hr_source" in s)
    assert not [n for n in nodes if "over-aggregate" in n["type"]]
    uids = [n["configuration"]["table.exec.uid.format"] for n in nodes]
    assert len(set(uids)) == len(uids)
    kind = "python-calc" if engine == "python" else "calc"
    # the source's operators (its reader and the judging operator with the per-partition maximum,
    # which is state) take their uids from the scan's
    assert "page-activity.source.table-source-scan_<transformation>" in uids
    assert f"page-activity.validate.{kind}_<transformation>" in uids
    assert "page-activity.aggregate.local-window-aggregate_<transformation>" in uids
    assert "page-activity.aggregate.global-window-aggregate_<transformation>" in uids
    assert "page-activity.aggregate.process-table-function_<transformation>" in uids
    assert "page-activity.sink.postgres.page_activity_1m.sink_<transformation>" in uids
    assert "page-activity.dead-letter.sink_<transformation>" in uids
    assert "page-activity.late.sink_<transformation>" in uids


@pytest.mark.parametrize("on_miss", ["keep", "dead_letter"])
def test_a_lookup_read_ahead_is_called_in_one_calc_with_its_fields(tmp_path: Path, on_miss: str) -> None:
    """The JVM enrich engine reading keys ahead (EnrichGet.java): one operator calls the lookup,
    for every output of the step (on time, late, dead letters), and with ``on_miss: keep`` it is the
    calc that also takes the looked-up fields, so that the step adds no calc of its own that would
    copy every column of the record again."""
    profiles = tmp_path / "p.yaml"  # compiling needs no running services
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    postgres: {port: 9, database: d, user: u}\n")
    job = example_job_on(tmp_path, "jvm")
    job.write_text(job.read_text().replace(
        "  - aggregate:\n", "  - enrich:\n      key: user_id\n      fields: {country: string, plan: string}\n"
        "      source: {postgres: {table: users, key_column: id}}\n"
        f"      on_miss: {on_miss}\n      engine: jvm\n  - aggregate:\n")
        .replace("        events: count()\n", "        events: count()\n        planned: count(plan)\n"
                 "        countries: count(country)\n"))
    compiled = compile_job(build_plan(parse_job(job)), load_profile("svc", profiles))
    assert any("EnrichPrefetch" in s for s in compiled.statements if "hr_source" in s)  # keys read ahead
    t_env = table_environment(compiled, required_jars({"kafka", "postgres"}))
    statements = t_env.create_statement_set()
    for insert in compiled.inserts:
        statements.add_insert_sql(insert)
    plan = statements.explain().split("== Optimized Execution Plan ==")[1]
    calling = [line for line in plan.splitlines() if "hr_enrich_enrich(" in line]
    assert len(calling) == 1, calling
    if on_miss == "keep":
        assert ".country AS country" in calling[0] and ".plan AS plan" in calling[0], calling
