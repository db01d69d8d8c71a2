"""From a parsed spec to a checked plan, in small named phases.

``resolve_schema`` → ``check_steps`` → ``resolve_fields`` → ``check_outputs`` → ``assign_uids``.
Each phase either adds facts or refuses the spec with one ``file:line`` line. The result is a
:class:`Plan`: everything the compiler needs, and what ``headrace explain`` prints.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from headrace.jobs.loader import LoadedJob
from headrace.jobs.spec import (
    AggregateOptions,
    AggregateStep,
    JobSpec,
    ValidateOptions,
    ValidateStep,
    WindowSpec,
    step_kind,
    step_options,
)
from headrace.operators.measures import Measure, parse_measure
from headrace.schemas.errors import SpecError
from headrace.schemas.jsonschema import RecordSchema, SchemaFileError, jvm_unsupported, load_record_schema
from headrace.schemas.types import FieldType


@dataclass(frozen=True)
class ValidatePlan:
    step_id: str
    uid: str
    schema: RecordSchema
    #: "jvm" (Flink function) or "python" (vectorized UDF); ``engine_note`` says why
    engine: str = "jvm"
    engine_note: str = ""


@dataclass(frozen=True)
class AggregatePlan:
    step_id: str
    uid: str
    group_by: tuple[tuple[str, FieldType], ...]
    window: WindowSpec
    allowed_lateness_ms: int
    measures: tuple[Measure, ...]
    measure_types: tuple[FieldType, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The upsert key of every sink: group keys, then the window bounds."""
        return tuple(name for name, _ in self.group_by) + ("window_start", "window_end")


@dataclass(frozen=True)
class SinkPlan:
    kind: str
    table: str
    uid: str


@dataclass(frozen=True)
class Plan:
    """A checked job: fields with types, one validate step, one aggregate, outputs and uids."""

    spec: JobSpec
    path: Path
    schema: RecordSchema
    fields: tuple[tuple[str, FieldType], ...]
    event_time_field: str
    validate: ValidatePlan
    aggregate: AggregatePlan
    sinks: tuple[SinkPlan, ...]
    dead_letter_topic: str
    late_topic: str
    source_uid: str
    dead_letter_uid: str
    late_uid: str
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.job


def _project_root(job_path: Path) -> list[Path]:
    here = job_path.resolve().parent
    return [here, here.parent, Path.cwd()]


def resolve_schema(job: LoadedJob, relative: str, key_path: tuple[str | int, ...]) -> RecordSchema:
    """Find a schema file relative to the job's folder, the project root or the working dir."""
    candidates = [base / relative for base in _project_root(job.path)]
    found = next((c for c in candidates if c.is_file()), None)
    where = job.source_map.where(key_path)
    if found is None:
        raise SpecError(f"schema file '{relative}' not found", where=where,
                        hint=f"looked in {', '.join(str(c.parent) for c in candidates)}")
    try:
        return load_record_schema(found)
    except SchemaFileError as exc:
        raise SpecError(str(exc), where=where, hint="fix the schema file") from None


