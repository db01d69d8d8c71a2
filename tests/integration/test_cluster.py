"""Jobs on a standalone session cluster (``headrace cluster up``), through the CLI: submit, jobs,
stop with a savepoint and resume at another parallelism, the Python engine on TaskManagers, and
kill -9 of the TaskManager running a job. Each ends with the view equal to the reference."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from headrace.jobs.cluster import ClusterClient, ClusterDirs, add_taskmanager, down, up
from headrace.jobs.monitor import JobWatch
from headrace.jobs.runner import free_port
from headrace.jobs.sample import click_events

from tests.integration.clirun import CliRun
from tests.integration.test_enrich_stores import lookup_stats, own_name, read_ahead_job
from tests.integration.test_failures import PARTITIONS, SCHEMA, assert_exact, fault_job, final_offsets, row_count
from tests.kafkautil import offsets_arg, produce_placed
from tests.reference import expected_outcome
from tests.services import Broker, Postgres, RedisServer, listening_on

pytestmark = pytest.mark.integration


def _free_range(size: int = 10) -> int:
    """The first port of ``size`` free 127.0.0.1 ports below the ephemeral range."""
    import socket

    for base in range(23_000, 32_000, size):
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free range of ports for the Prometheus reporters")


PROMETHEUS = _free_range()  # the JobManager takes the first, the first TaskManager the next


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_cluster_serves_prometheus_metrics_on_loopback_only(cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    assert "flink_jobmanager_" in scrape(PROMETHEUS)
    # 127.0.0.1 (0100007F), or the same through an IPv6 socket (::ffff:127.0.0.1); never 0.0.0.0 or ::
    assert listening_on(PROMETHEUS) and listening_on(PROMETHEUS) <= {"0100007F", "0000000000000000FFFF00000100007F"}


def test_the_taskmanagers_run_with_headraces_jit_thresholds(cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    from headrace.jobs.runner import C2_THRESHOLDS

    pids = cluster[1].taskmanager_pids()
    assert len(pids) == 2
    for pid in pids:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert set(C2_THRESHOLDS) <= set(args), args


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterClient, ClusterDirs]]:
    root = tmp_path_factory.mktemp("cluster")
    dirs = ClusterDirs(root)
    port = free_port()
    # two TaskManager processes, as 'headrace cluster up --taskmanagers 2' starts them
    client = up(dirs, rest_port=port, rpc_port=free_port(), checkpoints=(root / "ckpt").as_uri(),
                savepoints=(root / "sp").as_uri(), prometheus_port=PROMETHEUS, say=lambda _: None, taskmanagers=2)
    try:
        yield client, dirs
    finally:
        down(dirs, say=lambda _: None)


@pytest.fixture()
def cluster_profiles(profiles_file: Path, cluster: tuple[ClusterClient, ClusterDirs]) -> Path:
    text = profiles_file.read_text().replace("    flink: {parallelism.default: \"2\", ",
                                             f"    cluster: {{rest: \"{cluster[0].rest_url}\"}}\n    flink: {{")
    profiles_file.write_text(text)
    return profiles_file


def cli(*args: str) -> str:
    run = CliRun(*args)
    code = run.finish(180)
    assert code == 0, run.output[-3000:]
    return run.output.strip().splitlines()[-1]


def wait_finished(client: ClusterClient, job_id: str, timeout_s: float = 180) -> None:
    """Until the cluster says the job FINISHED; fails at once if it failed or was cancelled."""
    deadline = time.monotonic() + timeout_s
    while (state := client.get(f"/jobs/{job_id}")["state"]) != "FINISHED":
        assert state not in ("FAILED", "CANCELED"), f"job {job_id} {state}"
        assert time.monotonic() < deadline, f"job {job_id} did not finish within {timeout_s:.0f}s"
        time.sleep(0.5)


def submitted_on_half(tmp_path: Path, broker: Broker, pg: Postgres, profiles: Path, name: str, seed: int,
                      *submit: str) -> tuple[Path, str, list[tuple[int, bytes]], list[list[Any]]]:
    """Half of 30,000 events produced and the job submitted (unbounded) with view rows written;
    returns the job file, its id, what was produced, and both halves."""
    broker.create_topic(name, partitions=PARTITIONS)
    events = list(click_events(30_000, seed=seed))
    phases = [events[:15_000], events[15_000:]]
    job = fault_job(tmp_path, name)
    placed = produce_placed(broker.bootstrap, name, phases[0], PARTITIONS)
    job_id = cli("submit", str(job), *submit, "--profile", "test", "--profiles", str(profiles))
    deadline = time.monotonic() + 120
    while row_count(pg, f"{name}_1m") == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return job, job_id, placed, phases


def records_total(pg: Postgres, table: str) -> int:
    with psycopg.connect(**pg.conninfo(), connect_timeout=2) as conn:
        row = conn.execute(f'SELECT coalesce(sum("_records"), 0) FROM "{table}"').fetchone()
    return int(row[0]) if row else 0


def stable_total(pg: Postgres, table: str, quiet_s: float = 2.0) -> int:
    """The view's record total once it has not changed for ``quiet_s`` (the job idle)."""
    total, since = records_total(pg, table), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = records_total(pg, table)
        if now != total:
            total, since = now, time.monotonic()
    return total


