"""The key of a kept plan (jobs/plancache.py): what changes a plan changes the key; what only
changes between runs (ports, directories, secret values) does not, and no secret is hashed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from headrace.jobs import plancache

TABLE = ("CREATE TEMPORARY TABLE `hr_sink` (`page` STRING) WITH ('connector' = 'jdbc', "
         "'url' = 'jdbc:postgresql://127.0.0.1:5432/postgres', 'password' = '{password}')")
INSERT = "INSERT INTO `hr_sink` SELECT page FROM hr_source WHERE {where}"
SETTINGS = {"parallelism.default": "2", "table.local-time-zone": "UTC", "rest.port": "20001",
            "execution.checkpointing.dir": "file:///tmp/a/checkpoints", "python.executable": "/usr/bin/python3",
            "state.backend.rocksdb.log.dir": "/tmp/log-1"}


@pytest.fixture()
def jar(tmp_path: Path) -> Path:
    path = tmp_path / "connector-1.0.jar"
    path.write_bytes(b"PK jar")
    return path


def key(jar: Path, password: str = "s3cret", where: str = "page <> ''", **settings: str) -> str:
    return plancache.key((TABLE.format(password=password), INSERT.format(where=where)),
                         {**SETTINGS, **settings}, [jar])


def test_what_changes_a_plan_changes_its_key(jar: Path) -> None:
    base = key(jar)
    assert key(jar) == base
    assert key(jar, where="page = '/'") != base  # the SQL
    assert key(jar, **{"parallelism.default": "1"}) != base  # a setting
    assert key(jar, **{"table.exec.mini-batch.enabled": "true"}) != base  # a setting added
    jar.write_bytes(b"PK another jar")  # a jar's content (its size or time)
    assert key(jar) != base


def test_ports_directories_and_secret_values_do_not_change_the_key(jar: Path) -> None:
    base = key(jar)
    assert key(jar, **{"rest.port": "20002", "execution.checkpointing.dir": "file:///tmp/b/checkpoints",
                       "state.backend.rocksdb.log.dir": "/tmp/log-2", "python.executable": "/venv/bin/python",
                       "execution.state-recovery.path": "file:///tmp/a/checkpoints/chk-3"}) == base
    # a secret is not hashed, so the key cannot be used to guess it, and a new password needs no new
    # plan: a plan holds only the names of the job's temporary tables, their options come from the session
    assert key(jar, password="an0ther") == base
    assert key(jar, **{"properties.sasl.jaas.config": "x"}) == key(jar, **{"properties.sasl.jaas.config": "y"})


def test_a_plan_is_kept_loaded_and_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(tmp_path / "plans"))
    assert plancache.load("page-activity", "k1") is None
    plancache.save("page-activity", "k1", '{"flinkVersion": "2.3"}')
    assert plancache.load("page-activity", "k1") == '{"flinkVersion": "2.3"}'
    assert [p.name for p in (tmp_path / "plans").iterdir()] == ["page-activity-k1.json"]  # no part file left
    plancache.forget("page-activity", "k1")
    assert plancache.load("page-activity", "k1") is None
    monkeypatch.setenv("HEADRACE_PLAN_CACHE", "off")
    plancache.save("page-activity", "k2", "{}")
    assert plancache.load("page-activity", "k2") is None and not (tmp_path / "plans" / "page-activity-k2.json").exists()


def test_saving_removes_the_part_a_killed_run_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f"job-k0.json.part-{gone.pid}").write_text('{"nodes": [')
    plancache.save("job", "k1", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["job-k1.json"]


def test_only_the_newest_plans_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(tmp_path))
    monkeypatch.setattr(plancache, "KEEP", 3)
    for n in range(5):
        plancache.save("job", f"k{n}", "{}")
        os.utime(tmp_path / f"job-k{n}.json", ns=(n * 10**9, n * 10**9))  # a distinct time each, oldest first
    plancache.save("job", "k5", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-k3.json", "job-k4.json", "job-k5.json"]


def test_a_directory_that_cannot_be_written_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HEADRACE_PLAN_DIR", str(blocker / "plans"))
    plancache.save("job", "k", "{}")  # no error: the job runs, planned each time
    assert plancache.load("job", "k") is None


def test_every_statement_of_a_compiled_job_is_in_its_key(tmp_path: Path) -> None:
    """A view changes the plan as much as a table does (a schema's checks, a mask rule, a filter
    live in views): a change of any one statement gives another key."""
    from dataclasses import replace

    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile
    from headrace.jobs.runner import kept_plan_key

    from tests.jobfiles import example_job

    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  p:\n    kafka: {bootstrap_servers: '127.0.0.1:9092'}\n"
                        "    postgres: {host: 127.0.0.1, port: 5432, database: postgres, user: postgres}\n")
    compiled = compile_job(build_plan(parse_job(example_job(tmp_path, "clicks"))), load_profile("p", profiles))
    assert compiled.views and compiled.tables and compiled.inserts and compiled.functions
    base = kept_plan_key(compiled, SETTINGS, [])
    assert kept_plan_key(compiled, SETTINGS, []) == base
    variants = {"checked_select": compiled.checked_select + " AND TRUE"}
    for name in ("functions", "tables", "views", "inserts"):
        statements = getattr(compiled, name)
        for i, statement in enumerate(statements):
            variants[f"{name}[{i}]"] = (*statements[:i], statement + " ", *statements[i + 1:])
    for where, value in variants.items():
        changed = replace(compiled, **{where.split("[")[0]: value})
        assert kept_plan_key(changed, SETTINGS, []) != base, where
