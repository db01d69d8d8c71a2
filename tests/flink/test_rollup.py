"""Roll-ups: an aggregate reading an aggregate (``from: per_minute``) with windows a multiple of
its windows (an hour of minutes here), its measures written over the record fields, computed
from the finer step's parts.
Against the plain-Python reference over the same records: exact measures equal, sketches within
their documented bound, late records (merged into finer windows after they fired) included; and
measures the finer step cannot give refused at their line."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.schemas.errors import SpecError

from tests.flink.test_sketch_measures import _ms, events
from tests.jobfiles import ROOT, embedded_view

pytestmark = pytest.mark.flink

SPEC = f"""job: rollup
parallelism: 2
source:
  kafka: {{topic: clicks, group: rollup}}
  format: {{json: {ROOT / "schemas" / "click.schema.json"}}}
  event_time: {{field: ts, max_out_of_orderness: 5s}}
steps:
  - validate: {{}}
  - aggregate:
      id: per_minute
      group_by: [tenant_id, page]
      window: {{tumbling: 1m}}
      allowed_lateness: 30s
      keep_sketch: true
      measures:
        events: count()
        total_bytes: sum(bytes)
        avg_ms: avg(latency_ms)
        min_ms: min(latency_ms)
        max_ms: max(latency_ms)
        users: approx_count_distinct(user_id)
        users_exact: count_distinct(user_id)
        p95_ms: percentile(latency_ms, 0.95)
        first_user: first(user_id)
        top_pages: top_k(page, 3)
  - aggregate:
      id: per_hour
      from: per_minute
      group_by: [tenant_id]
      window: {{tumbling: 1h}}
      measures:
        events: count()
        total_bytes: sum(bytes)
        avg_ms: avg(latency_ms)
        max_ms: max(latency_ms)
        users: approx_count_distinct(user_id)
        users_exact: count_distinct(user_id)
        p50_ms: percentile(latency_ms, 0.5)
        p99_ms: percentile(latency_ms, 0.99)
        first_user: first(user_id)
        pages: top_k(page, 2)
sinks:
  - postgres: {{table: per_minute, from: per_minute}}
  - postgres: {{table: per_hour, from: per_hour}}
