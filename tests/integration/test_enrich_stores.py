"""The enrich step against real stores: users looked up in PostgreSQL (L3) through Redis (L2),
PostgreSQL stopped for 10 s while the job runs, and the view equal to a plain-Python join."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.sample import click_events
from headrace.operators.lookup import LookupStats

from tests.integration.clirun import CliRun
from tests.integration.test_failures import PARTITIONS, fault_job, final_offsets, row_count, run_args
from tests.jobfiles import ROOT
from tests.kafkautil import produce_placed, read_all
from tests.reference import drop_replays, expected_outcome, utc
from tests.services import Broker, Postgres, RedisServer

pytestmark = pytest.mark.integration
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
COUNTRIES = ["NO", "SE", "DK", "FI", "IS"]


def own_name(unique: str) -> str:
    """A job name for one test: ``headrace run`` sums the lookup files of its job's name in
    ``.headrace/stats``, which every run from the checkout writes to, the other test worker's too."""
    return unique.replace("_", "-")


#: the users a read-ahead job looks up: column -> (the step's field type, PostgreSQL type, value of
#: user i, the measure that counts it)
USER_FIELDS: dict[str, tuple[str, str, Any, str]] = {"plan": ("string", "text", lambda i: f"p{i % 4}", "planned"),
                                                      "tier": ("integer", "bigint", lambda i: i % 3, "tiered")}


def read_ahead_job(tmp_path: Path, pg: Postgres, unique: str, fields: tuple[str, ...]) -> Path:
    """Users u0..u299 in PostgreSQL, and the example job (under a job name of its own) with an
    enrich step in the JVM looking up ``fields`` of them by ``user_id``, keys read ahead, each
    field counted by a measure (``planned``, ``tiered``), so that the planner keeps the lookup."""
    columns = ", ".join(f"{f} {USER_FIELDS[f][1]}" for f in fields)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{unique}_users" (id text PRIMARY KEY, {columns})')
        with conn.cursor().copy(f'COPY "{unique}_users" (id, {", ".join(fields)}) FROM STDIN') as copy:
            for i in range(300):
                copy.write_row((f"u{i}", *(USER_FIELDS[f][2](i) for f in fields)))
    types = ", ".join(f"{f}: {USER_FIELDS[f][0]}" for f in fields)
    measures = "".join(f"\n        {USER_FIELDS[f][3]}: count({f})" for f in fields)
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text().replace("job: page-activity", f"job: {own_name(unique)}").replace(
        "  - validate: {}", f"  - validate: {{}}\n  - enrich: {{key: user_id, fields: {{{types}}}, "
        f"source: {{postgres: {{table: {unique}_users, key_column: id}}}}, engine: jvm}}")
        .replace("events: count()", "events: count()" + measures))
    return job


def lookup_stats(job: str, since: float) -> LookupStats:
    """The lookups of ``job``'s enrich step (JVM engine) written to .headrace/stats since ``since``."""
    total = LookupStats()
    for f in (ROOT / ".headrace" / "stats").glob(f"{job}.enrich.jvm-*.json"):
        if f.stat().st_mtime >= since:
            total = total.merged(LookupStats.from_json(f.read_text()))
    return total


def jvm_enrich_job(tmp_path: Path, unique: str, profiles_file: Path, redis_server: RedisServer, step: str,
                   measures: str = "", before: str = "") -> Path:
    """The example job with ``step`` (the enrich step's options, in the JVM) before the aggregate,
    grouped by the looked-up country, with Redis in the profile; ``before``: steps between
    validate and enrich."""
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text()
                   # a job name of its own: its lookup account (.headrace/stats) is its alone
                   .replace("job: page-activity", f"job: {own_name(unique)}")
                   .replace("  - validate: {}", "  - validate: {}\n" + before + "  - enrich:\n      key: user_id\n"
                            "      fields: {country: string, tier: integer}\n" + step + "      engine: jvm\n")
                   .replace("group_by: [tenant_id, page]", "group_by: [tenant_id, country]")
                   .replace("events: count()", "events: count()" + measures))
    profiles_file.write_text(profiles_file.read_text().replace(
        "    state:", f"    redis: {{port: {redis_server.port}}}\n    state:"))
    lookup = next(node for node in build_plan(parse_job(job)).steps if node.kind == "enrich")
    assert "in the JVM" in lookup.explain()
    return job


