"""Compile a :class:`jobs.plan.Plan` into Flink SQL for one profile.

The job is one Flink SQL program built from temporary views, so the JVM does Kafka I/O,
watermarks, routing and the window aggregation. The compiler only wires: each planned node
(``schemas/kinds.py``) contributes views over the view of the node it reads, plus dead-letter and
late views; the compiler adds the source table, the outputs and one statement per sink::

    source ─► validate (checked, judged) ─► [steps …] ─► aggregate ─► sinks (upserts)
                 └─► dead letters                           └─► late output

With a service profile the outputs are ``INSERT`` statements of one statement set (one job,
one read of the source). With the embedded profile they are one ``UNION ALL`` query whose
changelog the runner applies to local files and SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from headrace.connectors import deadletter, embedded, kafka
from headrace.connectors.sqltext import ident, literal
from headrace.jobs.plan import Plan
from headrace.operators import jvm
from headrace.schemas.kinds import NodeSql, SourceDecoding, StepNode, holds_nul, nul_flags
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, ViewDef

PAYLOAD_FUNCTION = "hr_payload"
#: the view of the decoded records every output shares (the embedded runner materializes it)
CHECKED_VIEW = "hr_checked"
#: the embedded job's outputs, handed to the run in its JVM (connectors/embedded.py, ``client_sink_ddl``)
CLIENT_TABLE = "hr_client"


@dataclass(frozen=True)
class CompiledJob:
    """Flink SQL for one profile: tables, the checked query, the views over it, outputs."""

    plan: Plan
    profile: Profile
    functions: tuple[str, ...]
    tables: tuple[str, ...]
    checked_select: str
    views: tuple[str, ...]
    wiring: Wiring
    inserts: tuple[str, ...] = ()
    collect_query: str | None = None
    view_tables: tuple[ViewDef, ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.collect_query is not None

    @property
    def statements(self) -> tuple[str, ...]:
        """Every statement in order, as one SQL script (the checked view as a plain view)."""
        checked = f"CREATE TEMPORARY VIEW {ident(CHECKED_VIEW)} AS\n{self.checked_select}"
        return self.functions + self.tables + (checked,) + self.views


@dataclass
class Wiring:
    """What the compiler tells nodes (``schemas.kinds.Wiring``): view names, shared SQL, reads."""

    plan: Plan
    embedded: bool
    source_topic: str
    profile: Profile

    def view(self, node_id: str, part: str) -> str:
        if part == "checked":
            return ident(CHECKED_VIEW)
        return ident(f"hr_{node_id}_{part}".replace("-", "_").replace(".", "_"))

    def source_json_field(self, node_id: str, name: str) -> bool:
        fmt = self.plan.spec.source.format
        if self.embedded or not fmt.format.json_objects or fmt.binary:
            return False
        at = self.plan.inputs.get(node_id)
        while at is not None:
            if not self.plan.node(at).passes_fields:
                return False
            at = self.plan.inputs.get(at)
        return name in dict(self.plan.decoder.output.fields)

    def nul_flagged(self, node_id: str) -> frozenset[str]:
        at = self.plan.inputs.get(node_id)
        flagged = set(nul_flags(self.source_decoding.fields))
        while at is not None and at != self.plan.decoder.id:
            node = self.plan.node(at)
            if not node.passes_fields:
                return frozenset()
            flagged -= set(node.adds)
            at = self.plan.inputs.get(at)
        return frozenset(flagged) if at is not None else frozenset()

    def dead_letter_select(self, step: str, path: str, error: str) -> str:
        """The dead-letter columns (``connectors/deadletter.py``) over a view with the source columns.

        A step that ``rewrites_outputs`` (the mask step) changes every payload and error text on its
        way out, whether the record was refused before that step or after it."""
        payload = "`_payload`"
        for steps in rewriting_kinds(self.plan).values():
            payload, error = steps[0].rewrite_outputs(steps, payload, error, self, self.plan.spec.dead_letter.payload)
        # a binary format's payload is carried in base64 (its bytes are not text)
        binary = ", TRUE" if self.plan.decoder.binary_payloads else ""
        digest = f"{PAYLOAD_FUNCTION}({payload}, {deadletter.PAYLOAD_MAX_BYTES}{binary})"
        record_id = "CONCAT(`_topic`, '/', CAST(`_partition` AS STRING), '/', CAST(`_offset` AS STRING))"
        return f"""SELECT {record_id} AS `id`, `_topic` AS `source_topic`, `_partition` AS `source_partition`,
       `_offset` AS `source_offset`, {step} AS `step`, {path} AS `error_path`, {error} AS `error`,
       {digest}.`payload` AS `payload`, {digest}.`payload_bytes` AS `payload_bytes`,
       {digest}.`payload_sha256` AS `payload_sha256`, {digest}.`payload_truncated` AS `payload_truncated`,
       {digest}.`failed_at` AS `failed_at`"""

    def fields_needed(self) -> tuple[tuple[str, FieldType], ...]:
        return self.plan.fields

    @cached_property
    def source_decoding(self) -> SourceDecoding:
        """What the source decodes of each record (the decoding step's answer, asked once)."""
        return self.plan.decoder.source_decoding(self)

    def carried(self, node_id: str) -> tuple[str, ...]:
        upstream = self.plan.inputs[node_id]
        if upstream is None:
            return ()
        node = self.plan.node(upstream)
        if self.plan.inputs[upstream] is None:  # the decoding step: what it extracts
            return tuple(n for n, _ in self.plan.fields)
        return tuple(dict.fromkeys((*self.carried(upstream), *node.adds)))

    def unstorable(self, node_id: str) -> list[tuple[str, str, str, str]]:
        """``(step, field, predicate, reason)`` for each value some sink of ``node_id`` cannot store."""
        node = self.plan.node(node_id)
        upstream_id = self.plan.inputs[node_id]
        upstream = self.plan.node(upstream_id).output if upstream_id else None
        checks = []
        # the fields whose U+0000 the source flagged, as long as no step between changed them
        flagged = self.nul_flagged(node_id)
        decoded = self.source_decoding.fields
        # this step's sinks, and those of the views computed from its records without judging
        # them again (roll-ups): a value they would store is refused here, per record
        views = [node, *(v for v in self.plan.view_steps if v.judged_by == node_id and v.id != node_id)]
        for view in views:
            stored = view.stored_fields(upstream) if upstream is not None else {}
            for sink in self.plan.sinks_of(view.id):
                for name, ftype in stored.items():
                    refusal = sink.unstorable(ident(name), ftype,
                                               holds_nul(decoded, name) if name in flagged else None)
                    if refusal is not None:
                        checks.append((sink.id, name, f"COALESCE({refusal[0]}, FALSE)", refusal[1]))
                refusal = sink.unstorable_time("`_event_ms`")
                if refusal is not None:
                    checks.append((sink.id, self.plan.event_time_field, f"COALESCE({refusal[0]}, FALSE)", refusal[1]))
        return checks


def job_config(plan: Plan, profile: Profile) -> dict[str, str]:
    spec = plan.spec
    config = {
        "pipeline.name": spec.job,
        "parallelism.default": str(spec.parallelism),
        "table.local-time-zone": "UTC",
        # results are upserts keyed by group keys + window: let the planner see them as such
        "table.exec.sink.upsert-materialize": "NONE",
        # sources emit their watermark every 20 ms (Flink's default is 200 ms): a window fires
        # at most 20 ms after the event that closes it was read
        "pipeline.auto-watermark-interval": "20 ms",
        # a window's row crosses two exchanges (partial → final aggregate → merge and sink): send
        # network buffers after 10 ms, not Flink's 100 ms (a full buffer goes at once either way)
        "execution.buffer-timeout.interval": "10 ms",

        # measured on the example job (tests/bench): SQL operators may reuse row objects, and
        # larger Arrow batches / bundles mean fewer JVM<->Python round trips (1.6x together);
        # a bundle still closes after python.fn-execution.bundle.time (1 s), bounding latency
        "pipeline.object-reuse": "true",
        "python.fn-execution.arrow.batch.size": "50000",
        "python.fn-execution.bundle.size": "200000",
    }
    if any(node.requirements.python for node in plan.steps):
        # the outputs of a Python function's view must share one call of it: without this each
        # output prunes the view differently and the planner runs the Python UDF once per output.
        # Without Python, each output's filters and projections are fused into one operator over
        # the shared source instead of one operator per view (measured: the source task spent
        # ~40% of its time in chained Calc operators)
        config["table.optimizer.reuse-optimize-block-with-digest-enabled"] = "true"
    if profile.embedded is None:
        config.update(durable_state(spec.job, profile))
        config["execution.checkpointing.interval"] = f"{spec.checkpoint.interval} ms"
    else:
        # no checkpoints to resume from and the results are collected by this process: a local
        # run that fails should stop and say why
        config["restart-strategy.type"] = "none"
    for node in (*plan.steps, *plan.sinks):
        config.update(node.flink_options())
    config.update(profile.flink)
    return config


def durable_state(job: str, profile: Profile) -> dict[str, str]:
    """RocksDB state, incremental checkpoints kept on failure and cancellation, bounded restarts:
    the settings of ``flink-conf/config.yaml``, with this job's directories from the profile."""
    from headrace.jobs.cluster import job_defaults

    checkpoints = profile.state.uri(profile.state.checkpoints).rstrip("/") + f"/{job}"
    return {**job_defaults(), "execution.checkpointing.dir": checkpoints,
            "execution.checkpointing.savepoint-dir": profile.state.uri(profile.state.savepoints)}


def source_properties(plan: Plan, wiring: Wiring, properties: dict[str, str]) -> dict[str, str]:
    """The Kafka consumer's properties: the profile's, and those the steps add (their
    ``interceptor.classes`` joined to the profile's own)."""
    merged = dict(properties)
    for node in (*plan.steps, *plan.sinks):
        for key, value in node.source_properties(wiring).items():
            if key == "interceptor.classes" and merged.get(key):
                value = ",".join(dict.fromkeys([*merged[key].split(","), value]))
            merged[key] = value
    return merged


def rewriting_kinds(plan: Plan) -> dict[str, list[StepNode]]:
    """The steps that change every output's payload and error (``rewrites_outputs``), by kind."""
    kinds: dict[str, list[StepNode]] = {}
    for node in plan.steps:
        if node.rewrites_outputs:
            kinds.setdefault(node.kind, []).append(node)
    return kinds


def function_ddl(plan: Plan) -> tuple[str, ...]:
    """The JVM functions the SQL calls (Python functions are registered by their nodes)."""
    shared = (f"CREATE TEMPORARY SYSTEM FUNCTION {PAYLOAD_FUNCTION} AS {literal(jvm.PAYLOAD_CLASS)} LANGUAGE JAVA",)
    own = tuple(ddl for node in (*plan.steps, *plan.sinks) for ddl in node.functions())
    for steps in rewriting_kinds(plan).values():
        own += steps[0].output_functions()
    return tuple(dict.fromkeys(own + shared))  # two sinks of one kind declare its function once


@dataclass
class _Wired:
    checked: str
    views: list[str]
    dead_letters: list[str]
    late: list[str]
    outputs: dict[str, str]  # node id -> its output view


def wire(plan: Plan, wiring: Wiring) -> _Wired:
    """Every node's views, each over the output of the node it reads, in plan order."""
    outputs: dict[str, str] = {}
    views: list[str] = []
    dead: list[str] = []
    late: list[str] = []
    checked = ""
    for node in plan.steps:
        upstream = plan.inputs[node.id]
        sql: NodeSql = node.sql(wiring, outputs[upstream] if upstream else ident("hr_source"))
        if sql.checked is not None:
            checked = sql.checked
        views += sql.views
        dead += sql.dead_letters
        late += sql.late
        if sql.output is not None:
            outputs[node.id] = sql.output
    return _Wired(checked, views, dead, late, outputs)


def _json_object(columns: list[tuple[str, str]]) -> str:
    parts = ", ".join(f"KEY {literal(name)} VALUE {expr}" for name, expr in columns)
    return f"JSON_OBJECT({parts})"


def _ts(col: str) -> str:
    return f"DATE_FORMAT({col}, 'yyyy-MM-dd HH:mm:ss.SSS')"


def _union(views: list[str]) -> str:
    return " UNION ALL ".join(f"SELECT * FROM {v}" for v in views)


def compile_job(plan: Plan, profile: Profile, *, bounded_offsets: dict[int, int] | None = None,
                from_earliest: bool = False) -> CompiledJob:
    """SQL statements (DDL, views) plus the inserts or the collect query for ``profile``.

    A service job without a checkpoint to restore starts at its consumer group's committed
    offsets, or at the earliest ones with ``from_earliest`` (``headrace run --fresh``).
    """
    spec = plan.spec
    et = spec.source.event_time
    # the source's watermark: Flink's bounded-out-of-orderness rule (max - ooo - 1 ms), the one
    # the late judgement applies per partition (see operators/aggregate.py, late_condition)
    ooo = et.max_out_of_orderness
    # sinks of one view under one name (a table and a Redis prefix, say) share its embedded table
    views = tuple({sink.view.name: sink.view for sink in plan.sinks}.values())
    config = job_config(plan, profile)
    functions = function_ddl(plan)
    wiring = Wiring(plan, profile.embedded is not None, spec.source.kafka.topic, profile)
    decoding = wiring.source_decoding
    wired = wire(plan, wiring)
    if profile.embedded is not None:
        data_dir = Path(profile.embedded.data_dir)
        binary = spec.source.format.binary
        source = embedded.file_source_ddl(
            "hr_source", path=embedded.topic_file(data_dir, spec.source.kafka.topic, binary),
            decoding=decoding, out_of_orderness_ms=ooo, binary=binary)
        dl = [(name, _ts(ident(name)) if name == "failed_at" else ident(name)) for name, _ in deadletter.COLUMNS]
        parts = [f"SELECT 'late' AS `_kind`, {_json_object(dl)} AS `_body` FROM ({_union(wired.late)})"]
        parts += [f"SELECT 'dead_letter', {_json_object(dl)} FROM {v}" for v in wired.dead_letters]
        for sink in {s.view.name: s for s in plan.sinks}.values():
            view = sink.view
            cols = [(n, ident(n)) for n, _ in view.keys]
            cols += [("window_start", _ts("`window_start`")), ("window_end", _ts("`window_end`"))]
            cols += [(n, f"TO_BASE64({ident(n)})" if t is FieldType.BYTES else ident(n)) for n, t in view.measures]
            cols += [(RECORDS_COLUMN, ident(RECORDS_COLUMN))]
            parts.append(f"SELECT {literal('view:' + view.name)}, {_json_object(cols)} "
                         f"FROM {wired.outputs[plan.inputs[sink.id] or '']}")
        collect = "\nUNION ALL ".join(parts)
        client: tuple[str, ...] = ()  # the runner's DataStream round trip (Python validation) has no plan
        if not plan.decoder.requirements.python:
            client = (embedded.client_sink_ddl(CLIENT_TABLE, channel=plan.name),)
        return CompiledJob(plan=plan, profile=profile, functions=functions, tables=(source, *client),
                           checked_select=wired.checked, views=tuple(wired.views), wiring=wiring,
                           inserts=tuple(f"INSERT INTO {ident(CLIENT_TABLE)}\n{collect}" for _ in client),
                           collect_query=collect, view_tables=views, config=config)

    assert profile.kafka is not None
    kconn = profile.kafka
    tables = [kafka.source_ddl(
        "hr_source", topic=spec.source.kafka.topic, bootstrap=kconn.bootstrap_servers,
        group=spec.source.kafka.group or spec.job, decoding=decoding, out_of_orderness_ms=ooo,
        idle_timeout_ms=et.idle_timeout, properties=source_properties(plan, wiring, kconn.java_properties()),
        bounded_offsets=bounded_offsets,
        from_earliest=from_earliest)]
    tables.append(kafka.dead_letter_ddl("hr_dead_letter", topic=plan.dead_letter_topic,
                                        bootstrap=kconn.bootstrap_servers, properties=kconn.java_properties()))
    late_table = "hr_dead_letter"
    if plan.late_topic != plan.dead_letter_topic:
        late_table = "hr_late_out"
        tables.append(kafka.dead_letter_ddl(late_table, topic=plan.late_topic, bootstrap=kconn.bootstrap_servers,
                                            properties=kconn.java_properties(), metric="late"))
    tables += [sink.table_ddl(profile) for sink in plan.sinks]
    inserts = [f"INSERT INTO `hr_dead_letter` {_union(wired.dead_letters)}",
               f"INSERT INTO {ident(late_table)} {_union(wired.late)}"]
    inserts += [sink.insert_sql(wired.outputs[plan.inputs[sink.id] or ""]) for sink in plan.sinks]
    return CompiledJob(plan=plan, profile=profile, functions=functions, tables=tuple(tables),
                       checked_select=wired.checked, views=tuple(wired.views), wiring=wiring,
                       inserts=tuple(inserts), view_tables=views, config=config)

