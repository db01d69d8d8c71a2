"""The enrich step's persisted L1, as a user meets it: ``headrace run`` killed with ``kill -9`` while
it looks users up, then run again; the new workers' first batch is answered from L1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from headrace.connectors.embedded import topic_file
from headrace.jobs.sample import click_events, write_jsonl
from headrace.operators.enrich import STATS_DIR
from headrace.operators.lookup import LookupStats

from tests.flink.test_enrich import enrich_job

pytestmark = pytest.mark.integration


def stats(directory: Path) -> list[LookupStats]:
    return [LookupStats.from_json(p.read_text()) for p in directory.glob("page-activity.enrich.*.json")]


def test_a_rerun_after_kill_9_starts_with_the_keys_l1_had(tmp_path: Path) -> None:
    pytest.importorskip("rocksdict")
    job, profiles, users = enrich_job(tmp_path, "keep")
    job.write_text(job.read_text().replace("      on_miss: keep",
                                           "      cache: {l1: {persist: l1cache}}\n      on_miss: keep"))
    write_jsonl(topic_file(tmp_path / "local", "clicks"), click_events(200_000, seed=5))
    command = [sys.executable, "-m", "headrace.jobs.cli", "run", str(job), "--profiles", str(profiles)]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not any(s.batches for s in stats(tmp_path / STATS_DIR)):  # a worker has looked up a batch
            assert first.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "no lookup within 180 s"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    cold = stats(tmp_path / STATS_DIR)
    assert sum(s.l1_loaded for s in cold) == 0 and sum(s.first_batch_l1_hits for s in cold) == 0
    assert sorted(p.name for p in (tmp_path / "l1cache").iterdir())[:1] == ["page-activity.enrich.0"]

    for old in (tmp_path / STATS_DIR).iterdir():
        old.unlink()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    warm = stats(tmp_path / STATS_DIR)
    assert warm, done.stdout[-2000:]
    loaded = sum(s.l1_loaded for s in warm)
    keys, hits = sum(s.first_batch_keys for s in warm), sum(s.first_batch_l1_hits for s in warm)
    assert loaded > 0 and keys > 0
    # what the killed workers had cached answers the new workers' first batches (the cold run's
    # first batches had no L1 hit at all): every persisted key asked for again is an L1 hit
    assert hits >= 0.9 * min(loaded, keys), (loaded, keys, hits)
