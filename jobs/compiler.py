"""Compile a :class:`jobs.plan.Plan` into Flink SQL for one profile.

The job is one Flink SQL program built from temporary views, so the JVM does Kafka I/O,
watermarks, routing and the window aggregation. ``validate`` (decode + check + extract fields)
is ``hr_validate``: the JVM function of ``operators/jvm`` when the schema is in its subset (it
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

from connectors import deadletter, embedded, kafka, postgres
from connectors.postgres import ViewTable
from connectors.sqltext import ident, literal
from jobs.plan import Plan
from jobs.profiles import Profile
from operators import jvm
from operators.aggregate import late_condition, measure_columns, window_sql
from operators.durations import format_duration_ms, sql_interval

VALIDATE_FUNCTION = "hr_validate"
EVENT_TIME_FUNCTION = "hr_event_time"


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
    view_tables: tuple[ViewTable, ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.collect_query is not None

    @property
    def statements(self) -> tuple[str, ...]:
        """Every statement in order, as one SQL script (hr_checked as a plain view)."""
        checked = f"CREATE TEMPORARY VIEW `hr_checked` AS\n{self.checked_select}"
        return self.functions + self.tables + (checked,) + self.views


def view_tables(plan: Plan) -> tuple[ViewTable, ...]:
    agg = plan.aggregate
    measures = tuple((m.name, t) for m, t in zip(agg.measures, agg.measure_types, strict=True))
    return tuple(ViewTable(name=s.table, keys=agg.group_by, measures=measures) for s in plan.sinks)


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
        # a sink that keeps failing (dropped table, bad credentials) ends the run with its cause
        # instead of restarting forever; profiles can choose another strategy
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "3",
        "restart-strategy.fixed-delay.delay": "2 s",
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
        config["execution.checkpointing.interval"] = f"{spec.checkpoint.interval} ms"
    else:
        # no checkpoints to resume from and the results are collected by this process: a local
        # run that fails should stop and say why
        config["restart-strategy.type"] = "none"
    config.update(profile.flink)
    return config


def _views(plan: Plan, source_has_metadata: bool, topic: str, time_column: str) -> tuple[str, list[str]]:
    """The SELECT of ``hr_checked`` (event time exposed as ``time_column``) and the views over it."""
    agg = plan.aggregate
    origin = f"{literal(topic)} AS `_topic`, "
    if source_has_metadata:
        origin += "`_partition`, `_offset`"
    else:
        origin += "CAST(NULL AS INT) AS `_partition`, CAST(NULL AS BIGINT) AS `_offset`"
    is_late = late_condition("`_event_time`", "CURRENT_WATERMARK(`_event_time`)", agg.allowed_lateness_ms)
    if plan.validate.engine == "jvm":
        # flat columns: a nested ROW read by three outputs is copied by each of them
        def v(name: str) -> str:
            return ident("_v_" + name)

        flat = ", ".join(f"`_v`.{ident(n)} AS {v(n)}" for n in ("err_path", "err_msg", *dict(plan.fields)))
        checked = f"""SELECT `_payload`, {origin}, `_event_time` AS {ident(time_column)},
       {flat},
       {is_late} AS `_late`
FROM (SELECT *, {validate_call(plan)} AS `_v` FROM `hr_source`)"""
        late_ref = "`_late`"
    else:
        # the Python UDF echoes the flag: evaluated as its argument, it is judged against the
        # watermark when the record is read, not after a whole Arrow batch went through Python
        checked = f"""SELECT `_payload`, {origin}, `_event_time` AS {ident(time_column)},
       {VALIDATE_FUNCTION}(`_payload`, {is_late}) AS `_v`
FROM `hr_source`"""

        def v(name: str) -> str:
            return f"`_v`.{ident(name)}"

        late_ref = "`_v`.`late`"
    dl_cols = "`_topic` AS `source_topic`, `_partition` AS `source_partition`, `_offset` AS `source_offset`"
    rejected = f"""CREATE TEMPORARY VIEW `hr_rejected` AS
