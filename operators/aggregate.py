"""``aggregate``: windowed aggregation on event time, compiled to Flink SQL group windows.

Flink SQL's group windows (``TUMBLE``/``HOP``/``SESSION``) run in the JVM, so no Python touches
the per-record window state. Allowed lateness uses Flink's late firing: a window emits when the
watermark passes its end, then re-emits (an upsert) for every record that arrives within
``allowed_lateness``.

A record is *late* when its event time is at or behind ``W - allowed_lateness``, where ``W`` is
the watermark of its own source partition computed with every record: the largest event time
read from that partition so far (this record included) minus ``max_out_of_orderness`` minus
1 ms (see :func:`late_condition`). Late records never reach the window operator but go to the
late output, so none is dropped. Flink's own watermark (the minimum over partitions, emitted
periodically) is never ahead of ``W``, so the window operator never drops a record that was
judged on time; and since ``W`` depends only on the partition's records in offset order, and the
largest event time is kept in checkpointed state, a replay or a restore judges every record
as the first run did.

The plain-Python :func:`assign_windows` is the reference semantics used by tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from headrace.connectors.sqltext import ident, literal
from headrace.operators import jvm, udaf
from headrace.operators.measures import SKETCH_FUNCTIONS, Measure, parse_measures
from headrace.schemas.durations import MAX_INTERVAL_MS, format_duration_ms, sql_interval
from headrace.schemas.errors import SpecError
from headrace.schemas.kinds import ExecNode, NodeSql, PlanContext, Requirements, StepKind, Stream, ViewNode, Wiring
from headrace.schemas.options import Duration, Identifier, SpecModel, StepOptions
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, ViewDef
from pydantic import AfterValidator, Field, model_validator

#: the function putting windows together from parts (operators/java/.../functions/MergeWindows.java)
MERGE_FUNCTION = "hr_merge_windows"


def _check_measure(expression: str) -> str:
    parse_measures("m", expression)
    return expression


MeasureExpression = Annotated[str, AfterValidator(_check_measure),
                              Field(examples=["count()", "sum(bytes)", "avg(latency_ms)"])]


class SlidingWindow(SpecModel):
    size: Duration
    slide: Duration

    @model_validator(mode="after")
    def _slide_divides_size(self) -> SlidingWindow:
        if self.slide <= 0 or self.size <= 0 or self.size % self.slide:
            raise ValueError("sliding window 'size' must be a positive multiple of 'slide'")
        return self


class SessionWindow(SpecModel):
    gap: Duration


class WindowSpec(SpecModel):
    """Exactly one of ``tumbling: 1m``, ``sliding: {size, slide}``, ``session: {gap}``."""

    tumbling: Duration | None = None
    sliding: SlidingWindow | None = None
    session: SessionWindow | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WindowSpec:
        chosen = [k for k in ("tumbling", "sliding", "session") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("a window is exactly one of 'tumbling', 'sliding' or 'session'")
        if self.tumbling is not None and self.tumbling <= 0:
            raise ValueError("a tumbling window must be longer than 0")
        sizes = [self.tumbling, self.sliding.size if self.sliding else None, self.session.gap if self.session else None]
        if any(size is not None and size >= MAX_INTERVAL_MS for size in sizes):
            raise ValueError("a window is at most 99 days (Flink SQL's day-to-second intervals hold two digits)")
        return self

    @property
    def kind(self) -> Literal["tumbling", "sliding", "session"]:
        if self.tumbling is not None:
            return "tumbling"
        return "sliding" if self.sliding is not None else "session"

    def describe(self) -> str:
        d = format_duration_ms
        if self.sliding is not None:
            return f"sliding {d(self.sliding.size)} every {d(self.sliding.slide)}"
        if self.session is not None:
            return f"session gap {d(self.session.gap)}"
        return f"tumbling {d(self.tumbling or 0)}"


class AggregateOptions(StepOptions):
    """Windowed aggregation on event time; results are upserted by group keys + window bounds."""

    group_by: list[Identifier] = Field(min_length=1)
    window: WindowSpec
    allowed_lateness: Duration = Field(default=0, lt=MAX_INTERVAL_MS)
    measures: dict[Identifier, MeasureExpression] = Field(min_length=1)
    #: store each percentile's and approx_count_distinct's sketch beside the measures, as bytes
    keep_sketch: bool = False
    #: jars holding the Java classes of ``udaf(...)`` measures (paths relative to the job's project)
    jars: list[str] = Field(default_factory=list)


@dataclass(kw_only=True)
class AggregateNode(ViewNode):
    """A planned aggregate: its output is a view (group keys, window bounds, typed measures)."""

    group_by: tuple[tuple[str, FieldType], ...]
    window: WindowSpec
    measures: tuple[Measure, ...]
    measure_types: tuple[FieldType, ...]
    event_time_field: str
    out_of_orderness_ms: int
    #: a roll-up: the finer aggregate it is computed from (its ``from:``), and per part column of
    #: this step's measures, the finer step's part column it is read from
    rollup_of: AggregateNode | None = field(default=None, compare=False, repr=False)
    rollup_parts: tuple[tuple[str, str], ...] = ()
    #: the roll-ups reading this step: its windows are put together from parts, which they share
    rollups: list[AggregateNode] = field(default_factory=list, compare=False, repr=False)
    #: ``keep_sketch``: per kept sketch, its column and the measure whose sketch it is
    kept: tuple[tuple[str, Measure], ...] = ()
    #: the folder Python udaf() modules are imported from
    project: Path = field(default_factory=Path.cwd)

    @property
    def judged_by(self) -> str:
        return self.rollup_of.judged_by if self.rollup_of is not None else self.id

    @property
    def step_id(self) -> str:
        return self.id

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The upsert key of every sink: group keys, then the window bounds."""
        return tuple(name for name, _ in self.group_by) + ("window_start", "window_end")

    def explain(self) -> str:
        measures = ", ".join(f"{m.name}={m.text}" for m in self.measures)
        if self.rollup_of is not None:
            return (f"roll-up of step '{self.rollup_of.id}': {self.window.describe()} by "
                    f"({', '.join(n for n, _ in self.group_by)}), merged from its windows' parts: {measures}")
        return (f"{self.window.describe()} by ({', '.join(n for n, _ in self.group_by)}), allowed lateness "
                f"{format_duration_ms(self.allowed_lateness_ms)}: {measures}; late records → late output")

    def owns(self, node: ExecNode) -> bool:
        # the window aggregate (and its local/global halves, and the merging function) feeding
        # this view's sinks
        return (("aggregate" in node.kind or node.kind == "process-table-function") and bool(node.downstream_tables)
                and node.downstream_tables <= self.sink_tables.union(*(r.sink_tables for r in self.rollups))
                and bool(node.downstream_tables & self.sink_tables))

    def rollup_sql(self, wiring: Wiring) -> NodeSql:
        """A roll-up's windows: the finer step's parts (each a disjoint share of a finer window: one
        window's partial aggregate, or one record behind the watermark), each put in the coarser
        window holding its window, merged there as the finer windows merge theirs."""
        fine = self.rollup_of
        assert fine is not None and self.window.tumbling
        size_s = self.window.tumbling // 1000
        keys = ", ".join(ident(n) for n, _ in self.group_by)
        since_epoch = "TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', `window_start`)"
        start = f"TIMESTAMPADD(SECOND, -CAST(MOD({since_epoch}, {size_s}) AS INT), `window_start`)"
        parts, windows = wiring.view(self.id, "parts"), wiring.view(self.id, "windows")
        types = {col: sql_type for m, r in zip(self.measures, self.measure_types, strict=True)
                 for col, _, sql_type in m.parts(r)}
        columns = ", ".join(f"CAST({ident(fine_col)} AS {types[col]}) AS {ident(col)}"
                            for col, fine_col in self.rollup_parts)
        views = (
            f"""CREATE TEMPORARY VIEW {parts} AS
SELECT {keys}, {start} AS `window_start`, TIMESTAMPADD(SECOND, {size_s}, {start}) AS `window_end`, `window_time`,
       {columns}, `_p_records`
FROM {wiring.view(fine.id, "parts")}""",
            f"""CREATE TEMPORARY VIEW {windows} AS
SELECT {keys}, `window_start`, `window_end`, {', '.join(self.finished_columns())},
       {ident(RECORDS_COLUMN)}
FROM TABLE({MERGE_FUNCTION}(input => TABLE {parts} PARTITION BY ({keys}, `window_start`, `window_end`),
  spec => {literal(self.merge_spec())}, on_time => DESCRIPTOR(`window_time`), uid => {literal(self.merge_uid)}))""",
        )
        return NodeSql(views=views, output=windows)

    def sql(self, wiring: Wiring, input_view: str) -> NodeSql:
        if self.rollup_of is not None:
            return self.rollup_sql(wiring)
        ooo, view = self.out_of_orderness_ms, wiring.view
        is_late = late_condition("`_event_ms`", "`_max_seen`", ooo, self.allowed_lateness_ms)
        lateness = format_duration_ms(self.allowed_lateness_ms)
        late_error = (f"CONCAT('late: event time ', CAST(`_event_time` AS STRING), ' UTC is more than "
                      f"allowed_lateness ({lateness}) behind the watermark of its partition (', "
                      f"CAST(TO_TIMESTAMP_LTZ({watermark_of('`_max_seen`', ooo)}, 3) AS STRING), ' UTC)')")
        late, on_time = view(self.id, "late"), view(self.id, "on_time")
        views = [
            f"CREATE TEMPORARY VIEW {late} AS\n"
            f"{wiring.dead_letter_select(literal(self.id), literal('/' + self.event_time_field), late_error)}\n"
            f"FROM {input_view} WHERE {is_late}",
            f"CREATE TEMPORARY VIEW {on_time} AS\nSELECT * FROM {input_view} WHERE NOT {is_late}",
        ]
        dead_letters: list[str] = []
        stored_from = on_time
        checks = wiring.unstorable(self.id)
        if checks:
            # a value some sink cannot store is a dead letter here, per record, so it keeps its
            # origin and payload, and the window it would have joined is stored without it
            refused = " OR ".join(f"({pred})" for _, _, pred, _ in checks)

            def case(pick: int) -> str:
                return "CASE " + " ".join(f"WHEN {c[2]} THEN {literal(c[pick])}" for c in checks) + " END"

            unstorable, storable = view(self.id, "unstorable"), view(self.id, "storable")
            path = f"CONCAT({literal('/')}, {case(1)})"
            views.append(f"CREATE TEMPORARY VIEW {unstorable} AS\n"
                         f"{wiring.dead_letter_select(case(0), path, case(3))}\nFROM {on_time} WHERE {refused}")
            views.append(f"CREATE TEMPORARY VIEW {storable} AS\nSELECT * FROM {on_time} WHERE NOT ({refused})")
            stored_from = storable
            dead_letters.append(unstorable)
        window = self.window
        keys = ", ".join(ident(n) for n, _ in self.group_by)
        windows = view(self.id, "windows")
        if window.kind == "session":
            # a group window (window TVFs cannot take the late judgement's allowance; sessions have none)
            group, start, end = window_sql("session", "`_event_time`", 0, gap_ms=window.session.gap if window.session
                                           else None)
            views.append(f"""CREATE TEMPORARY VIEW {windows} AS
SELECT {keys}, CAST({start} AS TIMESTAMP(3)) AS `window_start`, CAST({end} AS TIMESTAMP(3)) AS `window_end`,
       {', '.join(measure_columns(self.measures) + self.kept_columns())}, COUNT(*) AS {ident(RECORDS_COLUMN)}
FROM {stored_from} GROUP BY {group}, {keys}""")
            return NodeSql(views=tuple(views), output=windows, dead_letters=tuple(dead_letters), late=(late,))
        size = window.tumbling or (window.sliding.size if window.sliding else 0)
        slide = window.sliding.slide if window.sliding else size

        def tvf(table: str) -> str:
            if window.sliding:
                return (f"TABLE(HOP(TABLE {table}, DESCRIPTOR(`_event_time`), {sql_interval(slide)}, "
                        f"{sql_interval(size)}))")
            return f"TABLE(TUMBLE(TABLE {table}, DESCRIPTOR(`_event_time`), {sql_interval(size)}))"

        if not self.merges:
            # every record judged on time is ahead of its partition's watermark, so of Flink's: the
            # window TVF (aggregated in two phases, a local one in the source task) takes them all
            views.append(f"""CREATE TEMPORARY VIEW {windows} AS
SELECT {keys}, `window_start`, `window_end`, {', '.join(measure_columns(self.measures) + self.kept_columns())},
       COUNT(*) AS {ident(RECORDS_COLUMN)}
FROM {tvf(stored_from)} GROUP BY `window_start`, `window_end`, {keys}""")
            return NodeSql(views=tuple(views), output=windows, dead_letters=tuple(dead_letters), late=(late,))
        # With an allowance, a record judged on time may be behind its partition's watermark, so
        # possibly behind Flink's, for which a window TVF has already fired (and would drop it).
        # Records whose first window ends after their partition's watermark (never behind Flink's)
        # go to the window TVF; the others are put in their windows one by one; a function with
        # keyed state (MergeWindows.java) adds both up per window, so a window is emitted when the
        # watermark passes its end and again for each record of it that comes later.
        first_end = f"(`_event_ms` - MOD(MOD(`_event_ms`, {slide}) + {slide}, {slide}) + {slide})"
        ahead = f"({first_end} > {watermark_of('`_max_seen`', ooo)})"
        fresh, behind = view(self.id, "fresh"), view(self.id, "behind")
        partials, units, parts = view(self.id, "partials"), view(self.id, "units"), view(self.id, "parts")
        aggregated = [p for m in self.measures for p in m.partials()]
        one_by_one = [p for m in self.measures for p in m.unit_partials()]
        views += [
            f"CREATE TEMPORARY VIEW {fresh} AS\nSELECT * FROM {stored_from} WHERE {ahead}",
            f"CREATE TEMPORARY VIEW {behind} AS\nSELECT * FROM {stored_from} WHERE NOT {ahead}",
            f"""CREATE TEMPORARY VIEW {partials} AS
SELECT {keys}, `window_start`, `window_end`, `window_time`,
       {', '.join(f"{sql} AS {ident(n)}" for n, sql in aggregated)}, COUNT(*) AS `_p_records`
FROM {tvf(fresh)} GROUP BY `window_start`, `window_end`, `window_time`, {keys}""",
            f"""CREATE TEMPORARY VIEW {units} AS
SELECT {keys}, `window_start`, `window_end`, `window_time`,
       {', '.join(f"{sql} AS {ident(n)}" for n, sql in one_by_one)}, CAST(1 AS BIGINT) AS `_p_records`
FROM {tvf(behind)}""",
            f"CREATE TEMPORARY VIEW {parts} AS\nSELECT * FROM {partials} UNION ALL SELECT * FROM {units}",
            f"""CREATE TEMPORARY VIEW {windows} AS
SELECT {keys}, `window_start`, `window_end`, {', '.join(self.finished_columns())},
       {ident(RECORDS_COLUMN)}
FROM TABLE({MERGE_FUNCTION}(input => TABLE {parts} PARTITION BY ({keys}, `window_start`, `window_end`),
  spec => {literal(self.merge_spec())}, on_time => DESCRIPTOR(`window_time`), uid => {literal(self.merge_uid)}))""",
        ]
        return NodeSql(views=tuple(views), output=windows, dead_letters=tuple(dead_letters), late=(late,))

    @property
    def merges(self) -> bool:
        """Whether its windows are put together from parts (MergeWindows.java): an allowance for
        late records, or roll-ups reading them, and windows a window TVF can compute (tumbling,
        sliding); and every roll-up."""
        return ((bool(self.allowed_lateness_ms) or bool(self.rollups)) and self.window.kind != "session"
                ) or self.rollup_of is not None

    @property
    def merge_uid(self) -> str:
        """The merging function's state name: the step's uid, as PTF uids are spelled."""
        return re.sub(r"[^A-Za-z0-9_-]", "-", self.uid)

    def column_names(self) -> list[str]:
        """The measures' columns, then the kept sketches'."""
        return [ident(m.name) for m in self.measures] + [ident(column) for column, _ in self.kept]

    def finished_columns(self) -> list[str]:
        """:meth:`column_names` read from MergeWindows.java's output (user aggregates finished)."""
        return ([f"{m.finish(ident(m.name))} AS {ident(m.name)}" for m in self.measures]
                + [ident(column) for column, _ in self.kept])

    def kept_columns(self) -> list[str]:
        """The kept sketches as aggregate calls (windows computed in one piece)."""
        return [f"{measure.partials()[0][1]} AS {ident(column)}" for column, measure in self.kept]

    def merge_spec(self) -> str:
        """The literal of MergeWindows.java: each measure's parts, how they merge, and the measures."""
        parts: list[list[Any]] = []
        out: list[list[Any]] = []
        first_part: dict[str, int] = {}
        for measure, result in zip(self.measures, self.measure_types, strict=True):
            first_part[measure.name] = len(parts)
            out.append(measure.merged(result, len(parts)))
            parts += [list(part) for part in measure.parts(result)]
        out += [[column, "BYTES", "part", first_part[measure.name]] for column, measure in self.kept]
        spec: dict[str, Any] = {"parts": parts, "out": out, "lateness_ms": self.allowed_lateness_ms}
        if self.rollup_of is not None:  # its parts come at the finer windows' times
            spec["window_ms"] = self.window.tumbling
        return json.dumps(spec, separators=(",", ":"))

    def register(self, t_env: Any, wiring: Wiring) -> None:
        """The vectorized Python functions finishing the step's Python udaf() measures."""
        for m in self.measures:
            if m.function == "udaf" and not udaf.is_java(m):
                t_env.create_temporary_function(udaf.python_function_name(self.id, m),
                                                udaf.finishing_udf(m, self.project))

    def functions(self) -> tuple[str, ...]:
        created = list(udaf.functions(self.measures))
        if any(m.sketch for m in self.measures):
            created += [f"CREATE TEMPORARY SYSTEM FUNCTION {name} AS "
                        f"{literal(jvm.PACKAGE + '.' + java)} LANGUAGE JAVA" for name, java in SKETCH_FUNCTIONS.items()]
        if self.merges:
            created.append(f"CREATE TEMPORARY SYSTEM FUNCTION {MERGE_FUNCTION} AS "
                           f"{literal(jvm.PACKAGE + '.MergeWindows')} LANGUAGE JAVA")
        return tuple(created)

    def stored_fields(self, upstream: Stream) -> dict[str, FieldType]:
        """The record fields whose values reach a sink as they are: group keys and the fields of
        min, max, first and last (any record's value may be the one stored)."""
        stored = dict(self.group_by)
        for m in self.measures:
            if m.field is not None and m.function in ("min", "max", "first", "last"):
                stored[m.field] = upstream.field_type(m.field) or FieldType.STRING
        return stored