def run_through_outage(store: Any, broker: Broker, pg: Postgres, job: Path, profiles_file: Path, unique: str,
                       events: list[Any], progress: str | None = None) -> tuple[list[tuple[int, bytes]], CliRun]:
    """The first half of ``events`` read into the view, ``store`` stopped while the second half is
    produced (for 10 s, or until the run's progress names it and 8 s more), started again, and the
    run finished."""
    half = len(events) // 2
    placed = produce_placed(broker.bootstrap, unique, events[:half], PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events[:half], events[half:])))
    run.wait_for(lambda: row_count(pg, f"{unique}_1m") > 0, 120, "view rows")
    store.shut_down()
    try:
        placed += produce_placed(broker.bootstrap, unique, events[half:], PARTITIONS)
        if progress is not None:
            run.wait_for(lambda: run.line_matching(progress) is not None, 30, f"a progress line '{progress}'")
        time.sleep(8 if progress is not None else 10)
    finally:
        store.start_again()
    assert run.finish() == 0, run.output[-3000:]
    return placed, run


@pytest.mark.parametrize("read_ahead", [True, False], ids=["keys-read-ahead", "asynchronous"])
def test_lookups_through_redis_into_postgres_ride_out_a_10_s_outage_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, profiles_file: Path,
        unique: str, read_ahead: bool) -> None:
    """Both ways of the JVM engine: keys read ahead by the Kafka consumer and looked up on the task
    thread; and, behind a step that is not known to keep the key as the record has it (a mask step,
    here masking another field), Flink's asynchronous calc."""
    users = {f"u{i}": COUNTRIES[i % 5] for i in range(250)}  # u250..u299 are unknown
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{unique}_users" (id text PRIMARY KEY, country text, tier bigint)')
        with conn.cursor().copy(f'COPY "{unique}_users" (id, country, tier) FROM STDIN') as copy:
            for i, (user, country) in enumerate(users.items()):
                copy.write_row((user, country, i % 3))
    # short L1 lives: lookups keep reaching L2 and, for misses, PostgreSQL
    job = jvm_enrich_job(tmp_path, unique, profiles_file, redis_server,
                         f"      source: {{postgres: {{table: {unique}_users, key_column: id}}}}\n"
                         "      cache: {l1: {ttl: 1s, miss_ttl: 1s}, l2: {ttl: 1h}}\n      on_miss: dead_letter\n",
                         before="" if read_ahead else "  - mask:\n      fields: {page: redact}\n")
    broker.create_topic(unique, partitions=PARTITIONS)
    placed, run = run_through_outage(pg, broker, pg, job, profiles_file, unique, list(click_events(30_000, seed=71)),
                                     progress="not answering")

    expected = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000)
    # a record whose user is unknown is a dead letter of the enrich step, late or not (the lookup
    # comes before the aggregate judges lateness)
    late_known = Counter({p: n for p, n in expected.late.items() if json.loads(p)["user_id"] in users})
    missed = Counter(p for p, n in expected.late.items() if json.loads(p)["user_id"] not in users for _ in range(n))
    missed.update(json.dumps(r).encode() for r in expected.on_time if r["user_id"] not in users)
    dead = drop_replays(read_all(broker.bootstrap, f"{unique}.dlq",
                                 sum(expected.dead.values()) + sum(missed.values()), partitions=1))
    late = drop_replays(read_all(broker.bootstrap, f"{unique}.late", sum(late_known.values()), partitions=1))
    enrich_dead = [d for d in dead if d["step"] == "enrich"]
    assert len(enrich_dead) == sum(missed.values())
    assert all(json.loads(d["payload"])["user_id"] not in users for d in enrich_dead)
    assert len(late) == sum(late_known.values())

    want: Counter[tuple[Any, ...]] = Counter()
    for r in expected.on_time:
        if r["user_id"] in users:
            start = r["ts"] - r["ts"] % 60_000
            want[(r["tenant_id"], users[r["user_id"]], utc(start))] += 1
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute(f'SELECT tenant_id, country, window_start, events FROM "{unique}_1m"').fetchall()
    assert {r[:3]: r[3] for r in rows} == dict(want), run.output[-3000:]
    assert len(placed) == sum(want.values()) + len(dead) + len(late)

    # L2 holds what L3 answered (written back), and the run says how each level answered
    client: Any = redis_server.client()
    written = list(client.scan_iter(match=f"headrace:enrich:{own_name(unique)}:enrich:*"))
    assert 0 < len(written) <= 250
    table = "\n".join(run.lines[run.lines.index(next(line for line in run.lines if line.startswith("lookups"))):])
    assert "L2 (redis)" in table and "enrich" in table, run.output[-2000:]
    # every record that passed validation was answered, each answer counted at one level (a key
    # read ahead counts for the record that reads it; a lookup a failover abandoned is counted
    # when it is asked again after the restore, so replays may add more)
    row = next(line for line in run.lines if line.strip("│ ").startswith("enrich"))
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+)(?: \(|\s*│)", row)]
    valid = len(placed) - sum(1 for d in dead if d["step"] == "validate")
    assert counts[0] == sum(counts[1:5]) >= valid, (row, valid)
    assert ("read ahead by the Kafka consumer" in table) == read_ahead, table


def test_lookups_from_redis_hashes_in_the_jvm_ride_out_a_10_s_redis_outage_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, profiles_file: Path,
        unique: str) -> None:
    """The JVM engine's own Redis client: users as hashes (text values, a tier that is not an
    integer for some, a country with a NUL and one in four-byte UTF-8), Redis stopped for 10 s while
    the job runs (the lookups retried, L1 answering what it has), and the view equal to a plain-Python
    join that converts values as the Python engine does."""
    from headrace.operators.enrich import convert
    from headrace.schemas.types import FieldType

    client: Any = redis_server.client()
    countries = ["NO", "S\x00E", "D\U0001f600K", "FI", "IS"]
    users = {f"u{i}": (countries[i % 5], str(i % 3) if i % 7 else "x") for i in range(250)}
    for user, (country, tier) in users.items():
        client.hset(f"{unique}:user:{user}", mapping={"country": country, "tier": tier})
    job = jvm_enrich_job(tmp_path, unique, profiles_file, redis_server,
                         f"      source: {{redis: {{prefix: '{unique}:user:'}}}}\n"
                         "      cache: {l1: {ttl: 1s, miss_ttl: 1s}}\n      on_miss: drop\n",
                         measures="\n        tiers: sum(tier)")
    broker.create_topic(unique, partitions=PARTITIONS)
    placed, _ = run_through_outage(redis_server, broker, pg, job, profiles_file, unique,
                                   list(click_events(20_000, seed=72)))

    expected = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000)
    want: dict[tuple[Any, ...], list[int]] = {}
    for r in expected.on_time:
        if r["user_id"] in users:  # on_miss drop: a found key has every field (tier 'x' is no integer)
            country, tier = users[r["user_id"]]
            if convert(tier, FieldType.INTEGER) is None or "\x00" in country:
                continue  # not found; a group key PostgreSQL cannot store is a dead letter
            counts = want.setdefault((r["tenant_id"], country, utc(r["ts"] - r["ts"] % 60_000)), [0, 0])
            counts[0] += 1
            counts[1] += int(tier)
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute(f'SELECT tenant_id, country, window_start, events, tiers FROM "{unique}_1m"').fetchall()
    assert {r[:3]: [r[3], r[4]] for r in rows} == want


