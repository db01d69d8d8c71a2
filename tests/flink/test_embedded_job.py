"""The example job on a Flink mini-cluster (embedded profile), at parallelism 1 and 2, with the
JVM validator (the default for this schema) and with the Python one (``engine: python``).

Rows must equal the plain-Python reference exactly; every invalid record must be a dead letter,
every record that the job called late must really be behind the watermark bound, and
in = aggregated + dead-lettered + late.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from headrace.connectors.embedded import EmbeddedStore, topic_file
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import run_embedded
from headrace.jobs.sample import click_events, write_jsonl

from tests.jobfiles import example_job_on, planning_counted
from tests.reference import genuinely_late, is_valid, tumbling_page_activity

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
EVENTS = 12_000


def assert_view_equals(columns: list[str], rows: list[Any], on_time: list[dict[str, Any]]
                       ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The embedded view's rows equal the reference's per-minute windows of ``on_time``; returns
    them by key."""
    expected = tumbling_page_activity(on_time, 60_000)
    got = {}
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        key = (r["tenant_id"], r["page"], r["window_start"], r["window_end"])
        got[key] = (r["events"], r["total_bytes"], r["avg_ms"], r["min_ms"], r["max_ms"])
    expected_text = {(t, p, ws.strftime("%Y-%m-%d %H:%M:%S.000"), we.strftime("%Y-%m-%d %H:%M:%S.000")): v
                     for (t, p, ws, we), v in expected.items()}
    assert got.keys() == expected_text.keys()
    for key, (n, total, avg, lo, hi) in expected_text.items():
        assert got[key][0] == n and got[key][1] == total and got[key][3:] == (lo, hi), key
        assert got[key][2] == pytest.approx(avg, rel=1e-12), key
    return got


@pytest.mark.parametrize(("parallelism", "engine"), [(1, "jvm"), (2, "jvm"), (2, "python"), (1, "python")])
def test_example_job_matches_reference(tmp_path: Path, parallelism: int, engine: str) -> None:
    data_dir = tmp_path / "local"
    events = list(click_events(EVENTS, seed=parallelism))
    write_jsonl(topic_file(data_dir, "clicks"), iter(events))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n"
        f"    flink: {{parallelism.default: '{parallelism}', pipeline.auto-watermark-interval: 10 ms}}\n")
    plan = build_plan(parse_job(example_job_on(tmp_path, engine)))
    assert plan.decoder.engine == engine
    compiled = compile_job(plan, load_profile("local", profiles))
    assert compiled.config["parallelism.default"] == str(parallelism)

    summary = run_embedded(compiled, say=lambda _: None)

    store = EmbeddedStore(data_dir)
    columns, rows = store.rows("page_activity_1m")
    dead = list(store.records("clicks.dlq"))
    late = list(store.records("clicks.late"))
    store.close()

    invalid = [e for e in events if not is_valid(e.payload, SCHEMA)]
    assert Counter(d["payload"].encode() for d in dead) == Counter(e.payload for e in invalid)
    assert {d["step"] for d in dead} == {"validate"} and all(d["error"] for d in dead)
    assert all(d["source_topic"] == "clicks" for d in dead)

    late_payloads = Counter(d["payload"].encode() for d in late)
    designed_late = [e for e in events if e.kind == "late"]
    assert sum(1 for e in designed_late if late_payloads[e.payload]) >= 0.9 * len(designed_late)
    # whatever was called late must really be behind any watermark the job could have had
    assert not late_payloads - genuinely_late(events, SCHEMA, 5_000 + 30_000)
    assert all(d["step"] == "aggregate" and d["error"].startswith("late: ") for d in late)

    on_time = [json.loads(e.payload) for e in events
               if is_valid(e.payload, SCHEMA) and not late_payloads[e.payload]]
    got = assert_view_equals(columns, rows, on_time)

    aggregated = sum(v[0] for v in got.values())
    assert summary.records_in == EVENTS == aggregated + len(dead) + len(late)


