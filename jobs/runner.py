"""Run a compiled job on a local Flink mini-cluster (the session-cluster path comes later).

Embedded profile: the job reads its input file to the end and the runner applies the result
changelog to SQLite / JSON-lines files. Service profiles: preflight checks (broker reachable,
output topics, view tables), then one statement set — one Flink job reading the source once.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headrace.connectors import embedded, jars, kafka
from headrace.connectors.sqltext import masked
from headrace.jobs import classarchive, plancache
from headrace.jobs.checkpoints import RetainedCheckpoint
from headrace.jobs.cluster import ClusterClient
from headrace.jobs.compiler import CHECKED_VIEW, CompiledJob
from headrace.jobs.monitor import JobWatch, root_cause
from headrace.jobs.uids import assign_uids
from headrace.operators import jvm
from headrace.schemas.errors import HeadraceError, ServiceError
from headrace.schemas.profile import Profile

Say = Callable[[str], None]


@dataclass
class RunSummary:
    job: str
    records_in: int | None = None
    dead_lettered: int = 0
    late: int = 0
    late_by_step: Counter[str] = field(default_factory=Counter)
    view_updates: int = 0
    seconds: float = 0.0
    job_id: str | None = None
    rest_url: str | None = None


UTC_JVM = "-Duser.timezone=UTC"

#: the embedded profile's JVM: a local run of a sample is over in seconds, before C2 (the JIT's
#: optimizing tier) pays for itself; on 2 cores its compiler threads took the job's CPU
EMBEDDED_JVM = "-XX:TieredStopAtLevel=1"


#: every other JVM that runs a job's records (a local run on a service profile; a session cluster's
#: TaskManagers, from flink-conf/config.yaml): the JIT's optimizing compiler (C2) takes a method once
#: it has been called 50,000 times, or called and looped 60,000 times together, or a loop of it has
#: run 400,000 times (Java 17: 5,000, 15,000, 40,000). A job's per-record methods pass that within a
#: second; the long tail that runs some thousand times (start-up, Janino, checkpoints, each
#: output's rarely taken branch) stays with the first tier. With Java's thresholds C2 was busy for
#: the whole of a 3M-event run on 2 cores, a core the source tasks wanted (README, "Benchmark").
#: ``-XX:Tier4…`` options in ``JVM_ARGS`` replace these.
C2_THRESHOLDS = ("-XX:Tier4InvocationThreshold=50000", "-XX:Tier4CompileThreshold=60000",
                 "-XX:Tier4BackEdgeThreshold=400000")


def start_jvm(embedded: bool) -> None:
    """Start this process's Flink JVM (PyFlink's gateway, which the local mini-cluster runs in)
    with Headrace's options; nothing when it runs already. PyFlink reads them from ``JVM_ARGS``,
    set here only while the JVM starts: the JVMs this process's children start (a session
    cluster's, through Flink's scripts, which read it too) keep their own.

    In UTC: the JDBC connector converts TIMESTAMP values through the JVM's default zone: in a zone
    with daylight saving, window bounds around the change would shift by an hour and overwrite
    each other. ``table.local-time-zone`` does not reach that code; the JVM's own zone does.
    Embedded, with the first JIT tier only and the class archive of the last run
    (jobs/classarchive.py); otherwise with Headrace's thresholds for the optimizing tier.
    """
    from pyflink.java_gateway import get_gateway

    previous = os.environ.get("JVM_ARGS")
    given = (previous or "").split()
    # Headrace's own options always last and in one order, whether JVM_ARGS held them or not: the
    # class archive is keyed by the whole line, and the tests (which set the first JIT tier in
    # JVM_ARGS) would otherwise write archives of their own beside the user's, evicting it
    args = [arg for arg in given if arg not in (UTC_JVM, EMBEDDED_JVM)] + [UTC_JVM]
    if EMBEDDED_JVM in given or (embedded and os.environ.get("HEADRACE_EMBEDDED_JIT") != "full"):
        args.append(EMBEDDED_JVM)
    elif not any(arg.startswith("-XX:Tier4") for arg in given):  # thresholds of the user's own win
        args += C2_THRESHOLDS
    if embedded:
        args += classarchive.jvm_args(args)
    os.environ["JVM_ARGS"] = " ".join(args)
    try:
        get_gateway()
    finally:
        if previous is None:
            os.environ.pop("JVM_ARGS", None)
        else:
            os.environ["JVM_ARGS"] = previous


#: where this process's local jobs keep RocksDB's LOG files (``rocksdb_log_dir``)
_rocksdb_logs: Path | None = None
ROCKSDB_LOG_PREFIX = "headrace-rocksdb-log-"


def rocksdb_log_dir(config: dict[str, str]) -> dict[str, str]:
    """A local (mini-cluster) job's RocksDB LOG files in a directory of this process's, removed
    when it exits, instead of PyFlink's log directory in the virtualenv, where Flink puts them
    once ``log.file`` is set: one file per stateful operator and subtask of every run, never
    removed (118 files, 11 MB after a day of runs). Flink's own default without ``log.file``
    keeps them in the instance's directory, which goes with the job. A directory left by a
    process that was killed is removed by the next one. {} when the job's state is not in RocksDB
    or the profile chose a directory."""
    global _rocksdb_logs
    if config.get("state.backend.type") != "rocksdb" or "state.backend.rocksdb.log.dir" in config:
        return {}
    if _rocksdb_logs is None or not _rocksdb_logs.is_dir():
        for stale in Path(tempfile.gettempdir()).glob(ROCKSDB_LOG_PREFIX + "*"):
            pid = stale.name[len(ROCKSDB_LOG_PREFIX):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        _rocksdb_logs = Path(tempfile.mkdtemp(prefix=f"{ROCKSDB_LOG_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, _rocksdb_logs, True)
    return {"state.backend.rocksdb.log.dir": str(_rocksdb_logs)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def registry_secret(profile: Profile) -> None:
    """The registry's password for the JVM decoders' run-time lookups, as a system property of
    this JVM (the local mini-cluster's TaskManager): never in the SQL, whose literals Flink shows
    in operator names. A session cluster's TaskManagers read ``HEADRACE_REGISTRY_PASSWORD``."""
    registry = profile.registry
    if registry is None or registry.password is None:
        return
    from pyflink.java_gateway import get_gateway

    get_gateway().jvm.java.lang.System.setProperty("headrace.registry.password", registry.password.get_secret_value())


def table_environment(compiled: CompiledJob, jar_paths: list[Path], extra: dict[str, str] | None = None,
                      views: bool = True) -> Any:
    """A streaming TableEnvironment configured for ``compiled``, with its UDF registered, its
    tables and (``views``) its views (a kept plan needs none: it holds them planned)."""
    start_jvm(compiled.profile.embedded is not None)
    # Python workers as processes (one per subtask) instead of threads in this interpreter:
    # the per-record validate UDF then scales with parallelism instead of sharing one GIL.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment

    jar_paths = [*jar_paths, jvm.build()]
    settings = dict(compiled.config)
    settings.update({"python.executable": sys.executable, "python.client.executable": sys.executable})
    settings.update(extra or {})
    env = StreamExecutionEnvironment.get_execution_environment(Configuration.from_dict(settings))
    # before the table environment exists: its planner resolves connectors and functions with
    # this loader; add_jars appends, so `flink run -py`'s own flink-python jar stays on the list
    env.add_jars(*(p.resolve().as_uri() for p in jar_paths))
    registry_secret(compiled.profile)
    t_env = StreamTableEnvironment.create(env)
    config = t_env.get_config()
    for key, value in settings.items():
        config.set(key, value)
    plan = compiled.plan
    for node in (*plan.steps, *plan.sinks):
        node.register(t_env, compiled.wiring)
    for statement in compiled.functions + compiled.tables:
        t_env.execute_sql(statement)
    if compiled.embedded and plan.decoder.requirements.python:
        # One query feeds three outputs; the planner would call the Python validator once per
        # output. A round trip through a (JVM) DataStream makes the validated stream a single
        # producer; the event time rides along as the record timestamp, watermarks pass through.
        # (The JVM decoders run in the source, which every output shares.)
        query = t_env.sql_query(compiled.checked_select)
        binary = plan.spec.source.format.binary
        if binary:
            # a DataStream row holds a Java String, which would replace a binary payload's bytes
            # that are not UTF-8: the payload crosses in base64 and is decoded on the other side
            names = query.get_schema().get_field_names()
            query = t_env.sql_query("SELECT " + ", ".join(
                "TO_BASE64(`_payload`) AS `_payload`" if n == "_payload" else f"`{n}`" for n in names)
                + f" FROM ({compiled.checked_select})")
        checked = t_env.to_data_stream(query)
        schema = (Schema.new_builder()
                  .column_by_metadata("_event_time", DataTypes.TIMESTAMP_LTZ(3), "rowtime")
                  .watermark("_event_time", "SOURCE_WATERMARK()").build())
        table = t_env.from_data_stream(checked, schema)
        if binary:
            t_env.create_temporary_view("hr_checked_base64", table)
            names = table.get_schema().get_field_names()
            t_env.execute_sql(f"CREATE TEMPORARY VIEW `{CHECKED_VIEW}` AS SELECT " + ", ".join(
                "FROM_BASE64(`_payload`) AS `_payload`" if n == "_payload" else f"`{n}`" for n in names)
                + " FROM `hr_checked_base64`")
        else:
            t_env.create_temporary_view(CHECKED_VIEW, table)
        for statement in compiled.views:
            create_view(t_env, statement)
    elif views:
        create_views(t_env, compiled)
    return t_env


def create_views(t_env: Any, compiled: CompiledJob) -> None:
    """The checked view and the views over it (a kept plan holds them planned)."""
    t_env.execute_sql(f"CREATE TEMPORARY VIEW `{CHECKED_VIEW}` AS\n{compiled.checked_select}")
    for statement in compiled.views:
        create_view(t_env, statement)


_VIEW = re.compile(r"CREATE TEMPORARY VIEW `([^`]+)` AS\s(.*)", re.DOTALL)
_TABLE_ARGUMENT = re.compile(r"=>\s*TABLE\s", re.IGNORECASE)


def create_view(t_env: Any, statement: str) -> None:
    """A ``CREATE TEMPORARY VIEW `name` AS <query>`` statement. A view that calls a process
    table function (``input => TABLE t PARTITION BY …``, the aggregate step's MergeWindows.java)
    becomes a view of the planned query rather than of its text: Flink 2.3 cannot expand the text
    of such a view when another query reads it. Every other view stays text: a planned view is
    one shared node of every query that reads it, so the planner cannot fuse its filter and
    projection into each reader's, and every record would be copied once more per shared view."""
    match = _VIEW.fullmatch(statement)
    if match is None or not _TABLE_ARGUMENT.search(match.group(2)):
        t_env.execute_sql(statement)
        return
    t_env.create_temporary_view(match.group(1), t_env.sql_query(match.group(2)))


def explain_sql(compiled: CompiledJob) -> str:
    """All SQL of the job with secrets masked."""
    parts = [masked(s) + ";" for s in compiled.statements]
    parts += [s + ";" for s in compiled.inserts]
    if compiled.collect_query and not compiled.inserts:  # (an embedded job's inserts hold its query)
        parts.append(compiled.collect_query + ";")
    return "\n\n".join(parts)


def check_environment(compiled: CompiledJob) -> None:
    """What the job's steps need of this process's environment (the mask step: its key)."""
    for node in compiled.plan.steps:
        node.check_environment(compiled.profile)


def run_embedded(compiled: CompiledJob, say: Say = print) -> RunSummary:
    plan, profile = compiled.plan, compiled.profile
    assert profile.embedded is not None and compiled.collect_query is not None
    check_environment(compiled)
    for node in plan.steps:
        node.prepare(profile)
    data_dir = Path(profile.embedded.data_dir)
    binary = plan.spec.source.format.binary
    source_file = embedded.topic_file(data_dir, plan.spec.source.kafka.topic, binary)
    if not source_file.exists():
        hint = (f"write base64 lines there, e.g. 'headrace generate --job {plan.path}'" if binary
                else f"write JSON lines there, e.g. 'headrace generate --out {source_file}'")
        raise HeadraceError(f"no input for topic '{plan.spec.source.kafka.topic}': {source_file} does not exist",
                            hint=hint)
    with source_file.open("rb") as handle:
        records_in = sum(1 for _ in handle)
    summary = RunSummary(job=plan.name, records_in=records_in)
    store = embedded.EmbeddedStore(data_dir)
    outputs = sorted({plan.dead_letter_topic, plan.late_topic})
    store.truncate_outputs(outputs, list(compiled.view_tables))
    for view in compiled.view_tables:
        store.ensure_table(view)
    started = time.monotonic()
    say(f"starting Flink (local mini-cluster) for job '{plan.name}' over {records_in:,} records in {source_file}")
    if compiled.inserts:  # a plan, kept for the next run: its outputs come through the client table
        t_env = table_environment(compiled, [], rocksdb_log_dir(compiled.config), views=False)
        from pyflink.java_gateway import get_gateway

        client_sink = get_gateway().jvm.dev.headrace.connectors.ClientSink
        client_sink.open(plan.name)
        job = _execute_plan(compiled, t_env, [], say)._j_table_result.getJobClient().get()
        rows = client_sink.rows(plan.name, job)
    else:  # the Python decoder's DataStream round trip: Flink's collect sink, planned each run
        t_env = table_environment(compiled, [], rocksdb_log_dir(compiled.config))
        rows = t_env.execute_sql(compiled.collect_query)._j_table_result.collect()
    last_report = time.monotonic()
    views = {"view:" + view.name: view for view in compiled.view_tables}
    try:
        for kind_byte, kind, text in collected_rows(rows):
            body = json.loads(text)
            if kind in views:
                summary.view_updates += 1
                if kind_byte == DELETE:
                    store.delete(views[kind], body)
                elif kind_byte != UPDATE_BEFORE:
                    store.upsert(views[kind], body)
            elif kind == "dead_letter":
                summary.dead_lettered += 1
                store.append(plan.dead_letter_topic, body)
            else:
                summary.late += 1
                summary.late_by_step[body["step"]] += 1
                store.append(plan.late_topic, body)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                say(f"  … {summary.view_updates:,} view rows, {summary.dead_lettered:,} dead letters, "
                    f"{summary.late:,} late so far")
    finally:
        store.close()
    summary.seconds = time.monotonic() - started
    return summary


#: Flink's RowKind byte values (org.apache.flink.types.RowKind.toByteValue)
UPDATE_BEFORE, DELETE = 1, 3


def collected_rows(rows: Any, batch: int = 5000, wait_ms: int = 1000) -> Iterator[list[Any]]:
    """The rows of a Java iterator of rows (a collect sink's, or the client table's) as
    ``[kind byte, field, ...]``, read in batches.

    PyFlink's own iterator makes a dozen py4j calls per row (the row, its kind, each field), about
    5 ms a row: for the example's thousand result rows that was longer than the job's run. Here the
    JVM reads ahead and hands over a batch as one JSON text. A batch comes at least every
    ``wait_ms`` (empty if nothing came), so the caller can report progress while the job runs.
    """
    from pyflink.java_gateway import get_gateway

    batches = get_gateway().jvm.dev.headrace.connectors.CollectedRows(rows)
    try:
        while (text := batches.next(batch, wait_ms)) is not None:
            yield from json.loads(text)
    finally:
        batches.close()


def compiled_plan_json(t_env: Any, compiled: CompiledJob) -> str:
    """The job's statement set as Flink's JSON plan, every node carrying Headrace's uid."""
    statement_set = t_env.create_statement_set()
    for insert in compiled.inserts:
        statement_set.add_insert_sql(insert)
    plan_json, _ = assign_uids(statement_set.compile_plan().as_json_string(), compiled.plan)
    return plan_json


def preflight(compiled: CompiledJob, say: Say = print) -> list[Path]:
    """Check services and jars before starting Flink, so failures are one clear line."""
    profile, plan = compiled.profile, compiled.plan
    assert profile.kafka is not None
    needed = {"kafka"} | {jar for node in (*plan.steps, *plan.sinks) for jar in node.requirements.jars}
    jar_paths = jars.required_jars(needed)
    kconn = profile.kafka
    topics = kafka.check_reachable(kconn)
    if plan.spec.source.kafka.topic not in topics:
        raise ServiceError(f"source topic '{plan.spec.source.kafka.topic}' does not exist on "
                           f"{kconn.bootstrap_servers}", hint="create it, or fix 'source.kafka.topic'")
    kafka.ensure_topics(kconn, {plan.dead_letter_topic, plan.late_topic})
    for node in (*plan.steps, *plan.sinks):
        node.prepare(profile)
    stores = ", ".join(dict.fromkeys(sink.kind for sink in plan.sinks))
    say(f"preflight ok: broker {kconn.bootstrap_servers}, {len(plan.sinks)} sink(s) ready ({stores}), "
        f"{len(jar_paths)} connector jars")
    return jar_paths


def _execute_plan(compiled: CompiledJob, t_env: Any, jar_paths: list[Path], say: Say = print) -> Any:
    """Start the job from its plan: the one kept from an earlier start with the same key
    (``plancache``), or a new one, planned now and kept."""
    from pyflink.table import TableResult

    plan_key = kept_plan_key(compiled, t_env.get_config().get_configuration().to_dict(), jar_paths)
    j_plan = None
    kept = plancache.load(compiled.plan.name, plan_key)
    if kept is not None:
        try:
            j_plan = _load_plan(t_env, kept)
        except Exception as exc:  # Py4JJavaError: another Flink's plan, or a damaged file
            say(f"note: the kept plan of '{compiled.plan.name}' did not load ({root_cause(str(exc))}); "
                "planning it again")
            plancache.forget(compiled.plan.name, plan_key)
    if j_plan is None:
        create_views(t_env, compiled)
        plan_json = compiled_plan_json(t_env, compiled)
        j_plan = _load_plan(t_env, plan_json)
        plancache.save(compiled.plan.name, plan_key, plan_json)
    t_env._before_execute()
    return TableResult(j_plan.execute())


def kept_plan_key(compiled: CompiledJob, settings: dict[str, str], jar_paths: list[Path]) -> str:
    """The key of the job's kept plan: every statement (views included), the uids' owners, the
    settings and the jars (``plancache.key``)."""
    owners = (f"{node.uid} {node.kind}" for node in (*compiled.plan.steps, *compiled.plan.sinks))
    return plancache.key((*compiled.statements, *compiled.inserts, *owners), settings, [*jar_paths, jvm.jar_path()])


def _load_plan(t_env: Any, plan_json: str) -> Any:
    # PyFlink 2.3's load_plan hands CompiledPlan the Java environment where it needs the Python
    # one, so CompiledPlan.execute() fails; do what it should do
    from pyflink.table import PlanReference

    return t_env._j_tenv.loadPlan(PlanReference.from_json_string(plan_json)._j_plan_reference)


def submit_to_cluster(compiled: CompiledJob, rest_url: str, say: Say = print, *, restore_from: str | None = None,
                      parallelism: int | None = None, allow_removed_state: bool = False) -> str:
    """Submit the job to a session cluster, detached; returns its Flink job id.

    ``restore_from``: a savepoint or retained checkpoint; the call returns once the job runs from
    it. ``allow_removed_state``: state of operators the job no longer has is dropped (Flink's
    ``ignore-unclaimed-state``) instead of refused.

    The job carries the connector jars and Headrace's functions jar. A job with the Python
    engine runs its workers with this interpreter (``python.executable``): the cluster's
    TaskManagers must reach it at the same path, as they do when started by ``headrace cluster up``.
    """
    from urllib.parse import urlparse

    jar_paths = preflight(compiled, say)
    if any(node.requirements.python for node in (*compiled.plan.steps, *compiled.plan.sinks)):
        # the Python operators live in opt/flink-python-*.jar, which a cluster's lib/ lacks
        import pyflink

        jar_paths += sorted((Path(pyflink.__file__).resolve().parent / "opt").glob("flink-python-*.jar"))
    url = urlparse(rest_url)
    extra = {"execution.target": "remote", "rest.address": url.hostname or "127.0.0.1",
             "rest.port": str(url.port or 8081), "execution.attached": "false"}
    if restore_from:
        extra["execution.state-recovery.path"] = restore_from
        extra["execution.state-recovery.ignore-unclaimed-state"] = str(allow_removed_state).lower()
    if parallelism:
        extra["parallelism.default"] = str(parallelism)
    t_env = table_environment(compiled, jar_paths, extra, views=False)
    try:
        job_id = str(_execute_plan(compiled, t_env, jar_paths, say).get_job_client().get_job_id())
    except Exception as exc:  # Py4JJavaError: the JobMaster refused to start from that state
        if restore_from and "Cannot map checkpoint/savepoint state" in str(exc):
            raise ServiceError(f"cannot resume job '{compiled.plan.name}' from {restore_from}: it holds state of "
                               "an operator this job no longer has (a removed step or output)",
                               hint="resume with --allow-removed-state to drop that state") from exc
        raise
    if restore_from:
        ClusterClient(rest_url).await_restored(job_id, restore_from)
    return job_id


def submit_in_cluster(compiled: CompiledJob, say: Say = print) -> str:
    """Start the job from a program the cluster itself runs (flink-python's PythonDriver in the
    JobManager: a Flink Kubernetes Operator ``FlinkSessionJob``, or a jar run through Flink's REST
    API); returns its Flink job id.

    The cluster decides where the job goes, with which parallelism and from which savepoint (the
    run's own settings); the connector jars travel with the job as on every other path.
    """
    jar_paths = preflight(compiled, say)
    t_env = table_environment(compiled, jar_paths, views=False)
    return str(_execute_plan(compiled, t_env, jar_paths, say).get_job_client().get_job_id())


def submit_local(compiled: CompiledJob, say: Say = print, *, restore: RetainedCheckpoint | None = None,
                 rest_port: int | None = None) -> tuple[Any, RunSummary]:
    """Start the job on a local mini-cluster; returns the TableResult (call ``.wait()``).

    ``restore``: a retained checkpoint to resume from. The mini-cluster serves Flink's REST API on
    127.0.0.1:``rest_port`` (a free port by default), for the progress line.
    """
    check_environment(compiled)
    jar_paths = preflight(compiled, say)
    port = rest_port or int(compiled.config.get("rest.port") or free_port())
    extra = {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1", "rest.port": str(port),
             "metrics.fetcher.update-interval": "1000",  # the progress line reads metrics (default 10 s)
             # how long the REST API caches a job's state and exception history (default 3 s): failures
             # 1 s apart, ending the job, were otherwise seen only after the mini-cluster had gone
             "web.refresh-interval": "500"}
    if restore is not None:
        extra["execution.state-recovery.path"] = restore.path.resolve().as_uri()
    extra.update(rocksdb_log_dir(compiled.config))
    t_env = table_environment(compiled, jar_paths, extra, views=False)
    result = _execute_plan(compiled, t_env, jar_paths, say)
    client = result.get_job_client()
    summary = RunSummary(job=compiled.plan.name)
    summary.job_id = str(client.get_job_id()) if client is not None else None
    summary.rest_url = f"http://127.0.0.1:{port}"
    say(f"job '{compiled.plan.name}' running on the local mini-cluster (Flink job id {summary.job_id}, "
        f"web UI {summary.rest_url})")
    return result, summary


def free_port() -> int:
    """A free 127.0.0.1 port below Linux's ephemeral range (32768-60999), where outgoing
    connections (Kafka clients, JDBC) cannot take it between this check and Flink's bind."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServiceError("no free port for Flink's REST API in 20000-32000 on 127.0.0.1")


def check_services(compiled: CompiledJob) -> list[str]:
    """One phrase per service of the job that does not answer now (empty when all do)."""
    profile = compiled.profile
    down = []
    if profile.kafka is not None:
        try:
            kafka.check_reachable(profile.kafka, timeout_s=5)
        except ServiceError:
            down.append(f"broker {profile.kafka.bootstrap_servers} not answering")
    for sink in compiled.plan.sinks:
        phrase = sink.reachable(profile)
        if phrase is not None and phrase not in down:
            down.append(phrase)
    return down


def watch(result: Any, compiled: CompiledJob, summary: RunSummary, say: Say, every_s: float = 10.0,
          stop_at: dict[int, int] | None = None, restored: bool = False) -> None:
    """Block until the job ends. Says each restart (with its cause) at once, and every ``every_s``
    a progress line: view rows, the last checkpoint, and any service that stopped answering.

    ``stop_at``: the run's stop offsets. Flink's Kafka source, once restored from a checkpoint
    (a resumed run, or a restart after a failure), never tells its readers that no more splits
    will come, so a bounded job would wait forever at the end of its input. Once the source has
    fetched the last record before every stop offset and two more checkpoints have completed
    (the fetched records are emitted within milliseconds), the job is stopped as a bounded job
    finishes (``stop --drain``: the watermark goes to the end of time, windows fire, sinks flush).
    The offsets are asked again just before: the first answer may have come from metrics fetched
    before the restored source's splits were added (a drain then ended a resumed job short of its
    last records, its dead letters and late records with them). For the same reason, when a
    partition shows no split, or the job has restarted, the offsets must still say so ``SETTLE_S``
    later.

    A partition read to its stop offset before the checkpoint the source resumed from has no split
    in it: the resumed source never reports it. Once a checkpoint has completed 3 s after the
    tasks last (re)started (a checkpoint completes only when every task runs, its restored splits
    back in its reader, and the metrics are fetched every second), a partition the source does not
    report counts as read to its end.

    A restart (the tasks' start time moves) after every stop offset was reached starts this over:
    the restored source reads again from its checkpoint, and the new attempt's offsets count once
    a checkpoint has completed 3 s after the restart. (Draining on the failed attempt's offsets
    could end a job before it had read those records again, leaving its views short of them: the
    likely cause, not proven, of one such run of the enrich step's PostgreSQL outage test;
    tests/unit/test_failure_logic.py shows the logic.)

    A failover after the drain's savepoint (a sink failing as the last windows fire) restores
    the job to its last checkpoint, which still runs: the drain starts over as after a restart.

    A source that was not restored (``restored`` false and the job never restarted) finishes by
    itself, and is left to: the drain is a synchronous savepoint, which the source's task declines
    while it closes, and Flink fails the job over on that refusal. Such a job is drained only if it
    is still running 20 more checkpoints after its input was read.
    """
    from concurrent.futures import ThreadPoolExecutor

    done = result.get_job_client().get_job_execution_result()
    job = JobWatch(ClusterClient(summary.rest_url or "", timeout_s=3), summary.job_id or "")
    started = last = time.monotonic()
    restarts = 0
    draining = False
    drain_start: int | None = None  # when the tasks had last (re)started, at the drain (ms)
    last_drain_check = started
    read_all_at: int | None = None  # the checkpoint number when every stop offset was reached
    read_all_start: int | None = None  # when the tasks had last (re)started, then (ms)
    read_all_since = 0.0  # when (monotonic s)
    patient = False  # whether that reading must hold for SETTLE_S: a restarted job's, or one that took
    # a partition as read to its end because it showed no split
    was_down: set[str] = set()  # services down at the last progress line
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the progress line asks PostgreSQL and the broker, which may take seconds to time out
        # while one is down: it is built in the background so that restarts are said at once
        progress = None
        while not done.done():
            time.sleep(0.5)
            for restart in job.new_restarts():
                restarts += 1
                say(f"  ! restart {restarts} at {restart.at:%H:%M:%S}: {restart.cause}")
            if stop_at and draining and time.monotonic() - last_drain_check > 1:
                last_drain_check = time.monotonic()
                start = job.last_start_ms()
                if start is not None and start != drain_start:
                    # the job failed over while it drained (a store down as the windows fired):
                    # it runs again from its last checkpoint, so drain again once it has read all
                    draining, read_all_at = False, None
                    say("  ! the job failed over while finishing: it finishes again once it has read to its stop")
            if stop_at and not draining and time.monotonic() - last_drain_check > 1:
                last_drain_check = time.monotonic()
                checkpoint = job.last_checkpoint()
                number = checkpoint[0] if checkpoint else 0
                start = job.last_start_ms()
                if read_all_at is not None and start is not None and start != read_all_start:
                    # the tasks restarted since: the restored source reads again from its checkpoint,
                    # so what the failed attempt had fetched counts for nothing (draining now would
                    # end the job before it reads those records again)
                    read_all_at = None
                if read_all_at is None:
                    absent = _read_to_stop(job, checkpoint, start, stop_at, restored)
                    if absent is not None:
                        read_all_at, read_all_start, read_all_since = number, start, time.monotonic()
                        patient = bool(absent) or job.has_restarted()
                elif number >= read_all_at + (2 if restored or job.has_restarted() else 20) and (
                        not patient or time.monotonic() - read_all_since >= SETTLE_S):
                    # asked again before the job is stopped for good: what showed every partition read,
                    # checkpoints ago, may have been metrics from before the source's splits came
                    if _read_to_stop(job, checkpoint, start, stop_at, restored) is None:
                        read_all_at = None
                    else:
                        say("  … every partition has been read to its stop offset: finishing the job")
                        savepoints = compiled.profile.state.uri(compiled.profile.state.savepoints)
                        try:
                            job.client.stop(job.job_id, savepoints, drain=True)
                            draining, drain_start = True, start
                        except ServiceError:
                            pass  # tried again on the next round
            if progress is not None and progress.done():
                say("  … " + "; ".join(progress.result()))
                progress = None
            if progress is None and time.monotonic() - last >= every_s:
                last = time.monotonic()
                progress = pool.submit(progress_parts, job, compiled, time.monotonic() - started, was_down)
        for restart in job.new_restarts():  # a failure just before the end (if the API still answers)
            restarts += 1
            say(f"  ! restart {restarts} at {restart.at:%H:%M:%S}: {restart.cause}")
    result.wait()  # raises the job's failure, if any


#: how long Flink's metrics must go on saying the source has read to its stop offsets, when what they
#: say may be old, before the job is drained: a partition with no split in them, or offsets after a
#: restart (until the new attempt's come, Flink shows the failed attempt's). Flink fetches metrics
#: from the TaskManagers in the background, and on a busy machine a restored split's offsets showed
#: seconds after the job's first checkpoint (stop 35: 4 s)
SETTLE_S = 10.0


def _read_to_stop(job: JobWatch, checkpoint: tuple[int, datetime] | None, start: int | None,
                  stop_at: dict[int, int], restored: bool) -> frozenset[int] | None:
    """Whether Flink's metrics show the source has fetched the last record before every stop
    offset: None if not, else the partitions taken as read to their end for want of a split.

    Resumed, a partition without a split was read to its end before the checkpoint; after a
    restart the offsets count only then as well (until the new attempt's metrics come, Flink may
    still show the failed attempt's): "then" is once a checkpoint has completed 3 s after the
    tasks last (re)started (``start``, ms)."""
    fetched = job.read_offsets()
    restarted = job.has_restarted()
    settled = checkpoint is not None and (restored or restarted) and \
        checkpoint[1].timestamp() * 1000 >= (start or float("inf")) + 3000
    if fetched is None or not (fetched or settled) or (restarted and not settled):
        return None
    wanted = {p: o for p, o in stop_at.items() if o > 0}
    absent = frozenset(p for p in wanted if p not in fetched)
    if (absent and not settled) or any(fetched.get(p, o - 1) < o - 1 for p, o in wanted.items()):
        return None
    return absent


def progress_parts(job: JobWatch, compiled: CompiledJob, running_s: float,
                   was_down: set[str] | None = None) -> list[str]:
    """The phrases of one progress line: time running, counts, the last checkpoint, view rows,
    any service that does not answer, and any that answers again since the last line
    (``was_down``: the services down at the last line, updated)."""
    parts = [f"{running_s:,.0f}s running"]
    parts += _counts(job)
    checkpoint = job.last_checkpoint()
    if checkpoint is not None:
        ago = (datetime.now(UTC) - checkpoint[1]).total_seconds()
        parts.append(f"checkpoint {checkpoint[0]} {ago:.0f}s ago")
    parts += view_counts(compiled)
    down = check_services(compiled)
    parts += down
    if was_down is not None:
        parts += [f"{phrase.removesuffix(' not answering')} answering again" for phrase in sorted(was_down - set(down))]
        was_down.clear()
        was_down.update(down)
    return parts


def _counts(job: JobWatch) -> list[str]:
    """Records in, dead-lettered and late since the job's current start (Headrace's counters)."""
    try:
        read, dead, late = job.client.counts(job.job_id)
    except (HeadraceError, KeyError, ValueError, IndexError):
        return []
    if read is None:
        return []
    return [f"{int(read):,} in, {int(dead or 0):,} dead-lettered, {int(late or 0):,} late"]


def view_counts(compiled: CompiledJob) -> list[str]:
    counts = []
    for sink in compiled.plan.sinks:
        n = sink.stored_rows(compiled.profile)
        if n is not None:  # else said by check_services
            counts.append(f"{sink.view.name}: {n:,} rows")
    return counts