SELECT {dl_cols}, {literal(plan.validate.step_id)} AS `step`,
       {v('err_path')} AS `error_path`, {v('err_msg')} AS `error`, `_payload` AS `payload`,
       CAST(CURRENT_TIMESTAMP AS TIMESTAMP_LTZ(3)) AS `failed_at`
FROM `hr_checked` WHERE {v('err_msg')} IS NOT NULL"""
    lateness = format_duration_ms(agg.allowed_lateness_ms)
    late = f"""CREATE TEMPORARY VIEW `hr_late` AS
SELECT {dl_cols}, {literal(agg.step_id)} AS `step`, {literal('/' + plan.event_time_field)} AS `error_path`,
       CONCAT('late: event time ', CAST(`_event_time` AS STRING),
              ' was more than allowed_lateness ({lateness}) behind the watermark') AS `error`,
       `_payload` AS `payload`, CAST(CURRENT_TIMESTAMP AS TIMESTAMP_LTZ(3)) AS `failed_at`
FROM `hr_checked` WHERE {v('err_msg')} IS NULL AND {late_ref}"""
    fields = ", ".join(f"{v(name)} AS {ident(name)}" for name, _ in plan.fields)
    on_time = f"""CREATE TEMPORARY VIEW `hr_on_time` AS
SELECT `_event_time`, {fields}
FROM `hr_checked` WHERE {v('err_msg')} IS NULL AND NOT {late_ref}"""
    window = agg.window
    size = window.tumbling or (window.sliding.size if window.sliding else 0)
    group, start, end = window_sql(
        window.kind, "`_event_time`", size,
        slide_ms=window.sliding.slide if window.sliding else None,
        gap_ms=window.session.gap if window.session else None)
    keys = ", ".join(ident(n) for n, _ in agg.group_by)
    windows = f"""CREATE TEMPORARY VIEW `hr_windows` AS
SELECT {keys}, CAST({start} AS TIMESTAMP(3)) AS `window_start`, CAST({end} AS TIMESTAMP(3)) AS `window_end`,
       {', '.join(measure_columns(agg.measures))}
FROM `hr_on_time` GROUP BY {group}, {keys}"""
    return checked, [rejected, late, on_time, windows]


def validate_call(plan: Plan) -> str:
    """The JVM validator's call; its literal is the schema and the fields to extract, in order."""
    spec = {"schema": plan.validate.schema.document, "event_time": plan.event_time_field,
            "fields": [[n, t.value] for n, t in plan.fields]}
    return f"{VALIDATE_FUNCTION}(`_payload`, {literal(json.dumps(spec, separators=(',', ':'), ensure_ascii=False))})"


def function_ddl(plan: Plan) -> tuple[str, ...]:
    """The JVM functions the SQL calls (the Python validate UDF is registered by the runner)."""
    if plan.validate.engine == "jvm":
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {VALIDATE_FUNCTION} AS {literal(jvm.VALIDATE_CLASS)} "
                "LANGUAGE JAVA",)
    return (f"CREATE TEMPORARY SYSTEM FUNCTION {EVENT_TIME_FUNCTION} AS {literal(jvm.EVENT_TIME_CLASS)} "
            "LANGUAGE JAVA",)


def _json_object(columns: list[tuple[str, str]]) -> str:
    parts = ", ".join(f"KEY {literal(name)} VALUE {expr}" for name, expr in columns)
    return f"JSON_OBJECT({parts})"


def _ts(col: str) -> str:
    return f"DATE_FORMAT({col}, 'yyyy-MM-dd HH:mm:ss.SSS')"


