"""The embedded run's class-data archive (jobs/classarchive.py), through the CLI with a real JVM.

The first `headrace run` writes the archive when it ends its JVM; the next run maps it (the JVM's
own class-loading log says where each class came from) and gives the same views and outputs. A
part left by a run killed while writing is never used and is cleared.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from headrace.jobs import classarchive

from tests.jobfiles import cli_embedded_run

pytestmark = pytest.mark.flink


def _outputs(local: Path) -> tuple[list[tuple], list[str], list[str]]:
    with sqlite3.connect(local / "views.sqlite") as db:
        rows = sorted(db.execute("SELECT * FROM page_activity_1m").fetchall())

    def lines(name: str) -> list[str]:  # failed_at is the wall clock of the run
        return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "failed_at"}, sort_keys=True)
                      for line in (local / name).read_text().splitlines())

    return rows, lines("clicks.dlq.jsonl"), lines("clicks.late.jsonl")


def test_the_first_run_keeps_an_archive_and_the_next_run_starts_from_it(tmp_path: Path) -> None:
    cds = tmp_path / "cds"
    cds.mkdir()
    stale = cds / "0123456789abcdef.999999999.part"  # a writer killed mid-write: no such process
    stale.write_bytes(classarchive.DYNAMIC_MAGIC + b"truncated")
    env = {**os.environ, "HEADRACE_CDS_DIR": str(cds),
           "JVM_ARGS": f"-Xlog:class+load=info:file={tmp_path}/classes-%p.log"}
    env.pop("HEADRACE_EMBEDDED_CDS", None)
    run = cli_embedded_run(tmp_path, env)

    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "saving the JVM's loaded classes" in first.stderr
    archives = list(cds.iterdir())
    assert len(archives) == 1 and archives[0].suffix == ".jsa", (archives, first.stderr[-2000:])  # stale part gone
    assert archives[0].read_bytes()[:4] == classarchive.DYNAMIC_MAGIC
    want = _outputs(tmp_path / "local")
    for log in tmp_path.glob("classes-*.log"):
        log.unlink()

    second = run()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "saving" not in second.stderr and list(cds.iterdir()) == archives
    logs = list(tmp_path.glob("classes-*.log"))
    assert len(logs) == 1
    from_archive = sum("source: shared objects file (top)" in line for line in logs[0].read_text().splitlines())
    assert from_archive > 5_000, from_archive  # Flink's, its planner's and Calcite's classes
    assert _outputs(tmp_path / "local") == want
    assert want[0] and want[1]  # the sample has views and dead letters


def test_a_caller_in_its_own_interpreter_never_writes_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyflink import java_gateway

    monkeypatch.setenv("HEADRACE_CDS_DIR", str(tmp_path))
    monkeypatch.delenv("HEADRACE_EMBEDDED_CDS", raising=False)
    monkeypatch.setattr(java_gateway, "_gateway", None)
    monkeypatch.setattr(classarchive, "_may_write", False)
    monkeypatch.setattr(classarchive, "_writing", None)
    assert classarchive.jvm_args(["-Dx=1"]) == []  # no archive yet, and not the CLI's own process
    monkeypatch.setattr(classarchive, "_may_write", True)
    writing = classarchive.jvm_args(["-Dx=1"])
    assert writing[0].startswith(f"-XX:ArchiveClassesAtExit={tmp_path}/") and writing[0].endswith(".part")
    key = Path(writing[0].split("=", 1)[1]).name.split(".")[0]
    (tmp_path / f"{key}.jsa").write_bytes(classarchive.DYNAMIC_MAGIC)
    assert classarchive.jvm_args(["-Dx=1"])[0] == f"-XX:SharedArchiveFile={tmp_path / key}.jsa"
    assert classarchive.jvm_args(["-Dx=2"])[0].startswith("-XX:ArchiveClassesAtExit=")  # other flags, other key
    monkeypatch.setenv("HEADRACE_EMBEDDED_CDS", "off")
    assert classarchive.jvm_args(["-Dx=1"]) == []
    monkeypatch.delenv("HEADRACE_EMBEDDED_CDS")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HEADRACE_CDS_DIR", str(tmp_path / "a-file" / "cds"))  # a cache that cannot be made
    assert classarchive.jvm_args(["-Dx=1"]) == []
