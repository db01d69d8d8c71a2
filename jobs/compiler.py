"""Compile a :class:`jobs.plan.Plan` into Flink SQL for one profile.

The job is one Flink SQL program built from temporary views, so the JVM does Kafka I/O,
watermarks, routing and the window aggregation. ``validate`` (decode + check + extract fields)
is ``hr_validate``: the JVM function of ``operators/java`` when the schema is in its subset (it
also yields the event time the source's watermark reads), else the Python UDF of
``operators/validate.py``, called once per record::

    hr_source ─► hr_checked (hr_validate, CURRENT_WATERMARK)
                   ├─► hr_rejected ─► dead-letter output
                   ├─► hr_late     ─► late output
                   └─► hr_on_time  ─► hr_windows ─► each sink (upsert)

With a service profile the outputs are ``INSERT`` statements of one statement set (one job,
one read of the source). With the embedded profile they are one ``UNION ALL`` query whose
changelog the runner applies to local files and SQLite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from headrace.connectors import deadletter, embedded, kafka, postgres
from headrace.connectors.sqltext import ident, literal
from headrace.jobs.plan import Plan
from headrace.jobs.profiles import Profile
from headrace.operators import jvm
from headrace.operators.aggregate import late_condition, measure_columns, watermark_of, window_sql
from headrace.schemas.durations import format_duration_ms, sql_interval
from headrace.schemas.views import RECORDS_COLUMN, ViewDef

VALIDATE_FUNCTION = "hr_validate"
EVENT_TIME_FUNCTION = "hr_event_time"
PAYLOAD_FUNCTION = "hr_payload"
COUNT_FUNCTION = "hr_count"


@dataclass(frozen=True)
class CompiledJob:
    """Flink SQL for one profile: tables, the ``hr_checked`` query, the views over it, outputs."""

    plan: Plan
    profile: Profile
    functions: tuple[str, ...]
    tables: tuple[str, ...]
    checked_select: str
    views: tuple[str, ...]
    inserts: tuple[str, ...] = ()
    collect_query: str | None = None
    view_tables: tuple[ViewDef, ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.collect_query is not None

    @property
    def statements(self) -> tuple[str, ...]:
        """Every statement in order, as one SQL script (hr_checked as a plain view)."""
        checked = f"CREATE TEMPORARY VIEW `hr_checked` AS\n{self.checked_select}"
        return self.functions + self.tables + (checked,) + self.views


def view_tables(plan: Plan) -> tuple[ViewDef, ...]:
    agg = plan.aggregate
    measures = tuple((m.name, t) for m, t in zip(agg.measures, agg.measure_types, strict=True))
    return tuple(ViewDef(name=s.table, keys=agg.group_by, measures=measures) for s in plan.sinks)


def job_config(plan: Plan, profile: Profile) -> dict[str, str]:
    spec = plan.spec
    config = {
        "pipeline.name": spec.job,
        "parallelism.default": str(spec.parallelism),
        "table.local-time-zone": "UTC",
        # results are upserts keyed by group keys + window: let the planner see them as such
        "table.exec.sink.upsert-materialize": "NONE",
        # the three outputs of hr_checked must share one validate call: without this each output
        # prunes the view differently and the planner runs the Python UDF once per output
        "table.optimizer.reuse-optimize-block-with-digest-enabled": "true",
        # measured on the example job (tests/bench): SQL operators may reuse row objects, and
        # larger Arrow batches / bundles mean fewer JVM<->Python round trips (1.6x together);
        # a bundle still closes after python.fn-execution.bundle.time (1 s), bounding latency
        "pipeline.object-reuse": "true",
        "python.fn-execution.arrow.batch.size": "50000",
        "python.fn-execution.bundle.size": "200000",
    }
    if plan.aggregate.allowed_lateness_ms:
        config.update({
            "table.exec.emit.late-fire.enabled": "true",
            "table.exec.emit.late-fire.delay": "0 s",
            "table.exec.emit.allow-lateness": f"{plan.aggregate.allowed_lateness_ms} ms",
        })
    if profile.embedded is None:
        config.update(durable_state(spec.job, profile))
        config["execution.checkpointing.interval"] = f"{spec.checkpoint.interval} ms"
    else:
        # no checkpoints to resume from and the results are collected by this process: a local
        # run that fails should stop and say why
        config["restart-strategy.type"] = "none"
    config.update(profile.flink)
    return config


def durable_state(job: str, profile: Profile) -> dict[str, str]:
    """RocksDB state, incremental checkpoints kept on failure and cancellation, bounded restarts:
    the settings of ``flink-conf/config.yaml``, with this job's directories from the profile."""
    from headrace.jobs.cluster import job_defaults

    checkpoints = profile.state.uri(profile.state.checkpoints).rstrip("/") + f"/{job}"
    return {**job_defaults(), "execution.checkpointing.dir": checkpoints,
            "execution.checkpointing.savepoint-dir": profile.state.uri(profile.state.savepoints)}