@pytest.mark.parametrize("job", ["page_activity_avro.yaml", "page_activity_proto.yaml"])
def test_binary_example_jobs_run_under_the_embedded_profile(tmp_path: Path, job: str, click_pb2: object) -> None:
    """``headrace generate --job`` writes the job's topic in its format (registering the schema in
    the embedded registry) and the job, run on the embedded profile, aggregates exactly what an
    independent decoder (fastavro; the protobuf runtime) reads of those records."""
    import base64
    import subprocess
    import sys

    from tests.reference import confluent_avro

    data_dir = tmp_path / "local"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n"
                        "    flink: {pipeline.auto-watermark-interval: 10 ms}\n")
    spec = tmp_path / job
    spec.write_text((ROOT / "jobs" / job).read_text().replace("schemas/", f"{ROOT}/schemas/"))
    made = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "generate", "--job", str(spec), "--events",
                           str(EVENTS), "--profiles", str(profiles)], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    plan = build_plan(parse_job(spec))
    topic = plan.spec.source.kafka.topic
    lines = topic_file(data_dir, topic, binary=True).read_bytes().splitlines()
    assert len(lines) == EVENTS
    summary = run_embedded(compile_job(plan, load_profile("local", profiles)), say=lambda _: None)
    store = EmbeddedStore(data_dir)
    columns, rows = store.rows(plan.sinks[0].view.name)
    dead = list(store.records(f"{topic}.dlq"))
    late = list(store.records(f"{topic}.late"))
    store.close()

    def decode(payload: bytes) -> dict[str, object] | None:
        if job.endswith("avro.yaml"):
            reader = json.loads((ROOT / "schemas" / "click.avsc").read_text())
            return confluent_avro(payload, lambda _: reader, reader)
        if payload[:1] != b"\x00" or payload[5:6] != b"\x00":
            return None
        message = click_pb2.Click.FromString(payload[6:])  # type: ignore[attr-defined]
        return {"tenant_id": message.tenant_id, "page": message.page, "ts": message.ts,
                "latency_ms": message.latency_ms, "bytes": message.bytes if message.HasField("bytes") else None}

    payloads = [base64.b64decode(line) for line in lines]
    decoded = [decode(p) for p in payloads]
    assert len(dead) == sum(d is None for d in decoded) > 0
    late_payloads = Counter(base64.b64decode(d["payload"]) for d in late)
    # a late record's payload is the record's bytes (it once crossed a DataStream as a Java String)
    assert late and not late_payloads - Counter(payloads)
    on_time = [d for p, d in zip(payloads, decoded, strict=True) if d is not None and not late_payloads[p]]
    assert_view_equals(columns, rows, on_time)
    assert summary.records_in == EVENTS == len(on_time) + len(dead) + len(late)


def test_a_second_run_loads_the_plan_the_first_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded job is an INSERT into the client table, so it has a JSON plan: the first run
    plans and keeps it, the second loads it (no planning, no views) and gives the same outputs,
    equal to the reference."""
    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(tmp_path / "plans"))
    planned = planning_counted(monkeypatch)
    data_dir = tmp_path / "local"
    events = list(click_events(4000, seed=9, late_rate=0.0))  # jitter 4 s < 5 s: none late, every run alike
    write_jsonl(topic_file(data_dir, "clicks"), iter(events))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n"
                        "    flink: {parallelism.default: '2', pipeline.auto-watermark-interval: 10 ms}\n")
    compiled = compile_job(build_plan(parse_job(example_job_on(tmp_path, "jvm"))), load_profile("local", profiles))
    assert compiled.inserts  # the client table's

    def run() -> tuple[list[Any], list[str]]:
        summary = run_embedded(compiled, say=lambda _: None)
        store = EmbeddedStore(data_dir)
        columns, rows = store.rows("page_activity_1m")
        dead = sorted(json.dumps({k: v for k, v in d.items() if k != "failed_at"}, sort_keys=True)
                      for d in store.records("clicks.dlq"))
        assert not list(store.records("clicks.late"))
        store.close()
        got = assert_view_equals(columns, rows, [json.loads(e.payload) for e in events if is_valid(e.payload, SCHEMA)])
        assert summary.records_in == len(events) == sum(v[0] for v in got.values()) + len(dead)
        assert len(dead) == sum(not is_valid(e.payload, SCHEMA) for e in events) > 0
        return sorted(rows), dead

    first = run()
    assert planned == ["page-activity"] and len(list((tmp_path / "plans").glob("page-activity-*.json"))) == 1
    assert run() == first
    assert planned == ["page-activity"]  # the second run loaded the plan