class Aggregate(StepKind):
    """``aggregate``: windowed aggregation; its rows are a view that sinks store, and that roll-ups
    (an ``aggregate`` with ``from:`` naming an aggregate) read."""

    name = "aggregate"
    options = AggregateOptions
    emits = "view"
    reads_views = True

    def plan_from_view(self, options: Any, ctx: PlanContext, view: ViewNode, records: Stream, node_id: str,
                       uid: str) -> AggregateNode:
        """A roll-up: computed from the windows of ``view`` (an aggregate): coarser tumbling
        windows, each a whole number of its windows, by some of its group keys, every measure
        merged from a part it keeps. Records are judged late once, by the finer step, whose
        lateness the roll-up takes."""
        if not isinstance(view, AggregateNode):
            raise SpecError(f"a roll-up reads an aggregate step; '{view.id}' is a {view.kind}",
                            where=ctx.where("from"))
        fine = view
        node = self.plan(options, ctx, records, node_id, uid)
        size, finer = node.window.tumbling, fine.window.tumbling
        if not finer:
            raise SpecError(f"a roll-up reads tumbling windows; step '{fine.id}' has {fine.window.kind} windows",
                            where=ctx.where("from"), hint="roll up from a step with 'window: {tumbling: ...}'")
        if not size or size % finer or size == finer or size % 1000:
            raise SpecError(f"a roll-up of step '{fine.id}' needs tumbling windows a whole number of its windows "
                            f"({format_duration_ms(finer)}) and of seconds, longer than them",
                            where=ctx.where("window"),
                            hint=f"e.g. window: {{tumbling: {format_duration_ms(finer * 60)}}}")
        keys = dict(fine.group_by)
        for j, (name, _) in enumerate(node.group_by):
            if name not in keys:
                raise SpecError(f"a roll-up groups by keys of step '{fine.id}' ({', '.join(keys)}); '{name}' is "
                                "not one", where=ctx.where("group_by", j), hint="group by some of its keys")
        if node.allowed_lateness_ms:
            raise SpecError(f"a roll-up takes the lateness of step '{fine.id}', which judges the records",
                            where=ctx.where("allowed_lateness"), hint="remove allowed_lateness here")
        try:
            parts = rollup_parts(node, fine)
        except ValueError as exc:
            name, reason = exc.args
            raise SpecError(f"measure '{name}' cannot be rolled up: {reason}", where=ctx.where("measures", name),
                            hint=f"roll-ups merge what step '{fine.id}' keeps per window") from None
        fine.rollups.append(node)
        node.rollup_of, node.rollup_parts, node.allowed_lateness_ms = fine, parts, fine.allowed_lateness_ms
        return node

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> AggregateNode:
        opts: AggregateOptions = options
        if opts.window.kind == "session" and opts.allowed_lateness:
            # Flink SQL's session group window cannot late-fire ("doesn't support EMIT strategy")
            raise SpecError("session windows do not support allowed_lateness yet", where=ctx.where("allowed_lateness"),
                            hint="set allowed_lateness: 0s, or raise max_out_of_orderness instead")
        if len(set(opts.group_by)) != len(opts.group_by):
            raise SpecError("group_by names a field twice", where=ctx.where("group_by"))
        group_by = tuple((name, ctx.field(upstream, name, "group_by", j, required=True, what="group_by field"))
                         for j, name in enumerate(opts.group_by))
        measures: list[Measure] = []
        types = []
        for name, expression in opts.measures.items():
            for measure in parse_measures(name, expression):
                column = measure.name
                if column in opts.group_by or column in ("window_start", "window_end"):
                    raise SpecError(f"measure '{column}' clashes with a key column",
                                    where=ctx.where("measures", name), hint="rename the measure")
                if any(m.name == column for m in measures):
                    raise SpecError(f"measure '{column}' is named twice", where=ctx.where("measures", name),
                                    hint="rename one of them (percentiles() names its columns <name>_p50 …)")
                ftype = None
                if measure.function == "udaf":
                    for f in measure.fields:
                        ctx.field(upstream, f, "measures", name, what="measure field")
                    try:
                        measure = udaf.resolve(measure, node_id, ctx.project, [ctx.project / j for j in opts.jars])
                    except ValueError as exc:
                        raise SpecError(str(exc), where=ctx.where("measures", name),
                                        hint="see README, 'User-defined aggregates'") from None
                elif measure.field is not None:
                    ftype = ctx.field(upstream, measure.field, "measures", name,
                                      numeric=measure.function in ("sum", "avg", "percentile"), what="measure field")
                    if measure.function in ("first", "last", "top_k"):
                        measure = replace(measure, sql_type=ftype.flink_sql)
                measures.append(measure)
                types.append(measure.result_type(ftype))
        kept: dict[str, Measure] = {}
        if opts.keep_sketch:  # one sketch per field and kind: every quantile of a field reads the same one
            for m in measures:
                if m.function in ("percentile", "approx_count_distinct"):
                    column = f"{m.field}_{m.sketch}_sketch"
                    if column in opts.group_by or any(x.name == column for x in measures):
                        raise SpecError(f"the kept sketch column '{column}' clashes with a column of the step",
                                        where=ctx.where("keep_sketch"), hint="rename that column")
                    kept.setdefault(column, m)
            if not kept:
                raise SpecError("keep_sketch keeps the sketches of percentile and approx_count_distinct measures, "
                                "and this step has none", where=ctx.where("keep_sketch"),
                                hint="add one, or remove keep_sketch")
        fields = [f for m in measures for f in (m.fields or ((m.field,) if m.field else ()))]
        reads = list(opts.group_by) + [f for f in fields if f not in opts.group_by]
        view = ViewDef(name=node_id, keys=group_by, measures=tuple(zip((m.name for m in measures), types,
                                                                       strict=True))
                       + tuple((column, FieldType.BYTES) for column in kept),
                       approximate=tuple((m.name, m.accuracy) for m in measures if m.accuracy),
                       ranked=tuple(m.name for m in measures if m.function == "top_k"))
        return AggregateNode(
            id=node_id, kind=self.name, uid=uid, output=Stream(view=view, described_as=f"step '{node_id}'"),
            reads=tuple(dict.fromkeys(reads)), group_by=group_by, window=opts.window,
            allowed_lateness_ms=opts.allowed_lateness, measures=tuple(measures), measure_types=tuple(types),
            kept=tuple(kept.items()), project=ctx.project,
            requirements=Requirements(python=any(m.function == "udaf" and not udaf.is_java(m) for m in measures)),
            event_time_field=ctx.event_time_field, out_of_orderness_ms=ctx.out_of_orderness_ms)


