"""A job started again loads the plan it kept (jobs/plancache.py), with real Kafka, PostgreSQL and Flink.

Three starts of one job over the same topic: the first plans and keeps the plan, the second loads it
without planning, the third finds the kept plan damaged, says so in one line, plans again and keeps
the new plan. Each start's view equals the reference computed here. The kept plan holds no secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from headrace.jobs import runner
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.sample import click_events

from tests.integration.test_kafka_postgres import SCHEMA, view_rows
from tests.jobfiles import example_job, planning_counted
from tests.kafkautil import produce
from tests.reference import is_valid, tumbling_page_activity
from tests.services import Broker, Postgres

pytestmark = pytest.mark.integration


def test_a_job_started_again_loads_its_kept_plan_and_plans_again_if_it_is_damaged(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    plans = tmp_path / "plans"
    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(plans))
    planned = planning_counted(monkeypatch)
    broker.create_topic(unique, partitions=2)
    events = list(click_events(3000, seed=5, invalid_rate=0.03, late_rate=0.0))  # jitter 4 s < 5 s: none late
    ends = produce(broker.bootstrap, unique, events, partitions=2)
    expected = tumbling_page_activity([json.loads(e.payload) for e in events if is_valid(e.payload, SCHEMA)], 60_000)
    assert len(expected) >= 20
    job = example_job(tmp_path, unique)
    said: list[str] = []

    def start() -> dict[tuple, tuple]:
        with psycopg.connect(**pg.conninfo()) as conn:  # each start writes its view anew
            conn.execute(f'DROP TABLE IF EXISTS "{unique}_1m"')
        # the same job each time, from the topic's start (its consumer group has read it before)
        compiled = compile_job(build_plan(parse_job(job)), load_profile("test", profiles_file),
                               bounded_offsets=ends, from_earliest=True)
        result, _ = runner.submit_local(compiled, say=said.append)
        result.wait()
        return view_rows(pg, f"{unique}_1m")

    def exact(got: dict[tuple, tuple]) -> None:
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key][:2] == value[:2] and got[key][3:] == value[3:]
            assert got[key][2] == pytest.approx(value[2], rel=1e-12)

    exact(start())
    assert planned == ["page-activity"]
    [kept] = plans.glob("page-activity-*.json")
    text = kept.read_text()
    assert json.loads(text)["nodes"] and "not-a-real-secret" not in text  # the profile's password

    exact(start())
    assert planned == ["page-activity"]  # loaded, not planned
    assert not [s for s in said if "kept plan" in s]

    kept.write_text(text[: len(text) // 2])  # damaged
    exact(start())
    assert planned == ["page-activity", "page-activity"]
    notes = [s for s in said if "kept plan" in s]
    assert len(notes) == 1 and notes[0].startswith("note: the kept plan of 'page-activity' did not load")
    assert "\n" not in notes[0] and "\tat " not in notes[0] and "Exception: " in notes[0], notes[0]
    assert numbered(kept.read_text()) == numbered(text)  # planned again: the same plan, kept again


def numbered(plan_json: str) -> Any:
    """The plan with its nodes numbered from 1 (the planner's counter runs on within one JVM)."""
    plan = json.loads(plan_json)
    ids = {node["id"]: n for n, node in enumerate(plan["nodes"], 1)}
    for node in plan["nodes"]:
        node["id"] = ids[node["id"]]
    for edge in plan["edges"]:
        edge["source"], edge["target"] = ids[edge["source"]], ids[edge["target"]]
    return plan