def drain_when_read(client: ClusterClient, job_id: str, ends: dict[int, int], profiles: Path,
                    timeout_s: float = 180) -> None:
    """Stop the job as a bounded job ends once it has read every partition to ``ends``."""
    watch = JobWatch(client, job_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fetched = watch.read_offsets()
        if fetched and all(fetched.get(p, -1) >= o - 1 for p, o in ends.items() if o > 0):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"job {job_id} did not read to {ends}: {watch.read_offsets()}")
    checkpoint = (client.last_checkpoint(job_id) or {}).get("id", 0)
    while (client.last_checkpoint(job_id) or {}).get("id", 0) < checkpoint + 2:
        time.sleep(0.3)
    cli("stop", job_id, "--drain", "--profile", "test", "--profiles", str(profiles))


def test_stop_with_savepoint_and_resume_at_parallelism_2_is_exact(
        tmp_path: Path, broker: Broker, pg: Postgres, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    client, _ = cluster
    profile = ("--profile", "test", "--profiles", str(cluster_profiles))
    job, job_id, placed, phases = submitted_on_half(tmp_path, broker, pg, cluster_profiles, unique, 71,
                                                    "--parallelism", "1")
    assert len(job_id) == 32
    # Headrace's counters: every record in, and each one's fate, as the reference has it
    first = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=30_000)
    want = {"records_in": 15_000.0, "dead_lettered": float(sum(first.dead.values()) + sum(first.unstorable.values())),
            "late": float(sum(first.late.values()))}
    deadline = time.monotonic() + 60
    while {k: client.headrace_counters(job_id).get(k) for k in want} != want and time.monotonic() < deadline:
        time.sleep(1)
    assert {k: client.headrace_counters(job_id).get(k) for k in want} == want
    listing = CliRun("jobs", *profile)
    assert listing.finish() == 0 and job_id in listing.output and "RUNNING" in listing.output
    row = next(line for line in listing.lines if job_id[:8] in line)
    assert "15,000" in row and f"{int(want['dead_lettered']):,}" in row, listing.output
    # Headrace's own counters reach Prometheus (the TaskManagers' reporters, the ports after the JobManager's)
    deadline = time.monotonic() + 30
    while ("headrace_dead_lettered" not in (scraped := scrape(PROMETHEUS + 1) + scrape(PROMETHEUS + 2))
           and time.monotonic() < deadline):
        time.sleep(1)
    assert "flink_taskmanager_job_task_operator_headrace_dead_lettered" in scraped
    assert "flink_taskmanager_job_task_operator_headrace_rows_upserted" in scraped
    assert "flink_taskmanager_job_task_operator_headrace_records_in" in scraped

    savepoint = cli("stop", "page-activity", "--savepoint", *profile)
    assert savepoint.startswith("file:") and Path(savepoint.removeprefix("file:")).is_dir()
    # a job without the late output: its writer's state has nowhere to go, refused in one line ...
    removed = tmp_path / "removed.yaml"
    removed.write_text(job.read_text().replace(f"late: {{kafka: {{topic: {unique}.late}}}}", ""))
    assert "late:" not in removed.read_text()
    refused = CliRun("resume", str(removed), "--from", savepoint, *profile)
    assert refused.finish(180) == 2
    errors = [line for line in refused.lines if line.startswith("error:")]
    assert len(errors) == 1 and "no longer has" in errors[0] and "--allow-removed-state" in errors[0], refused.output
    assert "\tat org.apache" not in refused.output
    # ... and dropped when asked (nothing new to read yet: cancelled before phase 2 is produced)
    dropped = cli("resume", str(removed), "--from", savepoint, "--allow-removed-state", *profile)
    assert client.get(f"/jobs/{dropped}")["state"] == "RUNNING"
    cli("cancel", dropped, *profile)
    placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
    # the job resumed has changed elsewhere (a second sink): the pinned uids map the state back
    changed = tmp_path / "changed.yaml"
    changed.write_text(job.read_text().replace(
        "sinks:\n", f"sinks:\n  - postgres: {{table: {unique}_copy}}\n"))
    # stopped on one TaskManager at parallelism 1, resumed at 4 on both
    resumed = cli("resume", str(changed), "--from", savepoint, "--parallelism", "4", *profile)
    detail = client.get(f"/jobs/{resumed}")
    assert {v["parallelism"] for v in detail["vertices"]} == {4}
    source = next(v["name"] for v in detail["vertices"] if v["name"].startswith("Source"))
    assert sorted(n for name, _, n in client.placement(resumed) if name == source) == [2, 2]
    drain_when_read(client, resumed, final_offsets(*phases), cluster_profiles)
    assert_exact(broker, pg, unique, placed)