def _dead_letter_select(step: str, path: str, error: str) -> str:
    """The dead-letter columns (``connectors/deadletter.py``) over a view with the source columns."""
    digest = f"{PAYLOAD_FUNCTION}(`_payload`, {deadletter.PAYLOAD_MAX_BYTES})"
    record_id = "CONCAT(`_topic`, '/', CAST(`_partition` AS STRING), '/', CAST(`_offset` AS STRING))"
    return f"""SELECT {record_id} AS `id`, `_topic` AS `source_topic`, `_partition` AS `source_partition`,
       `_offset` AS `source_offset`, {step} AS `step`, {path} AS `error_path`, {error} AS `error`,
       {digest}.`payload` AS `payload`, {digest}.`payload_bytes` AS `payload_bytes`,
       {digest}.`payload_sha256` AS `payload_sha256`, {digest}.`payload_truncated` AS `payload_truncated`,
       CAST(CURRENT_TIMESTAMP AS TIMESTAMP_LTZ(3)) AS `failed_at`"""


def _unstorable(plan: Plan) -> list[tuple[str, str, str, str]]:
    """``(step, field, predicate, reason)`` for each value some sink of the job cannot store.

    Checked per record where it enters the aggregate, so the dead letter keeps the record's
    origin and payload, and the window it would have joined is stored without it.
    """
    agg = plan.aggregate
    stored = dict(agg.group_by)
    for measure in agg.measures:
        if measure.field is not None and measure.function in ("min", "max"):
            stored[measure.field] = dict(plan.fields)[measure.field]
    checks = []
    for sink in plan.sinks:
        for name, ftype in stored.items():
            refusal = postgres.unstorable(ident(name), ftype)
            if refusal is not None:
                checks.append((f"sink.{sink.table}", name, f"COALESCE({refusal[0]}, FALSE)", refusal[1]))
    return checks


