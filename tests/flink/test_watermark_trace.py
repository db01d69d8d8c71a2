"""The benchmark's watermark clock: ``HEADRACE_TRACE_WATERMARKS`` has Headrace's source note each
new watermark and when it came, and ``watermark_passes`` turns those notes into the moment the
job's watermark passed each window's end (the latency the speed issue defines: watermark past a
window's end → its row visible)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.bench.run import checkpoint_line, watermark_passes, window_checkpoints
from tests.jobfiles import cli_embedded_run

pytestmark = pytest.mark.flink
LONG_MAX = 2**63 - 1


def test_a_real_run_notes_rising_watermarks_that_trail_its_events(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    env = {**os.environ, "HEADRACE_TRACE_WATERMARKS": str(traces), "HEADRACE_EMBEDDED_CDS": "off"}
    done = cli_embedded_run(tmp_path, env)()
    assert done.returncode == 0, done.stderr[-3000:]

    stamps = set()
    for line in (tmp_path / "local" / "clicks.jsonl").read_text().splitlines():
        try:
            ts = json.loads(line).get("ts")
        except ValueError:
            continue
        if isinstance(ts, int):
            stamps.add(ts)
    files = list(traces.glob("watermarks-*.tsv"))
    assert len(files) == 2  # one per source subtask (parallelism 2)
    finite = []
    for file in files:
        rows = [tuple(int(x) for x in line.split("\t")) for line in file.read_text().splitlines()]
        assert rows, file
        marks = [w for _, w, _ in rows]
        walls = [t for _, _, t in rows]
        assert marks == sorted(set(marks)) and walls == sorted(walls)  # each new watermark once, in order
        assert marks[-1] == LONG_MAX  # the end of the input
        finite += [w for w in marks if w != LONG_MAX]
    # each one 5 s (the out-of-orderness) and 1 ms behind an event the source had read
    assert finite and all(w + 5_001 in stamps for w in finite)


def test_a_window_end_passes_when_the_last_subtask_passes_it(tmp_path: Path) -> None:
    (tmp_path / "watermarks-j-0-0.tsv").write_text("0\t4998\t1000000\n0\t4999\t1000100\n0\t12000\t1000200\n")
    (tmp_path / "watermarks-j-1-0.tsv").write_text("1\t3000\t1000050\n1\t5100\t1000300\n1\t9999\t1000400\n")
    passes = watermark_passes(tmp_path)
    # end 5000 fires at watermark 4999: subtask 0 at 1000.1 s, subtask 1 at 1000.3 s -> 1000.3
    # end 10000 fires at 9999: subtask 0 at 1000.2 s, subtask 1 at 1000.4 s; end 15000 never passed
    assert passes == {5000: 1000.3, 10000: 1000.4}
    assert watermark_passes(tmp_path / "none") == {}


def test_a_window_meets_a_checkpoint_that_runs_between_its_watermark_and_its_row() -> None:
    passed = {5000: 1000.0, 10000: 1005.0, 15000: 1010.0}
    slowest = {5000: 0.25, 10000: 0.05, 15000: 0.30}
    # (triggered, last acknowledged) in ms: one ends as the first window's watermark passes, one
    # starts after the second window's row was visible, one runs through the third window
    checkpoints = ((999_900, 1_000_000), (1_005_060, 1_005_100), (1_010_100, 1_010_200))
    windows = window_checkpoints(slowest, passed, checkpoints)
    assert [(end, met) for end, _, met, _ in windows] == [(5000, True), (10000, False), (15000, True)]
    assert checkpoint_line(windows).startswith("2 of 3 windows over 200 ms (watermark→last row; the first 250 ms), "
                                               "2 of them during a checkpoint; 2 windows met a checkpoint")