def test_python_engine_job_runs_on_the_cluster(
        tmp_path: Path, broker: Broker, pg: Postgres, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    client, _ = cluster
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(6_000, seed=72))
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text().replace("validate: {}", "validate: {engine: python}"))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    job_id = cli("submit", str(job), "--stop-at-offsets", offsets_arg(final_offsets(events)),
                 "--profile", "test", "--profiles", str(cluster_profiles))
    wait_finished(client, job_id)
    assert any("PythonCalc" in v["name"] for v in client.get(f"/jobs/{job_id}")["vertices"])
    assert_exact(broker, pg, unique, placed)


def test_the_jvm_enrich_engine_reads_keys_ahead_on_the_taskmanagers(
        tmp_path: Path, broker: Broker, pg: Postgres, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    """The JVM engine's read-ahead on a session cluster: the Kafka consumer on each TaskManager
    loads the interceptor from the job's jars and hands it keys, the lookups count every record
    once, and the views are exact."""
    client, _ = cluster
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(6_000, seed=74))
    job = read_ahead_job(tmp_path, pg, unique, ("plan",))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    started = time.time()
    job_id = cli("submit", str(job), "--stop-at-offsets", offsets_arg(final_offsets(events)),
                 "--profile", "test", "--profiles", str(cluster_profiles))
    wait_finished(client, job_id)
    assert_exact(broker, pg, unique, placed)
    total = lookup_stats(own_name(unique), started)
    assert total.read_ahead > 0, total
    assert total.keys == total.l1_hits + total.l2_hits + total.l3_hits + total.misses > 0, total


