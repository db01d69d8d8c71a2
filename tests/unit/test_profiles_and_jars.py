"""Profiles interpolate secrets from the environment; connector jars are checked against the lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from headrace.connectors import jars
from headrace.connectors.postgres import PostgresConnection
from headrace.jobs.profiles import load_profile
from headrace.schemas.errors import JarError, SpecError

PROFILES = """profiles:
  local:
    embedded: {data_dir: /tmp/x}
  prod:
    kafka: {bootstrap_servers: "k:9092"}
    postgres: {host: db, database: analytics, user: headrace, password: "${HR_TEST_PW}"}
"""


def test_local_profile_is_embedded_by_default() -> None:
    profile = load_profile()
    assert profile.embedded is not None and profile.kafka is None


def test_secret_comes_from_the_environment_and_stays_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILES)
    monkeypatch.setenv("HR_TEST_PW", "s3cret")
    profile = load_profile("prod", path)
    postgres = profile.section(PostgresConnection)
    assert postgres.conninfo()["password"] == "s3cret"
    assert "s3cret" not in repr(profile)
    assert postgres.jdbc_url == "jdbc:postgresql://db:5432/analytics"


def test_missing_environment_variable_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILES)
    monkeypatch.delenv("HR_TEST_PW", raising=False)
    with pytest.raises(SpecError, match=r"p.yaml:6: profile 'prod' needs environment variable HR_TEST_PW; "
                                        r"export HR_TEST_PW=\.\.\. before running"):
        load_profile("prod", path)


def test_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILES)
    with pytest.raises(SpecError, match="no profile 'staging'; known profiles: local, prod"):
        load_profile("staging", path)


def test_lock_pins_every_connector_jar() -> None:
    lock = jars.load_lock()
    assert {j.file for j in lock.jars} == {
        "flink-connector-kafka-4.0.1-2.0.jar", "kafka-clients-3.9.1.jar",
        "flink-connector-jdbc-core-4.0.0-2.0.jar", "flink-connector-jdbc-postgres-4.0.0-2.0.jar",
        "postgresql-42.7.3.jar"}
    assert all(len(j.sha256) == 64 for j in lock.jars)
    kafka = next(j for j in lock.jars if j.file.startswith("flink-connector-kafka"))
    assert kafka.maven_path() == ("org/apache/flink/flink-connector-kafka/4.0.1-2.0/"
                                  "flink-connector-kafka-4.0.1-2.0.jar")


def test_missing_jar_is_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(tmp_path))
    with pytest.raises(JarError, match=r"connector jar flink-connector-kafka-4\.0\.1-2\.0\.jar is missing .*"
                                       r"run 'headrace jars'"):
        jars.required_jars({"kafka"})


def test_altered_jar_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(tmp_path))
    for jar in jars.load_lock().jars:
        (tmp_path / jar.file).write_bytes(b"not the pinned jar")
    with pytest.raises(JarError, match="does not match its pinned SHA-256"):
        jars.required_jars({"kafka"})


def test_maven_download_with_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Maven repository (here a file:// one) serving a different file is refused, not cached."""
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(cache))
    for jar in jars.load_lock().jars:
        target = repo / jar.maven_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"tampered")
    with pytest.raises(JarError, match=r"has SHA-256 .* but flink-conf/jars.lock pins"):
        jars.fetch(maven_repo=repo.as_uri(), say=lambda _: None)
    assert not any(cache.iterdir())