def window_sql(kind: str, time_col: str, size_ms: int, slide_ms: int | None = None,
               gap_ms: int | None = None) -> tuple[str, str, str]:
    """``(GROUP BY window, start expr, end expr)`` for a Flink SQL group window."""
    if kind == "tumbling":
        args = f"{time_col}, {sql_interval(size_ms)}"
        fn = "TUMBLE"
    elif kind == "sliding":
        assert slide_ms is not None
        args = f"{time_col}, {sql_interval(slide_ms)}, {sql_interval(size_ms)}"
        fn = "HOP"
    else:
        assert gap_ms is not None
        args = f"{time_col}, {sql_interval(gap_ms)}"
        fn = "SESSION"
    return f"{fn}({args})", f"{fn}_START({args})", f"{fn}_END({args})"


def watermark_of(max_seen_col: str, out_of_orderness_ms: int) -> str:
    """A partition's watermark (epoch ms) given its largest event time: bounded out-of-orderness."""
    return f"({max_seen_col} - {out_of_orderness_ms + 1})"


def late_condition(time_col: str, max_seen_col: str, out_of_orderness_ms: int, lateness_ms: int) -> str:
    """SQL predicate, TRUE for a late record; both columns are epoch ms (BIGINT), ``max_seen_col``
    the largest event time of the record's partition so far, the record included."""
    return f"({time_col} <= {max_seen_col} - {out_of_orderness_ms + 1 + lateness_ms})"