dead_letter: {{kafka: {{topic: clicks.dlq}}}}
"""


def write(tmp_path: Path, spec: str = SPEC) -> tuple[Path, Path]:
    job = tmp_path / "rollup.yaml"
    job.write_text(spec)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n")
    return job, profiles


@pytest.mark.parametrize("lateness", ["30s", "0s"])
def test_an_hourly_rollup_of_the_minute_view_equals_the_measures_over_the_records(tmp_path: Path,
                                                                                  lateness: str) -> None:
    # three hours; with lateness, 3% behind the watermark: late parts of minute windows that had fired
    records = events(50_000, seed=11, behind=0.03 if lateness == "30s" else 0.0, span_ms=3 * 3_600_000)
    job, profiles = write(tmp_path, SPEC.replace("allowed_lateness: 30s", f"allowed_lateness: {lateness}"))
    summary, rows = embedded_view(job, profiles, records, view="per_hour")
    assert summary.dead_lettered == 0 and summary.late == 0
    windows: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        windows[(r["tenant_id"], r["ts"] - r["ts"] % 3_600_000)].append(r)
    got = {(r["tenant_id"], _ms(r["window_start"])): r for r in rows}
    assert set(got) == set(windows) and len(got) >= 15
    worst_hll = worst_dd = 0.0
    for key, rs in windows.items():
        row, latencies = got[key], sorted(float(r["latency_ms"]) for r in rs)
        ordered = sorted(rs, key=lambda r: r["ts"])
        assert row["events"] == len(rs) == row["_records"]
        assert row["total_bytes"] == sum(r["bytes"] for r in rs)
        assert row["avg_ms"] == pytest.approx(sum(r["latency_ms"] for r in rs) / len(rs), rel=1e-12)
        assert row["max_ms"] == max(r["latency_ms"] for r in rs)
        users = len({r["user_id"] for r in rs})
        assert row["users_exact"] == users
        worst_hll = max(worst_hll, abs(row["users"] - users) / users)
        if users <= 1024:
            assert row["users"] == users
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            exact = latencies[int(q * (len(latencies) - 1))]
            worst_dd = max(worst_dd, abs(row[name] - exact) / exact)
        first = [r for r in ordered if r["ts"] == ordered[0]["ts"]]
        assert row["first_user"] in {r["user_id"] for r in first}  # the embedded source has no offsets
        counts = Counter(r["page"] for r in rs)
        want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:2]
        assert json.loads(row["pages"]) == [{"value": v, "count": n} for v, n in want]
    # the minute view keeps its sketches (base64 in the embedded store): they read back to its measures
    from headrace.connectors.embedded import EmbeddedStore
    from headrace.operators.sketches import distinct_count, quantile

    store = EmbeddedStore(tmp_path / "local")
    columns, minute_rows = store.rows("per_minute")
    store.close()
    minutes = [dict(zip(columns, r, strict=True)) for r in minute_rows]
    assert minutes and all(quantile(m["latency_ms_dd_sketch"], 0.95) == m["p95_ms"]
                           and distinct_count(m["user_id_hll_sketch"]) == m["users"] for m in minutes)
    print(f"{len(got)} hourly windows from {summary.view_updates} view updates; worst relative error: "
          f"approx_count_distinct {worst_hll:.3%}, percentile {worst_dd:.3%}")
    assert worst_hll <= 0.0325 and worst_dd <= 0.01 + 1e-9


@pytest.mark.parametrize(("rollup_line", "written", "said"), [
    ("        pages: top_k(page, 2)", "        pages: top_k(user_id, 2)", "keeps no top_k of 'user_id'"),
    ("        max_ms: max(latency_ms)", "        max_ms: min(bytes)", "has no min(bytes)"),
    ("        users: approx_count_distinct(user_id)", "        users: approx_count_distinct(page)",
     "keeps no approx_count_distinct of 'page'"),
    ("      window: {tumbling: 1h}", "      window: {tumbling: 90s}", "a whole number of its windows"),
    ("      group_by: [tenant_id]", "      group_by: [user_id]", "'user_id' is not one"),
])
def test_a_measure_or_window_the_finer_step_cannot_give_is_refused_at_its_line(
        tmp_path: Path, rollup_line: str, written: str, said: str) -> None:
    finer, coarser = SPEC.split("      id: per_hour\n")
    assert rollup_line in coarser
    job, _ = write(tmp_path, finer + "      id: per_hour\n" + coarser.replace(rollup_line, written, 1))
    with pytest.raises(SpecError) as refused:
        build_plan(parse_job(job))
    text = str(refused.value)
    line = int(text.split(":")[1])
    assert job.read_text().splitlines()[line - 1] == written and said in text and "\n" not in text, text


def test_a_value_a_rollups_sink_cannot_store_is_refused_per_record_by_the_finer_step(tmp_path: Path) -> None:
    """first(user_id) of the hourly roll-up stores a record's user_id as it is: a NUL in it is a
    dead letter of the minute step, named after the roll-up's sink, not a row PostgreSQL refuses."""
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.profiles import load_profile

    job, _ = write(tmp_path)
    profiles = tmp_path / "service.yaml"
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:1'}\n"
                        "    postgres: {host: 127.0.0.1, port: 1, database: d, user: u, password: p}\n")
    sql = "\n".join(compile_job(build_plan(parse_job(job)), load_profile("svc", profiles)).statements)
    views = sql.split("CREATE TEMPORARY VIEW")
    unstorable = next(s for s in views if s.lstrip().startswith("`hr_per_minute_unstorable`"))
    assert "'sink.postgres.per_hour'" in unstorable and "'user_id'" in unstorable, unstorable[:2000]
