"""Acceptance: the example job, unchanged, through the CLI over 100,000 events from the broker.

Out-of-order, invalid and late records included. The PostgreSQL rows must equal the independent
plain-Python computation exactly, and in = aggregated + dead-lettered + late.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from headrace.jobs.sample import click_events

from tests.kafkautil import produce, read_all
from tests.reference import genuinely_late, is_valid, tumbling_page_activity
from tests.services import Broker, Postgres

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
EVENTS = 100_000



def test_example_job_end_to_end_through_the_cli(broker: Broker, pg: Postgres, profiles_file: Path) -> None:
    broker.create_topic("clicks", partitions=2)
    events = list(click_events(EVENTS, seed=2026))
    kinds = Counter(e.kind for e in events)
    assert kinds["invalid"] > 500 and kinds["late"] > 100  # the input really is messy
    ends = produce(broker.bootstrap, "clicks", events, partitions=2)
    assert sum(ends.values()) == EVENTS

    done = subprocess.run(
        [sys.executable, "-m", "headrace.jobs.cli", "run", "jobs/page_activity.yaml", "--profile", "test",
         "--profiles", str(profiles_file), "--stop-at-offsets", ",".join(f"{p}:{o}" for p, o in ends.items()),
         "--limit", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "page_activity_1m" in done.stdout  # the CLI shows the view as a table

    invalid = [e for e in events if not is_valid(e.payload, SCHEMA)]
    dead = read_all(broker.bootstrap, "clicks.dlq", len(invalid))
    assert Counter(d["payload"] for d in dead) == Counter(e.payload.decode() for e in invalid)

    late = read_all(broker.bootstrap, "clicks.late", kinds["late"])
    late_payloads = Counter(d["payload"].encode() for d in late)
    # records built to be hours late are caught once a watermark exists (see README, "late")
    designed_late = [e for e in events if e.kind == "late"]
    assert sum(1 for e in designed_late if late_payloads[e.payload]) >= 0.9 * len(designed_late)
    assert not late_payloads - genuinely_late(events, SCHEMA, 35_000)

    on_time = [json.loads(e.payload) for e in events if is_valid(e.payload, SCHEMA) and not late_payloads[e.payload]]
    expected = tumbling_page_activity(on_time, 60_000)
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute("SELECT tenant_id, page, window_start, window_end, events, total_bytes, avg_ms, "
                            "min_ms, max_ms FROM page_activity_1m").fetchall()
    got = {r[:4]: r[4:] for r in rows}
    assert got.keys() == expected.keys()
    mismatched = [k for k, v in expected.items()
                  if got[k][:2] != v[:2] or got[k][3:] != v[3:] or got[k][2] != pytest.approx(v[2], rel=1e-12)]
    assert not mismatched, mismatched[:5]

    aggregated = sum(v[0] for v in got.values())
    assert EVENTS == aggregated + len(dead) + len(late)
