"""From a parsed spec to a checked plan: a graph of planned steps and sinks, in named phases.

``resolve_graph`` (step ids, ``from`` references, cycles) → ``plan_nodes`` (each kind plans its
options against the stream it reads: fields, types, errors at ``file:line``) → ``check_outputs``
(every aggregate is stored, every record step is read, sinks write distinct places). Each phase
either adds facts or refuses the spec with one ``file:line`` line. The result is a :class:`Plan`:
everything the compiler needs, and what ``headrace explain`` prints.

A step reads the step before it in the list unless it says ``from: <step id>``; a sink reads
the last aggregate step unless it says ``from``. Step ids default to the kind's name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headrace.jobs.loader import LoadedJob
from headrace.jobs.registry import FORMATS, SINKS, STEPS
from headrace.jobs.spec import JobSpec, kind_of, options_of
from headrace.schemas.errors import SchemaFileError, SpecError
from headrace.schemas.kinds import DecodingNode, SinkNode, StepNode, Stream, ViewNode
from headrace.schemas.types import FieldType


@dataclass(frozen=True)
class Plan:
    """A checked job: planned steps in the order they run, what each reads, sinks and outputs."""

    spec: JobSpec
    path: Path
    schema: Any  # the source's record schema (RecordSchema, AvroRecordSchema)
    event_time_field: str
    steps: tuple[StepNode, ...]
    #: node id -> the id of the node it reads (None: the source)
    inputs: dict[str, str | None]
    sinks: tuple[SinkNode, ...]
    dead_letter_topic: str
    late_topic: str
    source_uid: str
    dead_letter_uid: str
    late_uid: str
    notes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.job

    @property
    def decoder(self) -> DecodingNode:
        """The decoding step (always the first)."""
        first = self.steps[0]
        assert isinstance(first, DecodingNode)
        return first

    @property
    def view_steps(self) -> tuple[ViewNode, ...]:
        """The steps emitting views (each judges lateness with its own allowance)."""
        return tuple(s for s in self.steps if isinstance(s, ViewNode))

    def node(self, node_id: str) -> StepNode:
        return next(s for s in self.steps if s.id == node_id)

    def sinks_of(self, node_id: str) -> tuple[SinkNode, ...]:
        return tuple(s for s in self.sinks if self.inputs[s.id] == node_id)

    @property
    def fields(self) -> tuple[tuple[str, FieldType], ...]:
        """The record fields later nodes read, in order of first use: what decoding extracts."""
        decoded = dict(self.decoder.output.fields)
        names = dict.fromkeys(name for step in self.steps[1:] for name in step.reads if name in decoded)
        return tuple((name, decoded[name]) for name in names)


def _project_root(job_path: Path) -> list[Path]:
    here = job_path.resolve().parent
    return [here, here.parent, Path.cwd()]


def project_folder(job_path: Path) -> Path:
    """The folder a job's relative paths (data files) are resolved against: the project holding
    ``jobs/`` when the job is in one, else the job's own folder."""
    here = job_path.resolve().parent
    return here.parent if here.name == "jobs" else here


def resolve_schema(job: LoadedJob, relative: str, key_path: tuple[str | int, ...], kind: str,
                   options: dict[str, Any] | None = None) -> Any:
    """Find a schema file relative to the job's folder, the project root or the working dir, and
    load it as the format ``kind`` does (``options``: that format's own keys)."""
    candidates = [base / relative for base in _project_root(job.path)]

    def is_file(candidate: Path) -> bool:
        try:
            return candidate.is_file()
        except (OSError, ValueError):  # a name too long for the filesystem, a NUL in it
            return False

    found = next((c for c in candidates if is_file(c)), None)
    where = job.source_map.where(key_path)
    if found is None:
        raise SpecError(f"schema file '{relative}' not found", where=where,
                        hint=f"looked in {', '.join(str(c.parent) for c in candidates)}")
    try:
        return FORMATS[kind].load(found, options or {})
    except SchemaFileError as exc:
        raise SpecError(str(exc), where=where, hint="fix the schema file") from None