def test_hostile_records_through_a_job_that_reads_keys_ahead_come_out_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    """The JVM engine reading keys ahead, fed a 2 MB record, binary bytes, NULs, year 2100, the
    largest long, and a valid record whose key is 200 kB: the Kafka consumer's key reader skips
    what it cannot read, every record is looked up (or dead-lettered) as before, and the views,
    dead letters and late records equal the reference. Two looked-up fields are read, so the one
    calc calls the lookup twice per record: each record past validation is counted exactly once."""
    from headrace.jobs.sample import SampleEvent

    from tests.integration.test_failures import assert_exact, bad_records

    job = read_ahead_job(tmp_path, pg, unique, ("plan", "tier"))
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(6_000, seed=75))
    for i, bad in enumerate(bad_records()):
        events.insert(800 + 1_000 * i, bad)
    big = {"tenant_id": "tenant-3", "user_id": "u" * 200_000, "page": "/", "ts": 1_767_225_710_000, "latency_ms": 5}
    events.insert(5_500, SampleEvent(key=b"tenant-3", payload=json.dumps(big).encode(), timestamp_ms=big["ts"],
                                     kind="valid"))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    started = time.time()
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)))
    assert run.finish() == 0, run.output[-3000:]
    assert "read ahead by the Kafka consumer" in run.output, run.output[-3000:]
    assert_exact(broker, pg, unique, placed)
    with psycopg.connect(**pg.conninfo()) as conn:  # the 200 kB user has no row: counted, not planned
        planned, tiered, events_n = conn.execute(
            f'SELECT SUM(planned), SUM(tiered), SUM(events) FROM "{unique}_1m"').fetchone()
    assert events_n - planned == 1 and tiered == planned
    total = lookup_stats(own_name(unique), started)
    assert total.keys == total.l1_hits + total.l2_hits + total.l3_hits + total.misses
    assert total.misses >= 1 and total.read_ahead > 0, total
    # one count per record past validation (an event time out of range fails it too; late records
    # count: the lookup comes before lateness), not one per looked-up field; the job never
    # restarted, so no record was asked twice
    expected = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000)
    assert total.keys == len(placed) - sum(expected.dead.values()), total
