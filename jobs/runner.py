"""Run a compiled job on a local Flink mini-cluster (the session-cluster path comes later).

Embedded profile: the job reads its input file to the end and the runner applies the result
changelog to SQLite / JSON-lines files. Service profiles: preflight checks (broker reachable,
output topics, view tables), then one statement set — one Flink job reading the source once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import embedded, jars, kafka, postgres
from connectors.sqltext import masked
from jobs.compiler import VALIDATE_FUNCTION, CompiledJob
from jobs.errors import HeadraceError, ServiceError
from jobs.uids import assign_uids
from operators import jvm
from operators.validate import RecordCheck, validate_udf

Say = Callable[[str], None]


@dataclass
class RunSummary:
    job: str
    records_in: int | None = None
    dead_lettered: int = 0
    late: int = 0
    view_updates: int = 0
    seconds: float = 0.0
    job_id: str | None = None
    views: list[str] = field(default_factory=list)


def table_environment(compiled: CompiledJob, jar_paths: list[Path]) -> Any:
    """A streaming TableEnvironment configured for ``compiled``, with its UDF registered."""
    # Python workers as processes (one per subtask) instead of threads in this interpreter:
    # the per-record validate UDF then scales with parallelism instead of sharing one GIL.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment

    jar_paths = [*jar_paths, jvm.build()]
    settings = dict(compiled.config)
    settings.update({"python.executable": sys.executable, "python.client.executable": sys.executable})
    env = StreamExecutionEnvironment.get_execution_environment(Configuration.from_dict(settings))
    # before the table environment exists: its planner resolves connectors and functions with
    # this loader; add_jars appends, so `flink run -py`'s own flink-python jar stays on the list
    env.add_jars(*(p.resolve().as_uri() for p in jar_paths))
    t_env = StreamTableEnvironment.create(env)
    config = t_env.get_config()
    for key, value in settings.items():
        config.set(key, value)
    plan = compiled.plan
    if plan.validate.engine == "python":
        check = RecordCheck(plan.validate.schema.document, plan.fields)
        t_env.create_temporary_function(VALIDATE_FUNCTION, validate_udf(check))
    for statement in compiled.functions + compiled.tables:
        t_env.execute_sql(statement)
    if compiled.embedded:
        # One query feeds three outputs; the planner would call validate once per output.
        # A round trip through a (JVM) DataStream makes the validated stream a single producer;
        # the event time rides along as the record timestamp, watermarks pass through.
        checked = t_env.to_data_stream(t_env.sql_query(compiled.checked_select))
        schema = (Schema.new_builder()
                  .column_by_metadata("_event_time", DataTypes.TIMESTAMP_LTZ(3), "rowtime")
                  .watermark("_event_time", "SOURCE_WATERMARK()").build())
        t_env.create_temporary_view("hr_checked", t_env.from_data_stream(checked, schema))
    else:
        t_env.execute_sql(f"CREATE TEMPORARY VIEW `hr_checked` AS\n{compiled.checked_select}")
    for statement in compiled.views:
        t_env.execute_sql(statement)
    return t_env


def explain_sql(compiled: CompiledJob) -> str:
    """All SQL of the job with secrets masked."""
    parts = [masked(s) + ";" for s in compiled.statements]
    parts += [s + ";" for s in compiled.inserts]
    if compiled.collect_query:
        parts.append(compiled.collect_query + ";")
    return "\n\n".join(parts)


def run_embedded(compiled: CompiledJob, say: Say = print) -> RunSummary:
    plan, profile = compiled.plan, compiled.profile
    assert profile.embedded is not None and compiled.collect_query is not None
    data_dir = Path(profile.embedded.data_dir)
    source_file = embedded.topic_file(data_dir, plan.spec.source.kafka.topic)
    if not source_file.exists():
        raise HeadraceError(f"no input for topic '{plan.spec.source.kafka.topic}': {source_file} does not exist",
                            hint=f"write JSON lines there, e.g. 'headrace generate --out {source_file}'")
    with source_file.open("rb") as handle:
        records_in = sum(1 for _ in handle)
    summary = RunSummary(job=plan.name, records_in=records_in, views=[v.name for v in compiled.view_tables])
    store = embedded.EmbeddedStore(data_dir)
    outputs = sorted({plan.dead_letter_topic, plan.late_topic})
    store.truncate_outputs(outputs, list(compiled.view_tables))
    for view in compiled.view_tables:
        store.ensure_table(view)
    started = time.monotonic()
    say(f"starting Flink (local mini-cluster) for job '{plan.name}' over {records_in:,} records in {source_file}")
    t_env = table_environment(compiled, [])
    result = t_env.execute_sql(compiled.collect_query)
    last_report = time.monotonic()
    from pyflink.common import RowKind

    try:
        with result.collect() as rows:
            for row in rows:
                kind, body = row[0], json.loads(row[1])
                if kind == "view":
                    summary.view_updates += 1
                    for view in compiled.view_tables:
                        if row.get_row_kind() == RowKind.DELETE:
                            store.delete(view, body)
                        elif row.get_row_kind() != RowKind.UPDATE_BEFORE:
                            store.upsert(view, body)
                elif kind == "dead_letter":
                    summary.dead_lettered += 1
                    store.append(plan.dead_letter_topic, body)
                else:
                    summary.late += 1
                    store.append(plan.late_topic, body)
                if time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    say(f"  … {summary.view_updates:,} view rows, {summary.dead_lettered:,} dead letters, "
                        f"{summary.late:,} late so far")
    finally:
        store.close()
    summary.seconds = time.monotonic() - started
    return summary


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
    assert profile.kafka is not None and profile.postgres is not None
    jar_paths = jars.required_jars({"kafka", "postgres"})
    kconn = profile.kafka
    topics = kafka.check_reachable(kconn.bootstrap_servers, kconn.properties)
    if plan.spec.source.kafka.topic not in topics:
        raise ServiceError(f"source topic '{plan.spec.source.kafka.topic}' does not exist on "
                           f"{kconn.bootstrap_servers}", hint="create it, or fix 'source.kafka.topic'")
    kafka.ensure_topics(kconn.bootstrap_servers, kconn.properties, {plan.dead_letter_topic, plan.late_topic})
    for view in compiled.view_tables:
        postgres.ensure_table(profile.postgres.conninfo(), view)
    say(f"preflight ok: broker {kconn.bootstrap_servers}, PostgreSQL {profile.postgres.host}:"
        f"{profile.postgres.port}/{profile.postgres.database}, {len(jar_paths)} connector jars")
    return jar_paths


def submit_local(compiled: CompiledJob, say: Say = print) -> tuple[Any, RunSummary]:
    """Start the job on a local mini-cluster; returns the TableResult (call ``.wait()``)."""
    jar_paths = preflight(compiled, say)
    t_env = table_environment(compiled, jar_paths)
    from pyflink.table import PlanReference, TableResult

    reference = PlanReference.from_json_string(compiled_plan_json(t_env, compiled))
    # PyFlink 2.3's load_plan hands CompiledPlan the Java environment where it needs the Python
    # one, so CompiledPlan.execute() fails; do what it should do
    j_plan = t_env._j_tenv.loadPlan(reference._j_plan_reference)
    t_env._before_execute()
    result = TableResult(j_plan.execute())
    client = result.get_job_client()
    summary = RunSummary(job=compiled.plan.name, views=[v.name for v in compiled.view_tables])
    summary.job_id = str(client.get_job_id()) if client is not None else None
    say(f"job '{compiled.plan.name}' running on the local mini-cluster (Flink job id {summary.job_id})")
    return result, summary