def is_late(ts_ms: int, max_seen_ms: int, out_of_orderness_ms: int, lateness_ms: int) -> bool:
    """The same rule in plain Python (``max_seen_ms`` includes this record).

    >>> is_late(1_000, 1_000, 0, 0), is_late(999, 1_000, 0, 0), is_late(94_999, 100_000, 5_000, 0)
    (False, True, True)
    """
    return ts_ms <= max_seen_ms - out_of_orderness_ms - 1 - lateness_ms


def measure_columns(measures: tuple[Measure, ...]) -> list[str]:
    return [f"{m.sql()} AS `{m.name}`" for m in measures]


def assign_windows(ts_ms: int, kind: str, size_ms: int, slide_ms: int | None = None) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` (epoch ms) that a record at ``ts_ms`` belongs to.

    Session windows depend on neighbouring records, so they are not assigned here.

    >>> assign_windows(61_000, "tumbling", 60_000)
    [(60000, 120000)]
    >>> assign_windows(61_000, "sliding", 120_000, 60_000)
    [(0, 120000), (60000, 180000)]
    """
    if kind == "tumbling":
        start = ts_ms - ts_ms % size_ms
        return [(start, start + size_ms)]
    if kind == "sliding":
        assert slide_ms is not None
        last = ts_ms - ts_ms % slide_ms
        starts = range(last - size_ms + slide_ms, last + 1, slide_ms)
        return [(s, s + size_ms) for s in starts]
    raise ValueError("session windows are assigned by merging, not per record")


def merge_sessions(timestamps: list[int], gap_ms: int) -> list[tuple[int, int]]:
    """Session windows ``[first, last + gap)`` over one key's event times (reference semantics).

    >>> merge_sessions([0, 10, 100], 50)
    [(0, 60), (100, 150)]
    """
    sessions: list[tuple[int, int]] = []
    for ts in sorted(timestamps):
        if sessions and ts < sessions[-1][1]:
            sessions[-1] = (sessions[-1][0], max(sessions[-1][1], ts + gap_ms))
        else:
            sessions.append((ts, ts + gap_ms))
    return sessions


def rollup_parts(coarse: AggregateNode, fine: AggregateNode) -> tuple[tuple[str, str], ...]:
    """Per part column of ``coarse``'s measures, the part column of ``fine`` it is merged from;
    a ``ValueError`` ``(measure name, reason)`` for a measure ``fine`` cannot give."""
    found: list[tuple[str, str]] = []
    by_function: dict[tuple[str, str | None], Measure] = {}
    for m in fine.measures:
        by_function.setdefault((m.function, m.field), m)
    for m in coarse.measures:
        p = f"_p_{m.name}"
        if m.function == "count" and m.field is None:
            found.append((p, "_p_records"))  # the records of a window, whatever the measures
            continue
        if m.function == "udaf":  # the rows of the same fields, whatever function finishes them
            rows = next((x for x in fine.measures if x.function == "udaf" and x.fields == m.fields), None)
            if rows is None:
                raise ValueError(m.name, f"step '{fine.id}' keeps no rows of ({', '.join(m.fields)}) to merge; "
                                         f"add e.g. '{m.name}: {m.text}' to it")
            found.append((p, f"_p_{rows.name}"))
            continue
        if m.sketch:  # merged as the same sketch of the same field
            have = by_function.get((m.function, m.field))
            if have is None:
                raise ValueError(m.name, f"step '{fine.id}' keeps no {m.function} of '{m.field}' to merge; "
                                         f"add e.g. '{m.name}: {m.text}' to it")
            found.append((p, f"_p_{have.name}"))
            continue
        avg = by_function.get(("avg", m.field))
        total = by_function.get(("sum", m.field))
        counted = by_function.get(("count", m.field))
        if m.function in ("min", "max", "count"):
            have = by_function.get((m.function, m.field))
            if have is None:
                raise ValueError(m.name, f"step '{fine.id}' has no {m.function}({m.field or ''}) to roll up")
            found.append((p, f"_p_{have.name}"))
        elif m.function == "sum":
            if total is None and avg is None:
                raise ValueError(m.name, f"step '{fine.id}' has no sum({m.field}) or avg({m.field}) to roll up")
            found.append((p, f"_p_{total.name}" if total else f"_p_{avg.name}_sum"))  # type: ignore[union-attr]
        elif m.function == "avg":
            if avg is not None:
                found += [(f"{p}_sum", f"_p_{avg.name}_sum"), (f"{p}_count", f"_p_{avg.name}_count")]
            elif total is not None and counted is not None:
                found += [(f"{p}_sum", f"_p_{total.name}"), (f"{p}_count", f"_p_{counted.name}")]
            else:
                raise ValueError(m.name, f"step '{fine.id}' has no avg({m.field}) to roll up (an average is "
                                         "merged from its sum and count)")
        else:
            raise ValueError(m.name, f"{m.function}() cannot be rolled up")
    return tuple(found)