@dataclass
class _Context:
    """The :class:`PlanContext` of one node."""

    job_file: LoadedJob
    base: tuple[str | int, ...]
    source_schema: Any
    job: str
    project: Path
    event_time_field: str
    out_of_orderness_ms: int
    max_future_ms: int
    source_topic: str = ""
    source_format: Any = None

    def where(self, *path: str | int) -> str:
        return self.job_file.source_map.where(self.base + path)

    @property
    def event_time_where(self) -> str:
        return self.job_file.source_map.where(("source", "event_time", "field"))

    def field(self, stream: Stream, name: str, *path: str | int, numeric: bool = False,
              required: bool = False, what: str = "field", at: str | None = None) -> FieldType:
        where = at or self.where(*path)
        kind = stream.field_type(name)
        if kind is None:
            names = [n for n, _ in stream.fields]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"it has {', '.join(names)}"
            raise SpecError(f"{what} '{name}' is not a scalar property of {stream.described_as}",
                            where=where, hint=hint)
        if numeric and not kind.numeric:
            raise SpecError(f"{what} '{name}' is a {kind.value}, not a number", where=where,
                            hint="aggregate a numeric field, or use count()")
        if required and name not in stream.required:
            raise SpecError(f"{what} '{name}' is not required by {stream.described_as}", where=where,
                            hint=f"add \"{name}\" to the schema's \"required\" list")
        return kind

    def schema(self, relative: str | None, *path: str | int) -> Any:
        if relative is None:
            return self.source_schema
        return resolve_schema(self.job_file, relative, self.base + path, self.source_format.kind)