def test_a_job_graph_with_python_steps_and_sinks_runs_on_the_cluster(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    """enrich (a Python lookup) and the Redis sink (a Python writer) on the TaskManagers. While it
    runs, the Prometheus endpoints of the JobManager and the TaskManagers hold every metric the
    dashboard's job panels query (the serve panels: tests/integration/test_serve_traces.py)."""
    from headrace.jobs.dashboard import METRICS, PANELS, metrics_of

    client, _ = cluster
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(6_000, seed=73))
    users = tmp_path / "users.jsonl"
    users.write_text("".join(f'{{"user_id": "u{i}", "plan": "p{i % 4}"}}\n' for i in range(300)))
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text()
                   .replace("  - validate: {}", "  - validate: {}\n  - enrich: {key: user_id, fields: {plan: string}, "
                            f"source: {{file: {{path: {users}}}}}}}")
                   .replace(f"  - postgres: {{table: {unique}_1m}}",
                            f"  - postgres: {{table: {unique}_1m}}\n  - redis: {{view: {unique}}}"))
    cluster_profiles.write_text(cluster_profiles.read_text().replace(
        "    state:", f"    redis: {{port: {redis_server.port}}}\n    state:"))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    job_id = cli("submit", str(job), "--profile", "test", "--profiles", str(cluster_profiles))
    wanted = {m.name for m in METRICS if m.source == "job"}
    assert wanted == {n for _, _, targets in PANELS for expr, _ in targets for n in metrics_of(expr)
                      if not n.startswith("headrace_serve_")}
    names: set[str] = set()
    deadline = time.monotonic() + 90
    while not wanted <= names and time.monotonic() < deadline:
        time.sleep(1)
        for port in range(PROMETHEUS, PROMETHEUS + 10):  # the JobManager's, every TaskManager's
            try:
                text = scrape(port)
            except OSError:
                continue
            names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                      if line and not line.startswith("#")}
    assert wanted <= names, f"no such metric on the cluster: {sorted(wanted - names)}"
    assert sum("PythonCalc" in v["name"] for v in client.get(f"/jobs/{job_id}")["vertices"]) >= 1
    drain_when_read(client, job_id, final_offsets(events), cluster_profiles)
    assert_exact(broker, pg, unique, placed)
    redis: Any = redis_server.client()
    windows = [k for k in redis.scan_iter(match=f"{unique}:*") if not k.endswith(b":latest")]
    assert len(windows) == row_count(pg, f"{unique}_1m")


def test_kill_9_of_the_taskmanager_recovers_on_a_new_one_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    client, dirs = cluster
    _, job_id, placed, phases = submitted_on_half(tmp_path, broker, pg, cluster_profiles, unique, 73)
    # parallelism 2 on two TaskManagers: one subtask of each task on each, as 'cluster status' shows
    placement = client.placement(job_id)
    source = next(name for name, _, _ in placement if name.startswith("Source"))
    assert sorted(n for name, _, n in placement if name == source) == [1, 1], placement
    status = CliRun("cluster", "status", "--port", client.rest_url.rsplit(":", 1)[1])
    assert status.finish() == 0 and "by TaskManager" in status.output, status.output
    assert "2 TaskManager(s)" in status.output, status.output
    old = dirs.taskmanager_pids()
    assert len(old) == 2

    before = stable_total(pg, f"{unique}_1m")
    os.kill(old[0], signal.SIGKILL)
    add_taskmanager(dirs)  # the replacement, as a supervisor (systemd, Kubernetes) would start it
    killed = time.monotonic()
    while Path(f"/proc/{old[0]}").exists() and "zombie" not in Path(f"/proc/{old[0]}/status").read_text():
        assert time.monotonic() - killed < 10, "the TaskManager survived kill -9"
        time.sleep(0.05)
    placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
    # records flow again when the view grows: windows of the new input being written
    flowing = None
    while time.monotonic() - killed < 120:
        if records_total(pg, f"{unique}_1m") > before:
            flowing = time.monotonic() - killed
            break
        time.sleep(0.1)
    state = client.get(f"/jobs/{job_id}")["state"]
    assert flowing is not None, f"the view did not grow within 120 s of the kill; job {state}"
    print(f"TaskManager kill -9 to records flowing again: {flowing:.1f} s")
    drain_when_read(client, job_id, final_offsets(*phases), cluster_profiles)
    assert_exact(broker, pg, unique, placed)


def upload_jar(rest_url: str, jar: Path) -> str:
    """POST /jars/upload (multipart, as the operator's REST client sends it); the jar's id."""
    import json
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="jarfile"; filename="{jar.name}"\r\n'
            "Content-Type: application/x-java-archive\r\n\r\n").encode() + jar.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{rest_url}/jars/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.load(response)["filename"]).rsplit("/", 1)[-1]