def _field(job: LoadedJob, schema: RecordSchema, name: str, key_path: tuple[str | int, ...],
           *, numeric: bool = False, required: bool = False, what: str = "field") -> FieldType:
    where = job.source_map.where(key_path)
    kind = schema.field_type(name)
    if kind is None:
        close = difflib.get_close_matches(name, schema.properties, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"the schema has {', '.join(schema.properties)}"
        raise SpecError(f"{what} '{name}' is not a scalar property of {schema.path.name}",
                        where=where, hint=hint)
    if numeric and not kind.numeric:
        raise SpecError(f"{what} '{name}' is a {kind.value}, not a number", where=where,
                        hint="aggregate a numeric field, or use count()")
    if required and name not in schema.required:
        raise SpecError(f"{what} '{name}' is not required by {schema.path.name}", where=where,
                        hint=f"add \"{name}\" to the schema's \"required\" list")
    return kind


def check_steps(job: LoadedJob) -> tuple[tuple[int, ValidateOptions], tuple[int, AggregateOptions]]:
    """Unique step ids; a validate step first and one aggregate step last."""
    seen: dict[str, int] = {}
    for i, step in enumerate(job.spec.steps):
        sid = step_options(step).id or step_kind(step)
        if sid in seen:
            raise SpecError(f"duplicate step id '{sid}' (steps[{seen[sid]}] and steps[{i}])",
                            where=job.source_map.where(("steps", i)),
                            hint="give one of them its own 'id:'")
        seen[sid] = i
    steps = job.spec.steps
    if not isinstance(steps[0], ValidateStep):
        raise SpecError("the first step must be 'validate': it decodes records and checks them",
                        where=job.source_map.where(("steps", 0)), hint="add '- validate: {}' first")
    aggregates = [i for i, s in enumerate(steps) if isinstance(s, AggregateStep)]
    if aggregates != [len(steps) - 1] or len(steps) != 2:
        raise SpecError("this version runs 'validate' followed by one 'aggregate' step",
                        where=job.source_map.where(("steps",)),
                        hint="write steps: [validate, aggregate]")
    validate, aggregate = steps[0], steps[-1]
    assert isinstance(validate, ValidateStep) and isinstance(aggregate, AggregateStep)
    return (0, validate.validate_), (len(steps) - 1, aggregate.aggregate)


def choose_engine(job: LoadedJob, schema: RecordSchema, wanted: str,
                  key_path: tuple[str | int, ...]) -> tuple[str, str]:
    """Where ``validate`` checks records: the JVM when the schema is in its subset."""
    if wanted == "python":
        return "python", "engine: python in the spec"
    unsupported = jvm_unsupported(schema.document)
    if unsupported is None:
        return "jvm", "schema in the JVM subset"
    if wanted == "jvm":
        raise SpecError(f"engine 'jvm' cannot check {schema.path.name}: {unsupported}",
                        where=job.source_map.where(key_path),
                        hint="use engine: auto (or python) to check it with jsonschema-rs in Python")
    return "python", f"{schema.path.name}: {unsupported}"


def build_plan(job: LoadedJob) -> Plan:
    """Run every phase; the first problem is raised as a :class:`SpecError`."""
    spec = job.spec
    (vi, vopts), (ai, aopts) = check_steps(job)

    source_schema = resolve_schema(job, spec.source.format.json_schema, ("source", "format", "json"))
    schema = (resolve_schema(job, vopts.schema_file, ("steps", vi, "validate", "schema"))
              if vopts.schema_file else source_schema)

    et = spec.source.event_time.field
    et_type = _field(job, schema, et, ("source", "event_time", "field"), required=True,
                     what="event-time field")
    if et_type is not FieldType.INTEGER:
        raise SpecError(f"event-time field '{et}' must be an integer (epoch milliseconds)",
                        where=job.source_map.where(("source", "event_time", "field")),
                        hint="give it \"type\": \"integer\" in the schema")

    agg_path = ("steps", ai, "aggregate")
    if aopts.window.kind == "session" and aopts.allowed_lateness:
        # Flink SQL's session group window cannot late-fire ("doesn't support EMIT strategy")
        raise SpecError("session windows do not support allowed_lateness yet",
                        where=job.source_map.where(agg_path + ("allowed_lateness",)),
                        hint="set allowed_lateness: 0s, or raise max_out_of_orderness instead")
    group_by = tuple((name, _field(job, schema, name, agg_path + ("group_by", j), required=True,
                                   what="group_by field"))
                     for j, name in enumerate(aopts.group_by))
    if len(set(aopts.group_by)) != len(aopts.group_by):
        raise SpecError("group_by names a field twice", where=job.source_map.where(agg_path + ("group_by",)))
    measures, measure_types = [], []
    for name, expression in aopts.measures.items():
        measure = parse_measure(name, expression)
        mpath = agg_path + ("measures", name)
        if name in aopts.group_by or name in ("window_start", "window_end"):
            raise SpecError(f"measure '{name}' clashes with a key column", where=job.source_map.where(mpath),
                            hint="rename the measure")
        ftype = None
        if measure.field is not None:
            ftype = _field(job, schema, measure.field, mpath,
                           numeric=measure.function in ("sum", "avg"), what="measure field")
        measures.append(measure)
        measure_types.append(measure.result_type(ftype))

    fields: list[tuple[str, FieldType]] = list(group_by)
    for m in measures:
        if m.field and m.field not in dict(fields):
            fields.append((m.field, schema.field_type(m.field)))  # type: ignore[arg-type]

    # every output has a consumer: validate errors -> dead letter; late records -> late or dead letter
    step_ids = {step_options(s).id or step_kind(s) for s in spec.steps}
    for i, sink in enumerate(spec.sinks):
        ref = sink.postgres.from_step
        if ref is not None and ref not in step_ids:
            close = difflib.get_close_matches(ref, list(step_ids), n=1)
            raise SpecError(f"sink reads from step '{ref}', which does not exist",
                            where=job.source_map.where(("sinks", i, "postgres", "from")),
                            hint=f"did you mean '{close[0]}'?" if close else f"steps: {', '.join(step_ids)}")
        if ref is not None and ref != (aopts.id or "aggregate"):
            raise SpecError(f"sink reads from step '{ref}', but only the aggregate step's output "
                            "can be stored in a table", where=job.source_map.where(("sinks", i)))
    tables = [s.postgres.table for s in spec.sinks]
    if len(set(tables)) != len(tables):
        raise SpecError("two sinks write the same table", where=job.source_map.where(("sinks",)))

    name = spec.job
    vid, aid = vopts.id or "validate", aopts.id or "aggregate"
    notes = []
    late_topic = spec.late.kafka.topic if spec.late else spec.dead_letter.kafka.topic
    if spec.late is None:
        notes.append("no 'late' output: late records go to the dead-letter topic with error 'late'")
    engine, engine_note = choose_engine(job, schema, vopts.engine, ("steps", vi, "validate", "engine"))
    return Plan(
        spec=spec, path=job.path, schema=schema, fields=tuple(fields), event_time_field=et,
        validate=ValidatePlan(step_id=vid, uid=f"{name}.{vid}", schema=schema,
                              engine=engine, engine_note=engine_note),
        aggregate=AggregatePlan(step_id=aid, uid=f"{name}.{aid}", group_by=group_by,
                                window=aopts.window, allowed_lateness_ms=aopts.allowed_lateness,
                                measures=tuple(measures), measure_types=tuple(measure_types)),
        sinks=tuple(SinkPlan(kind="postgres", table=s.postgres.table, uid=f"{name}.sink.{s.postgres.table}")
                    for s in spec.sinks),
        dead_letter_topic=spec.dead_letter.kafka.topic, late_topic=late_topic,
        source_uid=f"{name}.source", dead_letter_uid=f"{name}.dead-letter", late_uid=f"{name}.late",
        notes=tuple(notes),
    )
