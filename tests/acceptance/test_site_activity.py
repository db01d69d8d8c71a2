"""Acceptance: the grown example, jobs/site_activity.yaml, through the CLI on real services.

100,000 sample clicks (invalid, late and unknown-user records among them) from the broker:
validated, enriched from the shipped table (jobs/data/users.csv), user_id and email masked,
measured per minute (distinct users, percentiles, top pages, distinct plans, sums, averages) and
rolled up per hour; the minute view in PostgreSQL and InfluxDB, the hourly one in PostgreSQL and
Redis. Every store equals an independent plain-Python reference (exact measures equal; sketches
within their documented bounds), every dead letter and late record is the reference's, no output
holds a clear user id or e-mail address, and in = aggregated + dead-lettered + late exactly.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import hmac
import json
import re
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from headrace.connectors.redis import encode_part
from headrace.jobs.sample import SampleEvent, click_events

from tests.integration.clirun import CliRun
from tests.kafkautil import offsets_arg, produce_placed, raw_topic
from tests.reference import expected_outcome
from tests.services import Broker, InfluxServer, Postgres, RedisServer

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
EVENTS, PARTITIONS, KEY = 100_000, 2, "acceptance-mask-key-0042"
#: documented bounds: DDSketch within 1% (relative); HyperLogLog exact to 1,024 distinct values
PERCENTILE_BOUND = 0.01


def sample() -> list[SampleEvent]:
    """The sample with e-mail addresses; every 997th valid click is by a user the table lacks."""
    out = []
    for i, event in enumerate(click_events(EVENTS, seed=2027, emails=True)):
        if event.kind == "valid" and i % 997 == 0:
            record = json.loads(event.payload)
            record["user_id"], record["email"] = f"stranger{i}", f"stranger{i}@corp.example"
            event = SampleEvent(key=event.key, payload=json.dumps(record).encode(), timestamp_ms=event.timestamp_ms,
                                kind="stranger")
        out.append(event)
    return out


def ms(value: Any) -> int:
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def top(values: list[str], k: int) -> list[dict[str, Any]]:
    counts = Counter(values)
    return [{"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:k]]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def minute_reference(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    windows: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        windows[(r["tenant_id"], r["country"], r["ts"] - r["ts"] % 60_000)].append(r)
    return {key: measures(rs, {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}, plans=True)
            for key, rs in windows.items()}


def measures(rs: list[dict[str, Any]], quantiles: dict[str, float], plans: bool = False) -> dict[str, Any]:
    latency = [float(r["latency_ms"]) for r in rs]
    sizes = [r["bytes"] for r in rs if r.get("bytes") is not None]
    out = {"events": len(rs), "users": len({r["user_id"] for r in rs}), "top_pages": top([r["page"] for r in rs], 3),
           "total_bytes": sum(sizes) if sizes else None, "avg_ms": sum(latency) / len(latency)}
    out |= {name: quantile(latency, q) for name, q in quantiles.items()}
    if plans:
        out["plans"] = len({r["plan"] for r in rs})
    return out


def assert_row(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for name, value in want.items():
        have = got[name]
        if name == "top_pages":
            assert json.loads(have) == value, (where, name)
        elif name == "avg_ms":
            assert float(have) == pytest.approx(value, rel=1e-12), (where, name)
        elif name.startswith("latency_p") or name == "p95_ms":
            assert abs(float(have) - value) <= PERCENTILE_BOUND * value + 1e-9, (where, name, have, value)
        elif value is None:
            assert have in (None, "", b""), (where, name, have)
        else:  # counts, sums; distinct users are under 1,024 a window: the sketch is exact
            assert int(have) == value, (where, name, have, value)


def test_site_activity_on_postgres_redis_and_influx_equals_the_reference(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, influx_server: InfluxServer,
        profiles_file: Path, unique: str) -> None:
    # the shipped job, its names made this test's own (topics, tables, key prefix, measurement)
    spec = (ROOT / "jobs" / "site_activity.yaml").read_text()
    for old, new in (("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")),
                     ("jobs/data/users.csv", str(ROOT / "jobs" / "data" / "users.csv")),
                     ("topic: clicks", f"topic: {unique}"), ("group: site-activity", f"group: {unique}"),
                     ("site_activity_1", f"{unique}_1")):
        assert old in spec
        spec = spec.replace(old, new)
    job = tmp_path / "site_activity.yaml"
    job.write_text(spec)
    urllib.request.urlopen(urllib.request.Request(f"{influx_server.url}/query?q=CREATE+DATABASE+{unique}",
                                                  method="POST"), timeout=10).read()
    profiles_file.write_text(profiles_file.read_text().replace(
        "    state:", f"    redis: {{port: {redis_server.port}}}\n"
                     f"    influx: {{url: \"{influx_server.url}\", mode: v1, database: {unique}}}\n    state:"))

    events = sample()
    kinds = Counter(e.kind for e in events)
    assert kinds["invalid"] > 500 and kinds["late"] > 100 and kinds["stranger"] > 50  # the input really is messy
    broker.create_topic(unique, partitions=PARTITIONS)
    ends = {p: 0 for p in range(PARTITIONS)}
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS, ends)
    run = CliRun("run", str(job), "--profile", "test", "--profiles", str(profiles_file), "--stop-at-offsets",
                 offsets_arg(ends), "--limit", "3", env={"HEADRACE_MASK_KEY": KEY})
    assert run.finish(timeout_s=900) == 0, run.output[-3000:]

    # the reference: which records are invalid and late (per partition, in offset order), and the
    # enrichment from the shipped table, computed here from the records
    want = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000,
                            keys=("tenant_id",))
    with (ROOT / "jobs" / "data" / "users.csv").open() as table:
        users = {row["user_id"]: row for row in csv.DictReader(table)}
    known = [(at, r) for at, r in zip(want.on_time_at, want.on_time, strict=True) if r["user_id"] in users]
    strangers = {at for at, r in zip(want.on_time_at, want.on_time, strict=True) if r["user_id"] not in users}
    assert len(strangers) == kinds["stranger"]
    records = [r | {"country": users[r["user_id"]]["country"], "plan": users[r["user_id"]]["plan"]} for _, r in known]

    dead_letters, late_records = raw_topic(broker, f"{unique}.dlq"), raw_topic(broker, f"{unique}.late")
    dead_at = {(d["source_partition"], d["source_offset"])
               for d in (json.loads(x.split(b" ", 1)[1]) for x in dead_letters.splitlines())}
    assert dead_at == want.dead_at | strangers
    late_at = {(d["source_partition"], d["source_offset"])
               for d in (json.loads(x.split(b" ", 1)[1]) for x in late_records.splitlines())}
    assert late_at == want.late_at

    minute = minute_reference(records)
    with psycopg.connect(**pg.conninfo()) as conn:
        cursor = conn.execute(f'SELECT * FROM "{unique}_1m"')
        names = [c.name for c in cursor.description or ()]
        pg_minute = {(r["tenant_id"], r["country"], ms(r["window_start"])): r
                     for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())}
        cursor = conn.execute(f'SELECT * FROM "{unique}_1h"')
        names = [c.name for c in cursor.description or ()]
        pg_hour = {(r["tenant_id"], ms(r["window_start"])): r
                   for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())}
    assert pg_minute.keys() == minute.keys() and len(minute) > 500
    for key, values in minute.items():
        assert_row(pg_minute[key], values, f"postgres {key}")

    series = influx_server.query(unique, f'SELECT * FROM "{unique}_1m_points"')
    columns = series[0]["columns"]  # type: ignore[index]
    points = {(p["tenant_id"], p["country"], p["time"]): p
              for p in (dict(zip(columns, v, strict=True)) for v in series[0]["values"])}  # type: ignore[index,arg-type]
    assert points.keys() == minute.keys()
    for key, values in minute.items():
        assert_row(points[key], values, f"influx {key}")

    hours: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        hours[(r["tenant_id"], r["ts"] - r["ts"] % 3_600_000)].append(r)
    hourly = {key: measures(rs, {"p95_ms": 0.95}) for key, rs in hours.items()}
    assert pg_hour.keys() == hourly.keys() and len(hourly) >= 4
    client: Any = redis_server.client()
    for (tenant, start), values in hourly.items():
        assert_row(pg_hour[(tenant, start)], values, f"postgres hour {tenant}")
        stored = client.hgetall(f"{unique}_1h:{encode_part(tenant, None)}:{start}")
        assert_row({k.decode(): v.decode() for k, v in stored.items()}, values, f"redis {tenant}")
        ranked = client.zrevrange(f"{unique}_1h:top:events:{start}", 0, -1, withscores=True)
        assert {m.decode(): int(s) for m, s in ranked} == {
            encode_part(t, None): v["events"] for (t, s), v in hourly.items() if s == start}

    # the accounting, exact; and no output holds a clear user id or e-mail address
    aggregated = sum(v["events"] for v in minute.values())
    assert EVENTS == aggregated + len(dead_at) + len(late_at)
    outputs = {"dead letters": dead_letters, "late": late_records,
               "postgres": repr(list(pg_minute.values()) + list(pg_hour.values())).encode(),
               "influx": json.dumps(series).encode(),
               "redis": b"\n".join(k + b" " + repr(client.hgetall(k)).encode()
                                   for k in client.scan_iter(match=f"{unique}_1h:*") if client.type(k) == b"hash")}
    assert all(outputs.values()), {k: len(v) for k, v in outputs.items()}
    for where, text in outputs.items():
        assert not re.search(rb"\bu\d+@|\"u\d+\"|stranger\d", text), where
    # a payload that is not JSON is replaced by its length and keyed hash; the late records' user
    # ids are the keyed hashes of the clear ones, as an independent HMAC computes them
    assert b"masked_payload" in outputs["dead letters"]
    hashed = {hmac.new(KEY.encode(), u.encode(), hashlib.sha256).hexdigest() for u in users}
    late_users = {json.loads(json.loads(x.split(b" ", 1)[1])["payload"])["user_id"]
                  for x in outputs["late"].splitlines()}
    assert late_users and late_users <= hashed