def _suggest(ref: str, known: list[str]) -> str:
    close = difflib.get_close_matches(ref, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"steps: {', '.join(known)}"


def resolve_graph(job: LoadedJob) -> tuple[list[str], dict[str, str | None], list[int]]:
    """Step ids (unique), what each step reads, and an order in which every step follows its input."""
    where = job.source_map.where
    steps = job.spec.steps
    ids: list[str] = []
    for i, step in enumerate(steps):
        sid = options_of(step).id or kind_of(step)
        if sid in ids:
            raise SpecError(f"duplicate step id '{sid}' (steps[{ids.index(sid)}] and steps[{i}])",
                            where=where(("steps", i)), hint="give one of them its own 'id:'")
        ids.append(sid)
    if not STEPS[kind_of(steps[0])].decodes:
        decoders = " or ".join(f"'{k}'" for k, v in STEPS.items() if v.decodes)
        first = next(k for k, v in STEPS.items() if v.decodes)
        raise SpecError(f"the first step must be {decoders}: it decodes records and checks them",
                        where=where(("steps", 0)),
                        hint=f"add '- {first}: {{}}' first")
    inputs: dict[str, str | None] = {ids[0]: None}
    for i, step in enumerate(steps[1:], start=1):
        kind = STEPS[kind_of(step)]
        ref = options_of(step).from_step
        if kind.decodes:
            raise SpecError(f"step '{ids[i]}' decodes the source's records, so it can only be the first step",
                            where=where(("steps", i)), hint="remove it, or move it first")
        if ref is not None and ref not in ids:
            raise SpecError(f"step '{ids[i]}' reads from step '{ref}', which does not exist",
                            where=where(("steps", i, kind.name, "from")), hint=_suggest(ref, ids))
        if ref == ids[i]:
            raise SpecError(f"step '{ids[i]}' reads from itself", where=where(("steps", i, kind.name, "from")),
                            hint="name the step it should read")
        inputs[ids[i]] = ref if ref is not None else ids[i - 1]
    for i, sid in enumerate(ids):  # a cycle: following 'from' never reaches the source
        seen = [sid]
        current = inputs[sid]
        while current is not None:
            if current in seen:
                loop = " → ".join([*seen[seen.index(current):], current])
                raise SpecError(f"steps read each other in a cycle: {loop}",
                                where=where(("steps", i, kind_of(steps[i]), "from")),
                                hint="every chain of 'from' must lead back to the first step")
            seen.append(current)
            current = inputs[current]
    order: list[int] = []
    placed: set[str | None] = {None}
    while len(order) < len(ids):  # the spec's order, each step after its input
        for i, sid in enumerate(ids):
            if i not in order and inputs[sid] in placed:
                order.append(i)
                placed.add(sid)
                break
    return ids, inputs, order


def plan_nodes(job: LoadedJob, ids: list[str], inputs: dict[str, str | None],
               order: list[int]) -> tuple[list[StepNode], list[SinkNode], dict[str, str | None]]:
    spec = job.spec
    et = spec.source.event_time
    fmt = spec.source.format
    source_schema = resolve_schema(job, fmt.schema_file, ("source", "format", fmt.kind), fmt.kind, fmt.options)

    def context(base: tuple[str | int, ...]) -> _Context:
        return _Context(job, base, source_schema, spec.job, project_folder(job.path), et.field,
                        et.max_out_of_orderness, et.max_future, spec.source.kafka.topic, fmt)

    nodes: dict[str, StepNode] = {}
    for i in order:
        step, sid = spec.steps[i], ids[i]
        kind = STEPS[kind_of(step)]
        upstream_id = inputs[sid]
        upstream = Stream() if upstream_id is None else nodes[upstream_id].output
        ctx = context(("steps", i, kind.name))
        if upstream.view is not None:
            viewer = nodes[upstream_id or ""]
            if kind.reads_views and isinstance(viewer, ViewNode):  # a roll-up, say
                records = inputs[viewer.id]
                nodes[sid] = kind.plan_from_view(options_of(step), ctx, viewer, Stream() if records is None
                                                 else nodes[records].output, sid, f"{spec.job}.{sid}")
                continue
            raise SpecError(f"step '{sid}' reads the rows of {viewer.kind} step '{upstream_id}'; only sinks "
                            f"read an {viewer.kind}'s rows", where=job.source_map.where(("steps", i)),
                            hint="give it 'from:' naming a step that emits records")
        nodes[sid] = kind.plan(options_of(step), ctx, upstream, sid, f"{spec.job}.{sid}")

    aggregates = [sid for sid in ids if nodes[sid].output.view is not None]
    viewing = " or ".join(k for k, v in STEPS.items() if v.emits == "view")
    sinks: list[SinkNode] = []
    sink_inputs: dict[str, str | None] = {}
    for i, entry in enumerate(spec.sinks):
        sink_kind = SINKS[kind_of(entry)]
        options = options_of(entry)
        ref = options.from_step
        where = job.source_map.where(("sinks", i, sink_kind.name, "from") if ref else ("sinks", i))
        if ref is not None and ref not in nodes:
            raise SpecError(f"sink reads from step '{ref}', which does not exist", where=where,
                            hint=_suggest(ref, ids))
        if ref is None:
            if not aggregates:
                raise SpecError(f"a sink stores the rows of an {viewing} step, and this job has none", where=where,
                                hint=f"add an '- {viewing}: {{...}}' step")
            ref = aggregates[-1]
        if nodes[ref].output.view is None:
            raise SpecError(f"sink reads from step '{ref}', but only an {viewing} step's rows can be stored",
                            where=where, hint=f"{viewing} steps: {', '.join(aggregates) or 'none'}")
        sink_id = f"sink.{sink_kind.name}.{sink_kind.place(options, nodes[ref].output)}"
        if any(s.id == sink_id for s in sinks):
            raise SpecError(f"two sinks write the same place ('{sink_id}')", where=job.source_map.where(("sinks", i)),
                            hint="give each sink its own table, key or measurement")
        node = sink_kind.plan(options, context(("sinks", i, sink_kind.name)), nodes[ref].output, sink_id,
                              f"{spec.job}.{sink_id}")
        sinks.append(node)
        sink_inputs[node.id] = ref
    return [nodes[ids[i]] for i in order], sinks, sink_inputs


def check_outputs(job: LoadedJob, ids: list[str], steps: list[StepNode], inputs: dict[str, str | None],
                  sink_inputs: dict[str, str | None]) -> None:
    """Every aggregate is stored by a sink and every record step is read by a later step."""
    read = set(inputs.values()) | set(sink_inputs.values())
    for node in steps:
        if node.id not in read:
            i = ids.index(node.id)
            if node.output.view is not None:
                raise SpecError(f"the rows of {node.kind} step '{node.id}' are stored by no sink",
                                where=job.source_map.where(("steps", i)),
                                hint=f"add a sink with 'from: {node.id}', or remove the step")
            raise SpecError(f"the records of step '{node.id}' are read by no later step",
                            where=job.source_map.where(("steps", i)),
                            hint="add a step reading it ('from: " + node.id + "'), or remove it")


def build_plan(job: LoadedJob) -> Plan:
    """Run every phase; the first problem is raised as a :class:`SpecError`."""
    spec = job.spec
    ids, inputs, order = resolve_graph(job)
    steps, sinks, sink_inputs = plan_nodes(job, ids, inputs, order)
    check_outputs(job, ids, steps, inputs, sink_inputs)
    for viewing in (s for s in steps if isinstance(s, ViewNode)):
        viewing.sink_tables = frozenset(s.flink_table for s in sinks if sink_inputs[s.id] == viewing.id)
    notes = []
    late_topic = spec.late.kafka.topic if spec.late else spec.dead_letter.kafka.topic
    if spec.late is None:
        notes.append("no 'late' output: late records go to the dead-letter topic with error 'late'")
    first = steps[0]
    assert isinstance(first, DecodingNode)
    name = spec.job
    return Plan(
        spec=spec, path=job.path, schema=first.schema, event_time_field=spec.source.event_time.field,
        steps=tuple(steps), inputs={**inputs, **sink_inputs}, sinks=tuple(sinks),
        dead_letter_topic=spec.dead_letter.kafka.topic, late_topic=late_topic,
        source_uid=f"{name}.source", dead_letter_uid=f"{name}.dead-letter", late_uid=f"{name}.late",
        notes=tuple(notes),
    )