def compile_job(plan: Plan, profile: Profile, *,
                bounded_offsets: dict[int, int] | None = None) -> CompiledJob:
    """SQL statements (DDL, views) plus the inserts or the collect query for ``profile``."""
    spec = plan.spec
    et = spec.source.event_time
    ooo = sql_interval(et.max_out_of_orderness)
    views = view_tables(plan)
    config = job_config(plan, profile)
    functions = function_ddl(plan)
    if plan.validate.engine == "jvm":
        # the same call as in hr_checked: the second one per record is answered from a cache
        event_time_millis = f"({validate_call(plan)}).`event_ms`"
    else:
        event_time_millis = f"{EVENT_TIME_FUNCTION}(`_payload`, {literal(et.field)})"
    if profile.embedded is not None:
        data_dir = Path(profile.embedded.data_dir)
        source = embedded.file_source_ddl(
            "hr_source", path=embedded.topic_file(data_dir, spec.source.kafka.topic),
            topic=spec.source.kafka.topic, event_time_millis=event_time_millis, out_of_orderness=ooo)
        # hr_checked is materialized through a DataStream (see runner): the rowtime travels as the
        # record timestamp and comes back as `_event_time`, so the query exposes it under another name
        checked, after = _views(plan, False, spec.source.kafka.topic, "_rowtime")
        dl = [(name, _ts(ident(name)) if name == "failed_at" else ident(name))
              for name, _ in deadletter.COLUMNS]
        view_cols = [(n, ident(n)) for n, _ in plan.aggregate.group_by]
        view_cols += [("window_start", _ts("`window_start`")), ("window_end", _ts("`window_end`"))]
        view_cols += [(m.name, ident(m.name)) for m in plan.aggregate.measures]
        collect = (f"SELECT 'dead_letter' AS `_kind`, {_json_object(dl)} AS `_body` FROM `hr_rejected`\n"
                   f"UNION ALL SELECT 'late', {_json_object(dl)} FROM `hr_late`\n"
                   f"UNION ALL SELECT 'view', {_json_object(view_cols)} FROM `hr_windows`")
        return CompiledJob(plan=plan, profile=profile, functions=functions, tables=(source,), checked_select=checked,
                           views=tuple(after), collect_query=collect, view_tables=views, config=config)

    assert profile.kafka is not None and profile.postgres is not None
    kconn, pconn = profile.kafka, profile.postgres
    tables = [kafka.source_ddl(
        "hr_source", topic=spec.source.kafka.topic, bootstrap=kconn.bootstrap_servers,
        group=spec.source.kafka.group or spec.job, event_time_millis=event_time_millis, out_of_orderness=ooo,
        idle_timeout_ms=et.idle_timeout, properties=kconn.properties, bounded_offsets=bounded_offsets)]
    tables.append(kafka.dead_letter_ddl("hr_dead_letter", topic=plan.dead_letter_topic,
                                            bootstrap=kconn.bootstrap_servers, properties=kconn.properties))
    late_table = "hr_dead_letter"
    if plan.late_topic != plan.dead_letter_topic:
        late_table = "hr_late_out"
        tables.append(kafka.dead_letter_ddl(late_table, topic=plan.late_topic,
                                                bootstrap=kconn.bootstrap_servers,
                                                properties=kconn.properties))
    password = pconn.password.get_secret_value() if pconn.password else None
    for view in views:
        tables.append(postgres.jdbc_sink_ddl(f"hr_sink_{view.name}", view, url=pconn.jdbc_url,
                                                 user=pconn.user, password=password))
    checked, after = _views(plan, True, spec.source.kafka.topic, "_event_time")
    inserts = ["INSERT INTO `hr_dead_letter` SELECT * FROM `hr_rejected`",
               f"INSERT INTO {ident(late_table)} SELECT * FROM `hr_late`"]
    inserts += [f"INSERT INTO {ident('hr_sink_' + v.name)} SELECT * FROM `hr_windows`" for v in views]
    return CompiledJob(plan=plan, profile=profile, functions=functions, tables=tuple(tables), checked_select=checked,
                       views=tuple(after), inserts=tuple(inserts), view_tables=views, config=config)