def _views(plan: Plan, source_has_metadata: bool, topic: str, time_column: str,
           with_proctime: bool) -> tuple[str, list[str], list[str]]:
    """The SELECT of ``hr_checked`` (event time exposed as ``time_column``), the views over it, and
    the names of those whose rows go to the dead-letter output."""
    agg = plan.aggregate
    origin = f"{literal(topic)} AS `_topic`, "
    if source_has_metadata:
        origin += "`_partition`, `_offset`"
    else:
        origin += "CAST(NULL AS INT) AS `_partition`, CAST(NULL AS BIGINT) AS `_offset`"
    origin += ", `_event_ms`"
    if with_proctime:
        origin += ", `_proctime`"
    if plan.validate.engine == "jvm":
        # flat columns: a nested ROW read by several outputs is copied by each of them
        def v(name: str) -> str:
            return ident("_v_" + name)

        flat = ", ".join(f"`_v`.{ident(n)} AS {v(n)}" for n in ("err_path", "err_msg", *dict(plan.fields)))
        checked = f"""SELECT `_payload`, {origin}, `_event_time` AS {ident(time_column)},
       {flat}
FROM (SELECT *, {validate_call(plan)} AS `_v` FROM `hr_source`)"""
    else:
        checked = f"""SELECT `_payload`, {origin}, `_event_time` AS {ident(time_column)},
       {VALIDATE_FUNCTION}(`_payload`) AS `_v`
FROM `hr_source`"""

        def v(name: str) -> str:
            return f"`_v`.{ident(name)}"

    rejected = f"""CREATE TEMPORARY VIEW `hr_rejected` AS
{_dead_letter_select(literal(plan.validate.step_id), v('err_path'), v('err_msg'))}
FROM `hr_checked` WHERE {v('err_msg')} IS NOT NULL"""
    # Lateness is judged per source partition against the largest event time read from it so
    # far: the watermark that partition alone would have, computed with every record rather
    # than periodically, and kept in keyed state, so that the judgement is the same in a replay
    # and after a restore from a checkpoint (Flink's own watermark is neither). The maximum runs
    # over every record, invalid ones included, with the very `_event_ms` the source's watermark
    # follows: Flink's watermark can then never be ahead of it, so the window operator never drops
    # a record this judgement let through.
    fields = ", ".join(f"{v(name)} AS {ident(name)}" for name, _ in plan.fields)
    ooo = plan.spec.source.event_time.max_out_of_orderness
    judged = f"""CREATE TEMPORARY VIEW `hr_judged` AS
SELECT `_payload`, `_topic`, `_partition`, `_offset`, `_event_time`, `_event_ms`, {v('err_msg')} AS `_error`,
       {fields},
       MAX({COUNT_FUNCTION}(`_event_ms`, 'records_in')) OVER (PARTITION BY `_partition` ORDER BY `_proctime`
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS `_max_seen`
FROM `hr_checked`"""
    is_late = late_condition("`_event_ms`", "`_max_seen`", ooo, agg.allowed_lateness_ms)
    lateness = format_duration_ms(agg.allowed_lateness_ms)
    late_error = (f"CONCAT('late: event time ', CAST(`_event_time` AS STRING), ' UTC is more than allowed_lateness "
                  f"({lateness}) behind the watermark of its partition (', "
                  f"CAST(TO_TIMESTAMP_LTZ({watermark_of('`_max_seen`', ooo)}, 3) AS STRING), ' UTC)')")
    late = f"""CREATE TEMPORARY VIEW `hr_late` AS
{_dead_letter_select(literal(agg.step_id), literal('/' + plan.event_time_field), late_error)}
FROM `hr_judged` WHERE `_error` IS NULL AND {is_late}"""
    on_time = f"""CREATE TEMPORARY VIEW `hr_on_time` AS
SELECT * FROM `hr_judged` WHERE `_error` IS NULL AND NOT {is_late}"""
    views = [rejected, judged, late, on_time]
    dead_letters = ["hr_rejected"]
    checks = _unstorable(plan)
    stored_from = "`hr_on_time`"
    if checks:
        refused = " OR ".join(f"({pred})" for _, _, pred, _ in checks)

        def case(pick: int) -> str:
            return "CASE " + " ".join(f"WHEN {c[2]} THEN {literal(c[pick])}" for c in checks) + " END"

        views.append(f"""CREATE TEMPORARY VIEW `hr_unstorable` AS
{_dead_letter_select(case(0), "CONCAT('/', " + case(1) + ")", case(3))}
FROM `hr_on_time` WHERE {refused}""")
        views.append(f"""CREATE TEMPORARY VIEW `hr_storable` AS
SELECT * FROM `hr_on_time` WHERE NOT ({refused})""")
        stored_from = "`hr_storable`"
        dead_letters.append("hr_unstorable")
    window = agg.window
    size = window.tumbling or (window.sliding.size if window.sliding else 0)
    group, start, end = window_sql(
        window.kind, "`_event_time`", size,
        slide_ms=window.sliding.slide if window.sliding else None,
        gap_ms=window.session.gap if window.session else None)
    keys = ", ".join(ident(n) for n, _ in agg.group_by)
    views.append(f"""CREATE TEMPORARY VIEW `hr_windows` AS
SELECT {keys}, CAST({start} AS TIMESTAMP(3)) AS `window_start`, CAST({end} AS TIMESTAMP(3)) AS `window_end`,
       {', '.join(measure_columns(agg.measures))}, COUNT(*) AS {ident(RECORDS_COLUMN)}
FROM {stored_from} GROUP BY {group}, {keys}""")
    return checked, views, dead_letters


def validate_call(plan: Plan) -> str:
    """The JVM validator's call; its literal is the schema and the fields to extract, in order."""
    et = plan.spec.source.event_time
    spec = {"schema": plan.validate.schema.document, "event_time": plan.event_time_field,
            "max_future_ms": et.max_future, "max_future": format_duration_ms(et.max_future),
            "fields": [[n, t.value] for n, t in plan.fields]}
    return f"{VALIDATE_FUNCTION}(`_payload`, {literal(json.dumps(spec, separators=(',', ':'), ensure_ascii=False))})"


def function_ddl(plan: Plan) -> tuple[str, ...]:
    """The JVM functions the SQL calls (the Python validate UDF is registered by the runner)."""
    payload = (f"CREATE TEMPORARY SYSTEM FUNCTION {PAYLOAD_FUNCTION} AS {literal(jvm.PAYLOAD_CLASS)} "
               "LANGUAGE JAVA",
               f"CREATE TEMPORARY SYSTEM FUNCTION {COUNT_FUNCTION} AS {literal(jvm.COUNT_CLASS)} LANGUAGE JAVA")
    if plan.validate.engine == "jvm":
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {VALIDATE_FUNCTION} AS {literal(jvm.VALIDATE_CLASS)} "
                "LANGUAGE JAVA", *payload)
    return (f"CREATE TEMPORARY SYSTEM FUNCTION {EVENT_TIME_FUNCTION} AS {literal(jvm.EVENT_TIME_CLASS)} "
            "LANGUAGE JAVA", *payload)


def _json_object(columns: list[tuple[str, str]]) -> str:
    parts = ", ".join(f"KEY {literal(name)} VALUE {expr}" for name, expr in columns)
    return f"JSON_OBJECT({parts})"


def _ts(col: str) -> str:
    return f"DATE_FORMAT({col}, 'yyyy-MM-dd HH:mm:ss.SSS')"


