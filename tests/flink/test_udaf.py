"""User-defined aggregates, Python (pandas Series, vectorized) and Java (an AggregateFunction in a
jar), both the README's examples (``operators/examples/``), on a Flink mini-cluster: in window
TVFs (no lateness), in windows that merge late records (30 s of lateness, 3% of the records behind
the watermark) and in a roll-up, each equal to the function over the window's records."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.operators import jvm
from headrace.operators.examples.scores import slow_share, weighted_score
from headrace.schemas.errors import SpecError

from tests.flink.test_sketch_measures import _ms, events
from tests.jobfiles import ROOT, embedded_view

pytestmark = pytest.mark.flink
EXAMPLES = ROOT / "operators" / "examples"

SPEC = f"""job: udafs
parallelism: 2
source:
  kafka: {{topic: clicks, group: udafs}}
  format: {{json: {ROOT / "schemas" / "click.schema.json"}}}
  event_time: {{field: ts, max_out_of_orderness: 5s}}
steps:
  - validate: {{}}
  - aggregate:
      id: per_minute
      group_by: [tenant_id, page]
      window: {{tumbling: 1m}}
      allowed_lateness: 30s
      jars: [udafs.jar]
      measures:
        events: count()
        score: udaf(headrace.operators.examples.scores.weighted_score, latency_ms, bytes)
        slow: udaf(headrace.operators.examples.scores.slow_share, latency_ms)
        java_score: udaf(com.example.WeightedScore, latency_ms, bytes)
  - aggregate:
      id: per_10m
      from: per_minute
      group_by: [tenant_id]
      window: {{tumbling: 10m}}
      jars: [udafs.jar]
      measures:
        events: count()
        score: udaf(headrace.operators.examples.scores.weighted_score, latency_ms, bytes)
        java_score: udaf(com.example.WeightedScore, latency_ms, bytes)
sinks:
  - postgres: {{table: per_minute, from: per_minute}}
  - postgres: {{table: per_10m, from: per_10m}}
dead_letter: {{kafka: {{topic: clicks.dlq}}}}
"""


def udafs_jar(folder: Path) -> Path:
    """The README's Java example, built as the README says."""
    classes = folder / "classes"
    javac, jar = shutil.which("javac"), shutil.which("jar")
    assert javac and jar
    subprocess.run([javac, "-nowarn", "--release", "11", "-cp", f"{jvm._flink_lib() / '*'}", "-d", str(classes),
                    str(EXAMPLES / "WeightedScore.java")], check=True)
    subprocess.run([jar, "cf", str(folder / "udafs.jar"), "-C", str(classes), "."], check=True)
    return folder / "udafs.jar"


@pytest.fixture(scope="module")
def jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return udafs_jar(tmp_path_factory.mktemp("udafs"))


def write(tmp_path: Path, spec: str, jar: Path) -> tuple[Path, Path]:
    (tmp_path / "udafs.jar").symlink_to(jar)
    job = tmp_path / "udafs.yaml"
    job.write_text(spec)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n")
    return job, profiles


def java_weighted(rows: list[dict]) -> float:
    weights = sum(float(r["bytes"]) for r in rows)
    return sum(r["latency_ms"] * float(r["bytes"]) for r in rows) / weights


@pytest.mark.parametrize("lateness", ["30s", "0s"])
def test_python_and_java_aggregates_equal_the_function_over_each_window(tmp_path: Path, lateness: str,
                                                                        jar: Path) -> None:
    spec = SPEC.replace("allowed_lateness: 30s", f"allowed_lateness: {lateness}")
    if lateness == "0s":  # no roll-up: the minute windows are window TVFs, in two phases
        spec = spec[:spec.index("  - aggregate:\n      id: per_10m")] + "sinks:\n  - postgres: {table: per_minute}\n" \
            + "dead_letter: {kafka: {topic: clicks.dlq}}\n"
    job, profiles = write(tmp_path, spec, jar)
    records = events(30_000, seed=3, behind=0.03 if lateness == "30s" else 0.0, span_ms=20 * 60_000)
    summary, rows = embedded_view(job, profiles, records, view="per_minute")
    assert summary.dead_lettered == 0 and summary.late == 0
    windows: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        windows[(r["tenant_id"], r["page"], r["ts"] - r["ts"] % 60_000)].append(r)
    got = {(r["tenant_id"], r["page"], _ms(r["window_start"])): r for r in rows}
    assert set(got) == set(windows)
    for key, rs in windows.items():
        row = got[key]
        assert row["events"] == len(rs)
        latency, size = pd.Series([r["latency_ms"] for r in rs]), pd.Series([r["bytes"] for r in rs])
        assert row["score"] == pytest.approx(weighted_score(latency, size), rel=1e-12)
        assert row["slow"] == pytest.approx(slow_share(latency), rel=1e-12)
        assert row["java_score"] == pytest.approx(java_weighted(rs), rel=1e-12)
    if lateness == "0s":
        return
    from headrace.connectors.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "local")
    columns, coarse = store.rows("per_10m")
    store.close()
    tens: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        tens[(r["tenant_id"], r["ts"] - r["ts"] % 600_000)].append(r)
    got = {(r[0], _ms(r[1])): dict(zip(columns, r, strict=True)) for r in coarse}
    assert set(got) == set(tens) and len(got) >= 10
    for key, rs in tens.items():
        row = got[key]
        assert row["events"] == len(rs)
        assert row["score"] == pytest.approx(weighted_score(pd.Series([r["latency_ms"] for r in rs]),
                                                            pd.Series([r["bytes"] for r in rs])), rel=1e-12)
        assert row["java_score"] == pytest.approx(java_weighted(rs), rel=1e-12)


@pytest.mark.parametrize(("written", "said"), [
    ("        slow: udaf(mypkg.aggs.nothing, latency_ms)", "is not a Python function: module 'mypkg.aggs' cannot"),
    ("        slow: udaf(headrace.operators.examples.scores.weighted_score, latency_ms)", "cannot take 1 arguments"),
    ("        slow: udaf(headrace.operators.examples.scores.slow_share, latency_ms, page)", "cannot take 2"),
    ("        slow: udaf(headrace.operators.examples.scores.nothing, latency_ms)", "has no function 'nothing'"),
    ("        slow: udaf(weighted_score, latency_ms)", "give its module too"),
    ("        slow: udaf(headrace.operators.examples.scores.slow_share, latency)", "latency"),
])
def test_a_udaf_that_cannot_be_found_or_called_is_refused_at_its_line(tmp_path: Path, written: str,
                                                                        said: str, jar: Path) -> None:
    line = "        slow: udaf(headrace.operators.examples.scores.slow_share, latency_ms)"
    job, _ = write(tmp_path, SPEC.replace(line, written), jar)
    with pytest.raises(SpecError) as refused:
        build_plan(parse_job(job))
    text = str(refused.value)
    at = int(text.split(":")[1])
    assert job.read_text().splitlines()[at - 1] == written and said in text and "\n" not in text, text
