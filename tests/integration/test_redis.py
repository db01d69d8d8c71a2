"""The Redis sink against a real redis-server: hashes per key and window, ``:latest`` and the
top-N sorted sets equal the plain-Python reference, also after Redis was stopped for 10 s while
the job ran (the job retries, fails over to its checkpoint if it must, and rewrites the same keys)."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from headrace.connectors.redis import encode_part
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.sample import click_events

from tests.integration.clirun import CliRun
from tests.integration.test_failures import PARTITIONS, assert_exact, fault_job, final_offsets, row_count, run_args
from tests.jobfiles import ROOT
from tests.kafkautil import produce_placed
from tests.reference import expected_outcome
from tests.services import Broker, Postgres, RedisServer

pytestmark = pytest.mark.integration
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())


def with_redis(tmp_path: Path, name: str, profiles: Path, redis_server: RedisServer) -> Path:
    job = fault_job(tmp_path, name)
    job.write_text(job.read_text().replace(
        f"  - postgres: {{table: {name}_1m}}",
        f"  - postgres: {{table: {name}_1m}}\n  - redis: {{view: {name}, ttl: 1d, top: {{measure: events}}}}"))
    profiles.write_text(profiles.read_text().replace(
        "    state:", f"    redis: {{host: 127.0.0.1, port: {redis_server.port}}}\n    state:"))
    return job


def redis_view(redis_server: RedisServer, name: str) -> dict[tuple[Any, ...], dict[bytes, bytes]]:
    client: Any = redis_server.client()
    out = {}
    for key in client.scan_iter(match=f"{name}:*"):
        parts = key.decode().split(":")
        if parts[-1] == "latest" or parts[1] == "top":
            continue
        out[tuple(parts[1:])] = client.hgetall(key)
    return out


def assert_redis_exact(redis_server: RedisServer, name: str, placed: list[tuple[int, bytes]]) -> None:
    want = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000).views()
    got = redis_view(redis_server, name)
    expected: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for (tenant, page, start, _end), value in want.items():
        ms = calendar.timegm(start.timetuple()) * 1000  # reference windows are naive UTC, whole seconds
        expected[(encode_part(tenant, None), encode_part(page, None), str(ms))] = value
    assert got.keys() == expected.keys()
    for key, (events, total, avg, lo, hi) in expected.items():
        row = got[key]
        assert int(row[b"events"]) == events and int(row[b"_records"]) == events, key
        assert row[b"total_bytes"] == (str(total).encode() if total is not None else b""), key
        assert float(row[b"avg_ms"]) == pytest.approx(avg, rel=1e-12), key
        assert (int(row[b"min_ms"]), int(row[b"max_ms"])) == (lo, hi), key
    client: Any = redis_server.client()
    # :latest is the newest window of each key; the top-N set of a window ranks its keys by events
    newest: dict[tuple[str, str], str] = {}
    for tenant, page, start in expected:
        if (tenant, page) not in newest or int(start) > int(newest[(tenant, page)]):
            newest[(tenant, page)] = start
    for (tenant, page), start in newest.items():
        assert client.hget(f"{name}:{tenant}:{page}:latest", "window_start_ms") == start.encode()
    some = next(iter(expected))
    ranked = client.zrevrange(f"{name}:top:events:{some[2]}", 0, -1, withscores=True)
    assert {m.decode(): int(s) for m, s in ranked} == {
        f"{t}:{p}": v[0] for (t, p, s), v in expected.items() if s == some[2]}
    assert 0 < client.ttl(f"{name}:{some[0]}:{some[1]}:{some[2]}") <= 86_400


def test_redis_sink_writes_exact_hashes_and_rides_out_a_10_s_outage(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, profiles_file: Path,
        unique: str) -> None:
    job = with_redis(tmp_path, unique, profiles_file, redis_server)
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(30_000, seed=81))
    phases = [events[:15_000], events[15_000:]]
    placed = produce_placed(broker.bootstrap, unique, phases[0], PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(*phases)))
    run.wait_for(lambda: row_count(pg, f"{unique}_1m") > 0 and bool(redis_view(redis_server, unique)), 120,
                 "view rows in PostgreSQL and Redis")
    redis_server.shut_down()
    try:
        placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
        run.wait_for(lambda: run.line_matching("Redis 127.0.0.1") is not None, 30, "a progress line naming Redis")
        time.sleep(8)
    finally:
        redis_server.start_again()
    assert run.finish() == 0, run.output[-3000:]
    assert "not answering" in (run.line_matching("Redis 127.0.0.1") or "")
    assert "NoResourceAvailableException" not in run.output
    assert_exact(broker, pg, unique, placed)
    assert_redis_exact(redis_server, unique, placed)


@pytest.mark.parametrize("source", ["file", "postgres"])
def test_kill_9_of_a_job_with_enrich_and_redis_resumes_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, profiles_file: Path,
        unique: str, source: str) -> None:
    """Durable runs hold for both enrich engines (a file source looked up in Python, PostgreSQL in
    the JVM, with records in flight in the asynchronous operator's state) and the Redis writer:
    restored from the checkpoint, every store equal to the reference after a kill -9 and the same
    command."""
    from headrace.jobs.checkpoints import CheckpointStore

    job = with_redis(tmp_path, unique, profiles_file, redis_server)
    if source == "file":
        users = tmp_path / "users.jsonl"
        users.write_text("".join(f'{{"user_id": "u{i}", "plan": "p{i % 4}"}}\n' for i in range(250)))
        looked_up = f"{{file: {{path: {users}}}}}"
    else:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{unique}_users" (user_id text PRIMARY KEY, plan text)')
            with conn.cursor().copy(f'COPY "{unique}_users" (user_id, plan) FROM STDIN') as copy:
                for i in range(250):
                    copy.write_row((f"u{i}", f"p{i % 4}"))
        looked_up = f"{{postgres: {{table: {unique}_users, key_column: user_id}}}}, engine: jvm"
    job.write_text(job.read_text().replace(
        "  - validate: {}", "  - validate: {}\n  - enrich: {key: user_id, fields: {plan: string}, "
                            f"source: {looked_up}}}"))
    lookup = next(node for node in build_plan(parse_job(job)).steps if node.kind == "enrich")
    assert ("in the JVM" if source == "postgres" else "in Python") in lookup.explain()
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(45_000, seed=83))
    phases = [events[:15_000], events[15_000:30_000], events[30_000:]]
    args = run_args(job, profiles_file, final_offsets(*phases))
    store = CheckpointStore(tmp_path / "checkpoints", "page-activity")
    placed = produce_placed(broker.bootstrap, unique, phases[0], PARTITIONS)
    first = CliRun(*args)
    first.wait_for(lambda: store.latest() is not None and bool(redis_view(redis_server, unique)), 120,
                   "a completed checkpoint and Redis rows")
    placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
    time.sleep(0.7)
    first.kill()
    placed += produce_placed(broker.bootstrap, unique, phases[2], PARTITIONS)
    again = CliRun(*args)
    assert again.finish() == 0, again.output[-3000:]
    assert again.line_matching("resuming 'page-activity' from checkpoint"), again.output[-3000:]
    assert_exact(broker, pg, unique, placed)
    assert_redis_exact(redis_server, unique, placed)
