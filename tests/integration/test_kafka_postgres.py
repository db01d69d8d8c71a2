"""Kafka (tansu) → Flink → PostgreSQL and dead letters back to Kafka, with real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC
from pathlib import Path

import psycopg
import pytest
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import submit_local
from headrace.jobs.sample import SampleEvent, click_events

from tests.jobfiles import ROOT, example_job
from tests.kafkautil import produce, read_all
from tests.reference import genuinely_late, is_valid, tumbling_page_activity
from tests.services import Broker, Postgres, free_port

pytestmark = pytest.mark.integration
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
HEADRACE = [sys.executable, "-m", "headrace.jobs.cli"]


def run_job(job: Path, profiles: Path, ends: dict[int, int], group: str | None = None) -> str | None:
    text = job.read_text()
    if group:
        text = text.replace("group: page-activity", f"group: {group}")
    job.write_text(text)
    compiled = compile_job(build_plan(parse_job(job)), load_profile("test", profiles), bounded_offsets=ends)
    result, summary = submit_local(compiled, say=lambda _: None)
    result.wait()
    return summary.job_id


def view_rows(pg: Postgres, table: str) -> dict[tuple, tuple]:
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute(f'SELECT tenant_id, page, window_start, window_end, events, total_bytes, '
                            f'avg_ms, min_ms, max_ms FROM "{table}"').fetchall()
    return {r[:4]: r[4:] for r in rows}


def test_kafka_job_upserts_views_and_dead_letters_with_origin(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    broker.create_topic(unique, partitions=2)
    events = list(click_events(4000, seed=11, invalid_rate=0.03))
    ends = produce(broker.bootstrap, unique, events, partitions=2)
    job = example_job(tmp_path, unique)

    job_id = run_job(job, profiles_file, ends)

    # RocksDB's LOG files are in this process's directory, not PyFlink's (where they piled up)
    import pyflink
    from headrace.jobs import runner

    assert job_id and runner._rocksdb_logs is not None
    assert list(runner._rocksdb_logs.glob(f"*job_{job_id}_*LOG*"))
    assert not list((Path(pyflink.__file__).parent / "log").glob(f"*job_{job_id}_*"))

    invalid = [e for e in events if not is_valid(e.payload, SCHEMA)]
    dead = read_all(broker.bootstrap, f"{unique}.dlq", len(invalid))
    assert Counter(d["payload"] for d in dead) == Counter(e.payload.decode() for e in invalid)
    # every dead letter names its origin: reading that partition/offset gives the same payload
    by_origin = {}
    for partition in range(2):
        for offset, record in enumerate(read_raw(broker, unique, partition, ends[partition])):
            by_origin[(partition, offset)] = record
    for d in dead:
        assert d["source_topic"] == unique and d["step"] == "validate"
        assert by_origin[(d["source_partition"], d["source_offset"])] == d["payload"].encode()
        assert d["error_path"].startswith("/") and d["error"] and d["failed_at"]

    late = read_all(broker.bootstrap, f"{unique}.late", sum(e.kind == "late" for e in events))
    late_payloads = Counter(d["payload"].encode() for d in late)
    assert late_payloads and not late_payloads - genuinely_late(events, SCHEMA, 35_000)
    on_time = [json.loads(e.payload) for e in events if is_valid(e.payload, SCHEMA) and not late_payloads[e.payload]]
    expected = tumbling_page_activity(on_time, 60_000)
    got = view_rows(pg, f"{unique}_1m")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key][:2] == value[:2] and got[key][3:] == value[3:]
        assert got[key][2] == pytest.approx(value[2], rel=1e-12)
    assert len(events) == sum(v[0] for v in got.values()) + len(dead) + len(late)

    # a replay (new consumer group: the whole topic again) rewrites the same rows and adds none.
    # Windows that records built to be hours late fall into are left out: whether such a record
    # is late depends on whether a (periodic) watermark was emitted before it was read.
    far_behind = {(json.loads(e.payload)["tenant_id"], json.loads(e.payload)["page"],
                   e.timestamp_ms - e.timestamp_ms % 60_000) for e in events if e.kind == "late"}

    def settled(rows: dict[tuple, tuple]) -> dict[tuple, tuple]:
        return {k: v for k, v in rows.items()
                if (k[0], k[1], int(k[2].replace(tzinfo=UTC).timestamp() * 1000)) not in far_behind}

    run_job(job, profiles_file, ends, group=f"{unique}-replay")
    replayed = view_rows(pg, f"{unique}_1m")
    assert settled(replayed) == settled(got) and len(settled(got)) >= 60
    assert set(replayed) - set(got) <= set(replayed) - set(settled(replayed))


def read_raw(broker: Broker, topic: str, partition: int, end: int) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"raw-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, 0)])
    out: list[bytes] = []
    while len(out) < end:
        for msg in consumer.consume(num_messages=5000, timeout=1.0):
            if msg.error() is None:
                out.append(msg.value())
    consumer.close()
    return out[:end]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(HEADRACE + list(args), capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


def test_unreachable_broker_is_one_line_without_java_trace(tmp_path: Path, pg: Postgres) -> None:
    profiles = tmp_path / "p.yaml"
    profiles.write_text(f"profiles:\n  down:\n    kafka: {{bootstrap_servers: '127.0.0.1:{free_port()}'}}\n"
                        f"    postgres: {{port: {pg.port}, database: postgres, user: postgres}}\n")
    done = cli("run", "jobs/page_activity.yaml", "--profile", "down", "--profiles", str(profiles))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Kafka broker at 127.0.0.1:")
    assert "Exception" not in done.stderr and "at org.apache" not in done.stderr


def test_unreachable_postgres_is_one_line(tmp_path: Path, broker: Broker, unique: str) -> None:
    broker.create_topic(unique)
    job = example_job(tmp_path, unique)
    profiles = tmp_path / "p.yaml"
    profiles.write_text(f"profiles:\n  down:\n    kafka: {{bootstrap_servers: '{broker.bootstrap}'}}\n"
                        f"    postgres: {{port: {free_port()}, database: postgres, user: postgres}}\n")
    done = cli("run", str(job), "--profile", "down", "--profiles", str(profiles))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach PostgreSQL at 127.0.0.1:")


def test_missing_jar_is_one_line(tmp_path: Path, profiles_file: Path) -> None:
    done = cli("run", "jobs/page_activity.yaml", "--profile", "test", "--profiles", str(profiles_file),
               env={"HEADRACE_JARS_DIR": str(tmp_path / "empty")})
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: connector jar flink-connector-kafka-4.0.1-2.0.jar is missing from "
                                   f"{tmp_path / 'empty'}; run 'headrace jars' to fetch and verify it")


def test_bad_spec_is_one_line_with_location(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text().replace("window:", "windw:"))
    done = cli("validate", str(job))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {job}:16: unknown key 'windw' in steps[1].aggregate (+1 more); did you mean 'window'?"]


def running_vertices(job: Path, profiles: Path, port: int) -> dict[str, str]:
    """Start the job (unbounded), read its vertex ids from Flink's REST API, cancel it."""
    import time
    import urllib.request

    compiled = compile_job(build_plan(parse_job(job)), load_profile("test", profiles))
    result, summary = submit_local(compiled, say=lambda _: None, rest_port=port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{summary.rest_url}/jobs/{summary.job_id}", timeout=2) as r:
                    detail = json.loads(r.read())
                if detail["vertices"]:
                    return {v["name"].split("(")[0][:40]: v["id"] for v in detail["vertices"]}
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("job did not show up in the REST API")
    finally:
        result.get_job_client().cancel().result()


def test_operator_ids_come_from_step_uids_not_graph_shape(
        tmp_path: Path, broker: Broker, profiles_file: Path, unique: str) -> None:
    """Removing an output re-numbers Flink's SQL operators; our uids keep the other vertex ids."""
    broker.create_topic(unique, partitions=2)
    with_late = example_job(tmp_path, unique)
    without_late = tmp_path / "without_late.yaml"
    without_late.write_text("\n".join(line for line in with_late.read_text().splitlines()
                                      if not line.startswith("late:")))
    a = running_vertices(with_late, profiles_file, free_port())
    b = running_vertices(without_late, profiles_file, free_port())
    # source chain (decode, judge, outputs' filters, local window aggregate, late output), global
    # window aggregate, the merge of windows with their late records (and the sink), dead letters
    assert len(a) == len(b) == 4, (a, b)
    for part in ("Source", "GlobalWindowAggregate", "ProcessTableFunction", "hr_dead_letter"):
        assert next(v for name, v in a.items() if part in name) == next(v for name, v in b.items() if part in name)


def test_flink_failure_prints_the_cause_without_java_trace(tmp_path: Path) -> None:
    """A job Flink refuses at run time: the root cause first, no trace unless --verbose."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "clicks.jsonl").write_text('{"tenant_id": "a"}\n')
    profiles = tmp_path / "p.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n"
                        "    flink: {parallelism.default: '0'}\n")
    done = cli("run", "jobs/page_activity.yaml", "--profiles", str(profiles))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the Flink job failed: ")
    assert errors[0].endswith("(run with --verbose for the Java trace)")
    assert "\tat org.apache" not in done.stderr
    verbose = cli("--verbose", "run", "jobs/page_activity.yaml", "--profiles", str(profiles))
    assert verbose.returncode == 1 and "at org.apache" in verbose.stderr


def rows_while_running(job: Path, profiles: Path, table: str, pg: Postgres, wait_s: float,
                       until_rows: bool = False) -> tuple[int, float]:
    """Start the job unbounded, count the view's rows after ``wait_s`` (or, ``until_rows``, as soon
    as there are any, within ``wait_s``), cancel the job; the count and the seconds waited."""
    compiled = compile_job(build_plan(parse_job(job)), load_profile("test", profiles))
    result, _ = submit_local(compiled, say=lambda _: None)
    started = time.monotonic()
    try:
        while time.monotonic() - started < wait_s:
            time.sleep(0.5)
            if until_rows and row_count(pg, table):
                break
        return row_count(pg, table), time.monotonic() - started
    finally:
        result.get_job_client().cancel().result()


def row_count(pg: Postgres, table: str) -> int:
    with psycopg.connect(**pg.conninfo()) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def test_idle_partition_does_not_hold_back_windows(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    """Only partition 0 gets data: with idle_timeout the other partition stops holding the
    watermark back and windows close while the job runs; without it they do not, in the time the
    job with it took to write its first row and 10 s more."""
    from confluent_kafka import Producer

    broker.create_topic(unique, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for e in click_events(3000, seed=5, invalid_rate=0, late_rate=0):  # 60 s of event time
        producer.produce(unique, e.payload, key=e.key, partition=0, timestamp=e.timestamp_ms)
    producer.flush(30)
    job = example_job(tmp_path, unique)
    job.write_text(job.read_text().replace("idle_timeout: 30s", "idle_timeout: 2s"))
    rows, took = rows_while_running(job, profiles_file, f"{unique}_1m", pg, wait_s=25, until_rows=True)
    assert rows > 0

    stuck = tmp_path / "stuck.yaml"
    stuck.write_text(job.read_text().replace(", idle_timeout: 2s", "")
                     .replace("group: page-activity", "group: stuck").replace(f"{unique}_1m", f"{unique}_stuck"))
    assert rows_while_running(stuck, profiles_file, f"{unique}_stuck", pg, wait_s=took + 10)[0] == 0


def test_a_record_without_event_time_cannot_move_the_watermark(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    # a replay of old events, with one undecodable record produced just now: its Kafka timestamp
    # must not become the watermark, or every record after it would be late
    broker.create_topic(unique, partitions=1)
    events = list(click_events(3000, seed=5, invalid_rate=0, late_rate=0))
    broken = SampleEvent(key=b"tenant-0", payload=b'{"tenant_id": "tenant-0", "ts": ',
                         timestamp_ms=int(time.time() * 1000), kind="invalid")
    events.insert(1000, broken)
    ends = produce(broker.bootstrap, unique, events, partitions=1)

    run_job(example_job(tmp_path, unique), profiles_file, ends)

    dead = read_all(broker.bootstrap, f"{unique}.dlq", 1)
    assert [d["payload"] for d in dead] == [broken.payload.decode()]
    assert sum(v[0] for v in view_rows(pg, f"{unique}_1m").values()) == 3000  # none of them late


def test_a_stored_row_is_never_replaced_by_one_built_from_fewer_records(pg: Postgres, unique: str) -> None:
    """The guard every view table gets: an upsert as Flink's JDBC sink writes it."""
    from headrace.connectors.postgres import ensure_table
    from headrace.schemas.types import FieldType
    from headrace.schemas.views import ViewDef

    view = ViewDef(name=f"{unique}_guard", keys=(("k", FieldType.STRING),), measures=(("n", FieldType.INTEGER),))
    ensure_table(pg.conninfo(), view)
    upsert = (f'INSERT INTO "{view.name}" (k, window_start, window_end, n, _records) VALUES (%s, %s, %s, %s, %s) '
              'ON CONFLICT (k, window_start, window_end) DO UPDATE SET n = EXCLUDED.n, _records = EXCLUDED._records')
    start, end = "2026-01-01 00:00:00", "2026-01-01 00:01:00"
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        def stored() -> tuple:
            return conn.execute(f'SELECT n, _records FROM "{view.name}"').fetchone()

        conn.execute(upsert, ("a", start, end, 10, 10))
        conn.execute(upsert, ("a", start, end, 3, 3))    # a partial recount after a restart
        assert stored() == (10, 10)
        conn.execute(upsert, ("a", start, end, 10, 10))  # the same window again: rewritten
        conn.execute(upsert, ("a", start, end, 12, 12))  # a late record joined it
        assert stored() == (12, 12)