def compile_job(plan: Plan, profile: Profile, *, bounded_offsets: dict[int, int] | None = None,
                from_earliest: bool = False) -> CompiledJob:
    """SQL statements (DDL, views) plus the inserts or the collect query for ``profile``.

    A service job without a checkpoint to restore starts at its consumer group's committed
    offsets, or at the earliest ones with ``from_earliest`` (``headrace run --fresh``).
    """
    spec = plan.spec
    et = spec.source.event_time
    # the source's watermark: Flink's bounded-out-of-orderness rule (max - ooo - 1 ms), the one
    # the late judgement applies per partition (see late_condition)
    ooo = sql_interval(et.max_out_of_orderness + 1)
    views = view_tables(plan)
    config = job_config(plan, profile)
    functions = function_ddl(plan)
    if plan.validate.engine == "jvm":
        # the same call as in hr_checked: the second one per record is answered from a cache
        event_time_millis = f"({validate_call(plan)}).`event_ms`"
    else:
        event_time_millis = f"{EVENT_TIME_FUNCTION}(`_payload`, {literal(et.field)}, CAST({et.max_future} AS BIGINT))"
    if profile.embedded is not None:
        data_dir = Path(profile.embedded.data_dir)
        source = embedded.file_source_ddl(
            "hr_source", path=embedded.topic_file(data_dir, spec.source.kafka.topic),
            topic=spec.source.kafka.topic, event_time_millis=event_time_millis, out_of_orderness=ooo)
        # hr_checked is materialized through a DataStream (see runner): the rowtime travels as the
        # record timestamp and comes back as `_event_time`, so the query exposes it under another name
        checked, after, dead_letters = _views(plan, False, spec.source.kafka.topic, "_rowtime", with_proctime=False)
        dl = [(name, _ts(ident(name)) if name == "failed_at" else ident(name))
              for name, _ in deadletter.COLUMNS]
        view_cols = [(n, ident(n)) for n, _ in plan.aggregate.group_by]
        view_cols += [("window_start", _ts("`window_start`")), ("window_end", _ts("`window_end`"))]
        view_cols += [(m.name, ident(m.name)) for m in plan.aggregate.measures]
        view_cols += [(RECORDS_COLUMN, ident(RECORDS_COLUMN))]
        dead = "".join(f"UNION ALL SELECT 'dead_letter', {_json_object(dl)} FROM {ident(v)}\n"
                       for v in dead_letters)
        collect = (f"SELECT 'late' AS `_kind`, {_json_object(dl)} AS `_body` FROM `hr_late`\n{dead}"
                   f"UNION ALL SELECT 'view', {_json_object(view_cols)} FROM `hr_windows`")
        return CompiledJob(plan=plan, profile=profile, functions=functions, tables=(source,), checked_select=checked,
                           views=tuple(after), collect_query=collect, view_tables=views, config=config)

    assert profile.kafka is not None and profile.postgres is not None
    kconn, pconn = profile.kafka, profile.postgres
    tables = [kafka.source_ddl(
        "hr_source", topic=spec.source.kafka.topic, bootstrap=kconn.bootstrap_servers,
        group=spec.source.kafka.group or spec.job, event_time_millis=event_time_millis, out_of_orderness=ooo,
        idle_timeout_ms=et.idle_timeout, properties=kconn.properties, bounded_offsets=bounded_offsets,
        from_earliest=from_earliest)]
    tables.append(kafka.dead_letter_ddl("hr_dead_letter", topic=plan.dead_letter_topic,
                                            bootstrap=kconn.bootstrap_servers, properties=kconn.properties))
    late_table = "hr_dead_letter"
    if plan.late_topic != plan.dead_letter_topic:
        late_table = "hr_late_out"
        tables.append(kafka.dead_letter_ddl(late_table, topic=plan.late_topic,
                                                bootstrap=kconn.bootstrap_servers,
                                                properties=kconn.properties, metric="late"))
    password = pconn.password.get_secret_value() if pconn.password else None
    for view in views:
        tables.append(postgres.jdbc_sink_ddl(f"hr_sink_{view.name}", view, url=pconn.jdbc_url,
                                                 user=pconn.user, password=password))
    checked, after, dead_letters = _views(plan, True, spec.source.kafka.topic, "_event_time", with_proctime=True)
    dead = " UNION ALL ".join(f"SELECT * FROM {ident(v)}" for v in dead_letters)
    inserts = [f"INSERT INTO `hr_dead_letter` {dead}",
               f"INSERT INTO {ident(late_table)} SELECT * FROM `hr_late`"]
    inserts += [f"INSERT INTO {ident('hr_sink_' + v.name)} SELECT * FROM `hr_windows`" for v in views]
    return CompiledJob(plan=plan, profile=profile, functions=functions, tables=tuple(tables), checked_select=checked,
                       views=tuple(after), inserts=tuple(inserts), view_tables=views, config=config)