def test_maven_download_of_the_pinned_jars_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same checksums hold whichever source the jars come from."""
    source = jars.cache_dir()
    if not all((source / j.file).exists() for j in jars.load_lock().jars):
        pytest.skip("the jar cache is empty; run 'headrace jars' first")
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    for jar in jars.load_lock().jars:
        target = repo / jar.maven_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / jar.file).read_bytes())
    monkeypatch.setenv("HEADRACE_JARS_DIR", str(cache))
    jars.fetch(maven_repo=repo.as_uri(), say=lambda _: None)
    assert len(jars.required_jars({"kafka", "postgres"})) == 5


def test_jvm_functions_without_javac_are_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.operators import jvm

    monkeypatch.setenv("HEADRACE_JARS_DIR", str(tmp_path))
    monkeypatch.setattr(jvm.shutil, "which", lambda _: None)
    with pytest.raises(JarError) as info:
        jvm.build(say=lambda _: None)
    assert str(info.value).startswith("cannot build Headrace's JVM functions: 'javac' is not installed")
    assert "openjdk-17-jdk-headless" in str(info.value)


def test_jvm_functions_jar_is_named_after_its_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.operators import jvm

    monkeypatch.setenv("HEADRACE_JARS_DIR", str(tmp_path))
    before = jvm.jar_path()
    copy = tmp_path / "src"
    import shutil

    shutil.copytree(jvm.SOURCES, copy)
    monkeypatch.setattr(jvm, "SOURCES", copy)
    assert jvm.jar_path() == before  # same sources, same jar
    source = next(copy.rglob("EventTime.java"))
    source.write_text(source.read_text() + "\n// edited\n")
    assert jvm.jar_path() != before  # an edit builds a new one, never a stale jar


def test_jvm_options_reach_this_process_jvm_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headrace's JVM options are in JVM_ARGS while PyFlink starts its gateway, and gone after:
    a session cluster started later from the same process (Flink's scripts read JVM_ARGS too) must
    not run with the embedded profile's first JIT tier only."""
    import os

    from headrace.jobs import classarchive, runner
    from pyflink import java_gateway

    seen: list[str | None] = []

    def gateway() -> None:
        seen.append(os.environ.get("JVM_ARGS"))
        if len(seen) == 3:
            raise RuntimeError("the JVM did not start")

    monkeypatch.setattr(java_gateway, "get_gateway", gateway)
    monkeypatch.setattr(classarchive, "jvm_args", lambda args: ["-XX:SharedArchiveFile=/x.jsa"])
    monkeypatch.delenv("HEADRACE_EMBEDDED_JIT", raising=False)
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g")
    runner.start_jvm(embedded=True)
    assert seen[-1] == "-Xmx1g -Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:SharedArchiveFile=/x.jsa"
    assert os.environ["JVM_ARGS"] == "-Xmx1g"
    monkeypatch.delenv("JVM_ARGS")
    runner.start_jvm(embedded=False)
    assert seen[-1] == ("-Duser.timezone=UTC -XX:Tier4InvocationThreshold=50000 -XX:Tier4CompileThreshold=60000 "
                        "-XX:Tier4BackEdgeThreshold=400000") and "JVM_ARGS" not in os.environ
    with pytest.raises(RuntimeError):
        runner.start_jvm(embedded=True)
    assert "JVM_ARGS" not in os.environ
    # the tests' own first-tier option (tests/conftest.py) gives the line a user's run has
    monkeypatch.setenv("JVM_ARGS", "-XX:TieredStopAtLevel=1")
    runner.start_jvm(embedded=True)
    assert seen[-1] == "-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:SharedArchiveFile=/x.jsa"
    runner.start_jvm(embedded=False)
    assert seen[-1] == "-Duser.timezone=UTC -XX:TieredStopAtLevel=1"
    # a user's own thresholds for the optimizing tier replace Headrace's
    monkeypatch.setenv("JVM_ARGS", "-XX:Tier4InvocationThreshold=5000")
    runner.start_jvm(embedded=False)
    assert seen[-1] == "-XX:Tier4InvocationThreshold=5000 -Duser.timezone=UTC"


def test_a_clusters_taskmanagers_get_the_jit_thresholds_of_a_local_run() -> None:
    from collections import defaultdict

    from headrace.jobs import cluster, runner

    config = cluster.flat_config(cluster.config_text(defaultdict(lambda: "1")))
    assert config["env.java.opts.taskmanager"].split() == list(runner.C2_THRESHOLDS)


def test_local_rocksdb_logs_go_to_a_directory_of_the_process_and_a_dead_ones_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from headrace.jobs import runner

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(runner, "_rocksdb_logs", None)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{runner.ROCKSDB_LOG_PREFIX}{done.stdout.strip()}-x1"
    living = tmp_path / f"{runner.ROCKSDB_LOG_PREFIX}1-x2"  # init's: alive
    for directory in (dead, living):
        directory.mkdir()
        (directory / "db_LOG").write_text("log")

    assert runner.rocksdb_log_dir({"state.backend.type": "hashmap"}) == {}
    assert runner.rocksdb_log_dir({"state.backend.type": "rocksdb", "state.backend.rocksdb.log.dir": "/x"}) == {}
    chosen = Path(runner.rocksdb_log_dir({"state.backend.type": "rocksdb"})["state.backend.rocksdb.log.dir"])

    assert chosen.is_dir() and chosen.parent == tmp_path
    assert chosen.name.startswith(f"{runner.ROCKSDB_LOG_PREFIX}{os.getpid()}-")
    assert not dead.exists() and living.exists()
    # one directory for every local job of the process
    assert runner.rocksdb_log_dir({"state.backend.type": "rocksdb"}) == {"state.backend.rocksdb.log.dir": str(chosen)}


def test_a_partial_file_of_a_writer_that_is_gone_is_removed(tmp_path: Path) -> None:
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process
    orphan = tmp_path / f"headrace-functions-0123.part-{gone.pid}"
    writing = tmp_path / f"headrace-functions-0123.part-{os.getpid()}"  # a writer that runs
    odd = tmp_path / "headrace-functions-0123.part-x"
    for path in (orphan, writing, odd):
        path.write_bytes(b"PK half a jar")
    jars.remove_orphaned_parts(tmp_path.glob("headrace-functions-*.part-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([writing.name, odd.name])
