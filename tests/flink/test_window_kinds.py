"""Sliding and session windows end to end (embedded profile), against plain-Python references."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from headrace.operators.aggregate import assign_windows, merge_sessions

from tests.jobfiles import embedded_view
from tests.reference import utc

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
START = 1_767_225_600_000


def job_with_window(tmp_path: Path, window: str, lateness: str = "0s") -> tuple[Path, Path]:
    text = (ROOT / "jobs" / "page_activity.yaml").read_text()
    text = (text.replace("window: {tumbling: 1m}", f"window: {window}")
            .replace("allowed_lateness: 30s", f"allowed_lateness: {lateness}")
            .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    job = tmp_path / "job.yaml"
    job.write_text(text)
    data_dir = tmp_path / "local"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n"
                        "    flink: {parallelism.default: '2'}\n")
    return job, profiles


def run(job: Path, profiles: Path, events: list[dict]) -> dict[tuple, tuple]:
    summary, rows = embedded_view(job, profiles, events)
    assert summary.dead_lettered == 0 and summary.late == 0
    return {(r["tenant_id"], r["page"], r["window_start"], r["window_end"]): (r["events"], r["max_ms"]) for r in rows}


def text(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def event(i: int, ts: int) -> dict:
    return {"tenant_id": f"t{i % 2}", "user_id": f"u{i}", "page": f"/p{i % 3}", "ts": ts, "latency_ms": i % 97}


def test_sliding_windows_count_each_record_in_every_window(tmp_path: Path) -> None:
    job, profiles = job_with_window(tmp_path, "{sliding: {size: 2m, slide: 30s}}")
    events = [event(i, START + i * 250) for i in range(2400)]  # 10 minutes, in order
    expected: dict[tuple, list[int]] = defaultdict(list)
    for e in events:
        for start, end in assign_windows(e["ts"], "sliding", 120_000, 30_000):
            expected[(e["tenant_id"], e["page"], text(start), text(end))].append(e["latency_ms"])
    got = run(job, profiles, events)
    assert got == {k: (len(v), max(v)) for k, v in expected.items()}


def test_session_windows_split_at_gaps(tmp_path: Path) -> None:
    job, profiles = job_with_window(tmp_path, "{session: {gap: 30s}}")
    # bursts of activity separated by silences longer than the gap; one key also gets a short pause
    events = []
    for i in range(1800):
        ts = START + i * 200 + (i // 300) * 90_000
        events.append(event(i, ts))
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        by_key[(e["tenant_id"], e["page"])].append(e)
    expected = {}
    for (tenant, page), es in by_key.items():
        for start, end in merge_sessions([e["ts"] for e in es], 30_000):
            inside = [e["latency_ms"] for e in es if start <= e["ts"] < end]
            expected[(tenant, page, text(start), text(end))] = (len(inside), max(inside))
    got = run(job, profiles, events)
    assert len(expected) == 6 * 6 and got == expected
