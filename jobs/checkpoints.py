"""Where a job's state lives between runs: retained Flink checkpoints under the profile's directory.

Every run against real services checkpoints (RocksDB, incremental) to
``<state.checkpoints>/<job name>/<Flink job id>/chk-<n>``, and Flink keeps the latest ones when the
job fails or is cancelled. Running the same job again finds the newest completed checkpoint
there and restores from it: source offsets, the late judgement's per-partition maxima and the
open windows all come back together. ``--fresh`` forgets them and reads the topic from the start.

A job that finishes (a bounded run) has nothing left to resume, so its directory is emptied.

>>> store = CheckpointStore(Path("/tmp/headrace-doctest-ckpt"), "page-activity")
>>> store.latest() is None
True
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class RetainedCheckpoint:
    """One completed checkpoint on disk (``path`` is the ``chk-<n>`` directory)."""

    path: Path
    flink_job_id: str
    number: int
    completed_at: datetime

    def describe(self) -> str:
        return (f"checkpoint {self.number} of Flink job {self.flink_job_id[:8]}… "
                f"({self.completed_at:%Y-%m-%d %H:%M:%S} UTC)")


@dataclass(frozen=True)
class CheckpointStore:
    """The checkpoints of one job under a local directory."""

    root: Path
    job: str

    @property
    def directory(self) -> Path:
        return self.root / self.job

    def retained(self) -> list[RetainedCheckpoint]:
        """Completed checkpoints, oldest first (a completed one has its ``_metadata`` file)."""
        found = []
        for metadata in self.directory.glob("*/chk-*/_metadata"):
            chk = metadata.parent
            try:
                number = int(chk.name.removeprefix("chk-"))
                when = datetime.fromtimestamp(metadata.stat().st_mtime, tz=UTC)
            except (ValueError, OSError):
                continue
            found.append(RetainedCheckpoint(chk, chk.parent.name, number, when))
        return sorted(found, key=lambda c: (c.completed_at, c.number))

    def latest(self) -> RetainedCheckpoint | None:
        retained = self.retained()
        return retained[-1] if retained else None

    def keep_only(self, keep: RetainedCheckpoint | None) -> None:
        """Remove every earlier run's directory but the one ``keep`` lives in (None: all)."""
        if not self.directory.exists():
            return
        for run in self.directory.iterdir():
            if run.is_dir() and (keep is None or run != keep.path.parent):
                shutil.rmtree(run, ignore_errors=True)

    def forget(self) -> None:
        self.keep_only(None)
