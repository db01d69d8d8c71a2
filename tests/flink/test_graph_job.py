"""A job graph end to end (embedded profile): one stream, two aggregates (1-minute tumbling and
1-hour sliding), three sinks; every view equals a plain-Python reference, and for each aggregate
in = aggregated + dead-lettered + late."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from headrace.connectors.embedded import EmbeddedStore, topic_file
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import run_embedded
from headrace.jobs.sample import click_events, write_jsonl
from headrace.operators.aggregate import assign_windows

from tests.reference import is_valid, utc
from tests.unit.test_graph import TWO_AGGREGATES

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
EVENTS = 6_000


def text(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%d %H:%M:%S.000")


@pytest.mark.parametrize("hour_sinks", ["postgres", "redis+influx"])
def test_two_aggregates_and_three_sinks_match_the_reference(tmp_path: Path, hour_sinks: str) -> None:
    data_dir = tmp_path / "local"
    events = list(click_events(EVENTS, seed=7))
    write_jsonl(topic_file(data_dir, "clicks"), iter(events))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n"
                        "    flink: {parallelism.default: '2'}\n")
    job = tmp_path / "job.yaml"
    spec = TWO_AGGREGATES
    if hour_sinks != "postgres":  # under the embedded profile every sink kind stores its view in SQLite
        spec = spec.replace("  - postgres: {table: per_hour}",
                            "  - redis: {view: per_hour, from: per_hour}\n  - influx: {measurement: per_hour}")
    job.write_text(spec)
    compiled = compile_job(build_plan(parse_job(job)), load_profile("local", profiles))

    summary = run_embedded(compiled, say=lambda _: None)

    store = EmbeddedStore(data_dir)
    views = {name: store.rows(name) for name in ("per_minute_a", "per_minute_b", "per_hour")}
    dead = list(store.records("clicks.dlq"))
    store.close()
    late = [d for d in dead if d["error"].startswith("late: ")]
    invalid = [d for d in dead if not d["error"].startswith("late: ")]
    assert Counter(d["payload"].encode() for d in invalid) == Counter(
        e.payload for e in events if not is_valid(e.payload, SCHEMA))
    late_by_step = {step: Counter(d["payload"].encode() for d in late if d["step"] == step)
                    for step in ("per_minute", "per_hour")}
    assert summary.records_in == EVENTS

    def rows(name: str) -> dict[tuple, tuple]:
        columns, found = views[name]
        out = {}
        for row in found:
            r = dict(zip(columns, row, strict=True))
            keys = tuple(r[c] for c in columns if c not in ("events", "max_ms", "_records"))
            out[keys] = (r["events"], r.get("max_ms"))
        return out

    for step, size, slide, group in (("per_minute", 60_000, None, ("tenant_id", "page")),
                                     ("per_hour", 3_600_000, 600_000, ("tenant_id",))):
        on_time = [json.loads(e.payload) for e in events
                   if is_valid(e.payload, SCHEMA) and not late_by_step[step][e.payload]]
        expected: dict[tuple, list[int]] = defaultdict(list)
        for r in on_time:
            windows = assign_windows(r["ts"], "sliding" if slide else "tumbling", size, slide)
            for start, end in windows:
                expected[(*(r[g] for g in group), text(start), text(end))].append(r["latency_ms"])
        want = {k: (len(v), max(v) if step == "per_hour" else None) for k, v in expected.items()}
        for name in (("per_minute_a", "per_minute_b") if step == "per_minute" else ("per_hour",)):
            assert rows(name) == want, name
        # accounting per aggregate: every record is aggregated, dead-lettered or late for it
        assert len(on_time) + len(invalid) + sum(late_by_step[step].values()) == EVENTS