def test_the_rendered_flink_session_job_runs_and_upgrades_as_the_operator_does_it(
        tmp_path: Path, broker: Broker, pg: Postgres, cluster_profiles: Path, unique: str,
        cluster: tuple[ClusterClient, ClusterDirs]) -> None:
    """What the Flink Kubernetes Operator does with a rendered FlinkSessionJob, done on the local
    session cluster (no Kubernetes API server runs here): upload its jarURI, run its entryClass
    with its args and parallelism; for an upgrade (upgradeMode: savepoint) stop the job with a
    savepoint and run the same again from it. The view ends exact."""
    import re
    import sys

    import pyflink
    import yaml

    client, _ = cluster
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    broker.create_topic(unique, partitions=PARTITIONS)
    job = fault_job(project / "jobs", unique)
    # the image's profiles file (here: the test's, runnable on this machine; the JobManager reads
    # the password as a pod reads it from its Secret: this cluster started before it was set) ...
    (project / "profiles.yaml").write_text(cluster_profiles.read_text().replace(
        "${HEADRACE_TEST_PG_PASSWORD}", os.environ["HEADRACE_TEST_PG_PASSWORD"]))
    # ... and the profile rendered: shared state on s3://, this machine's Python and project folder
    flink_python = next((Path(pyflink.__file__).resolve().parent / "opt").glob("flink-python-*.jar"))
    rendered = tmp_path / "render.yaml"
    rendered.write_text(re.sub(
        r"    state: \{.*\}\n",
        "    state: {checkpoints: s3://bucket/ckpt, savepoints: s3://bucket/sp}\n"
        f"    kubernetes: {{python: {sys.executable}, project_dir: {project}, python_jar: {flink_python.as_uri()}}}\n",
        cluster_profiles.read_text()))
    out = tmp_path / "k8s"
    render = CliRun("k8s", "render", str(job), "--profile", "test", "--profiles", str(rendered),
                    "--project", str(project), "--parallelism", "2", "--out", str(out))
    assert render.finish(120) == 0, render.output
    rendered_jobs = list((out / "jobs").glob("*.yaml"))
    assert len(rendered_jobs) == 1, rendered_jobs
    session_job = yaml.safe_load(rendered_jobs[0].read_text())
    assert session_job["kind"] == "FlinkSessionJob" and session_job["spec"]["job"]["upgradeMode"] == "savepoint"
    spec = session_job["spec"]["job"]
    assert spec["args"][spec["args"].index("--profiles") + 1] == f"{project}/profiles.yaml"

    jar_id = upload_jar(client.rest_url, Path(spec["jarURI"].removeprefix("file:")))

    def run(savepoint: str | None = None) -> str:
        """POST /jars/{id}/run: the JobManager runs the Python program, which plans and starts the job."""
        body = {"entryClass": spec["entryClass"], "programArgsList": spec["args"], "parallelism": spec["parallelism"],
                **({"savepointPath": savepoint} if savepoint else {})}
        started = time.monotonic()
        job_id = str(ClusterClient(client.rest_url, timeout_s=180)._request(f"/jars/{jar_id}/run", body)["jobid"])
        print(f"jar run (plan and submit inside the JobManager): {time.monotonic() - started:.1f} s")
        return job_id

    events = list(click_events(20_000, seed=75))
    phases = [events[:10_000], events[10_000:]]
    placed = produce_placed(broker.bootstrap, unique, phases[0], PARTITIONS)
    job_id = run()
    assert {v["parallelism"] for v in client.get(f"/jobs/{job_id}")["vertices"]} == {2}
    deadline = time.monotonic() + 120
    while row_count(pg, f"{unique}_1m") == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    # the upgrade: a savepoint on stop, the job run again from it
    savepoint = client.stop(job_id, (tmp_path / "sp").as_uri())
    upgraded = run(savepoint)
    client.await_restored(upgraded, savepoint)
    placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
    drain_when_read(client, upgraded, final_offsets(*phases), cluster_profiles)
    assert_exact(broker, pg, unique, placed)
