"""The grown example, jobs/site_activity.yaml, under the embedded profile: no servers. The CLI
writes the sample (`headrace generate --job`) and runs the job unchanged; the hourly roll-up and
the minute view equal the plain-Python reference over the sample, enrichment from the shipped
table and the masking's keyed hashes included, and the run's account adds up."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from headrace.connectors.embedded import EmbeddedStore

from tests.acceptance.test_site_activity import assert_row, measures, minute_reference
from tests.reference import expected_outcome

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
KEY = "embedded-mask-key-00042"
EVENTS = 20_000


def _ms(text: str) -> int:
    from datetime import UTC, datetime

    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp() * 1000)


def test_the_example_runs_on_the_embedded_profile_with_no_servers(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n")
    env = {**os.environ, "HEADRACE_MASK_KEY": KEY}
    cli = [sys.executable, "-m", "headrace.jobs.cli"]
    subprocess.run([*cli, "generate", "--events", str(EVENTS), "--job", "jobs/site_activity.yaml",
                    "--profiles", str(profiles)], cwd=ROOT, env=env, check=True, capture_output=True)
    done = subprocess.run([*cli, "run", "jobs/site_activity.yaml", "--profiles", str(profiles), "--limit", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    payloads = (tmp_path / "local" / "clicks.jsonl").read_bytes().splitlines()
    assert len(payloads) == EVENTS and sum(b"\"email\": \"u" in p for p in payloads) > 0.95 * EVENTS
    want = expected_outcome([(0, p) for p in payloads], SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000,
                            keys=("tenant_id",))
    with (ROOT / "jobs" / "data" / "users.csv").open() as table:
        users = {row["user_id"]: row for row in csv.DictReader(table)}
    assert all(r["user_id"] in users for r in want.on_time)  # the sample's users are all in the table
    records = [r | {"country": users[r["user_id"]]["country"], "plan": users[r["user_id"]]["plan"]}
               for r in want.on_time]

    store = EmbeddedStore(tmp_path / "local")
    try:
        got_minutes = {(r["tenant_id"], r["country"], _ms(r["window_start"])): r
                       for r in _rows(store, "site_activity_1m")}
        points = {(r["tenant_id"], r["country"], _ms(r["window_start"])): r
                  for r in _rows(store, "site_activity_1m_points")}
        hours = {(r["tenant_id"], _ms(r["window_start"])): r for r in _rows(store, "site_activity_1h")}
        dead = list(store.records("clicks.dlq"))
        late = list(store.records("clicks.late"))
    finally:
        store.close()
    minute = minute_reference(records)
    assert got_minutes.keys() == minute.keys() == points.keys()
    for key, values in minute.items():
        assert_row(got_minutes[key], values, f"minute {key}")
        assert_row(points[key], values, f"points {key}")
    by_hour: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        by_hour[(r["tenant_id"], r["ts"] - r["ts"] % 3_600_000)].append(r)
    assert hours.keys() == by_hour.keys()
    for key, rs in by_hour.items():
        assert_row(hours[key], measures(rs, {"p95_ms": 0.95}), f"hour {key}")

    assert len(dead) == len(want.dead_at) and len(late) == len(want.late_at) and late
    aggregated = sum(v["events"] for v in minute.values())
    assert EVENTS == aggregated + len(dead) + len(late)
    assert (f"{EVENTS:,} records in, {len(dead):,} dead-lettered (clicks.dlq) → per_minute: {aggregated:,} "
            f"aggregated, {len(late):,} late") in done.stdout
    # masked: the late records' user ids are the keyed hashes of the clear ones, and no clear id is left
    hashed = {hmac.new(KEY.encode(), u.encode(), hashlib.sha256).hexdigest() for u in users}
    assert {json.loads(d["payload"])["user_id"] for d in late} <= hashed
    text = json.dumps([dead, late]) + json.dumps(list(got_minutes.values()))
    assert not re.search(r"\bu\d+@|\"u\d+\\\\?\"", text)


def _rows(store: EmbeddedStore, view: str) -> list[dict]:
    columns, rows = store.rows(view)
    return [dict(zip(columns, row, strict=True)) for row in rows]
