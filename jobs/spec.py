"""The job spec: YAML a data engineer writes, parsed into frozen, typed models.

Every model refuses unknown keys; :func:`jobs.loader.load_job` turns pydantic's errors into
one ``file:line`` line with a hint. The complete format is documented in README.md ("Job
spec") and exported as JSON Schema by ``headrace schema``.

Example (``jobs/page_activity.yaml``)::

    job: page-activity
    source:
      kafka: {topic: clicks, group: page-activity}
      format: {json: schemas/click.schema.json}
      event_time: {field: ts, max_out_of_orderness: 5s, idle_timeout: 30s}
    steps:
      - validate: {}
      - aggregate:
          group_by: [tenant_id, page]
          window: {tumbling: 1m}
          allowed_lateness: 30s
          measures: {events: count(), avg_ms: avg(latency_ms)}
    sinks:
      - postgres: {table: page_activity_1m}
    dead_letter: {kafka: {topic: clicks.dlq}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from headrace.operators.measures import parse_measure
from headrace.schemas.durations import format_duration_ms, parse_duration_ms
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    model_validator,
)

Duration = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+\s*(ms|s|min|m|h|d)$",
                    "examples": ["500ms", "10s", "1m", "2h"]}),
]
"""A duration written with a unit (``10s``); held as milliseconds."""

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]


def _check_measure(expression: str) -> str:
    parse_measure("m", expression)
    return expression


MeasureExpression = Annotated[str, AfterValidator(_check_measure),
                              Field(examples=["count()", "sum(bytes)", "avg(latency_ms)"])]
JobName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", max_length=60)]
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=60)]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=249)]


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# -- source -------------------------------------------------------------------------------

class KafkaTopic(SpecModel):
    """A Kafka topic; ``group`` is the consumer group (defaults to the job name)."""

    topic: TopicName
    group: str | None = None


class RecordFormat(SpecModel):
    """How records are encoded; ``json`` names a JSON Schema file (relative to the project)."""

    json_schema: str = Field(alias="json")


class EventTime(SpecModel):
    """Where event time comes from and how watermarks follow it (per source partition).

    ``max_future`` bounds how far ahead of the wall clock an event time may be: a record
    beyond it (a device whose clock says 2100) is a dead letter, so one bad clock cannot move
    the watermark and make every later record late.
    """

    field: Identifier
    max_out_of_orderness: Duration = 0
    idle_timeout: Duration | None = None
    max_future: Duration = 86_400_000

    @model_validator(mode="after")
    def _positive_future(self) -> EventTime:
        if self.max_future <= 0:
            raise ValueError("max_future must be longer than 0")
        return self


class Source(SpecModel):
    kafka: KafkaTopic
    format: RecordFormat
    event_time: EventTime


# -- steps --------------------------------------------------------------------------------

class ValidateOptions(SpecModel):
    """Check each record against the source's schema (or ``schema``); failures go to dead letter."""

    id: StepId | None = None
    schema_file: str | None = Field(default=None, alias="schema")
    #: where records are checked: ``jvm`` (Flink function, the JSON Schema subset Headrace
    #: compiles), ``python`` (jsonschema-rs, all of draft 2020-12, slower), or ``auto``:
    #: the JVM when the schema is in its subset
    engine: Literal["auto", "jvm", "python"] = "auto"


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
        return self

    @property
    def kind(self) -> Literal["tumbling", "sliding", "session"]:
        if self.tumbling is not None:
            return "tumbling"
        return "sliding" if self.sliding is not None else "session"


class AggregateOptions(SpecModel):
    """Windowed aggregation on event time; results are upserted by group keys + window bounds."""

    id: StepId | None = None
    group_by: list[Identifier] = Field(min_length=1)
    window: WindowSpec
    allowed_lateness: Duration = 0
    measures: dict[Identifier, MeasureExpression] = Field(min_length=1)


class ValidateStep(SpecModel):
    validate_: ValidateOptions = Field(alias="validate")


class AggregateStep(SpecModel):
    aggregate: AggregateOptions


STEP_KINDS = ("validate", "aggregate")


def _first_key(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    if isinstance(value, BaseModel):
        return "validate" if isinstance(value, ValidateStep) else "aggregate"
    return None


Step = Annotated[
    Annotated[ValidateStep, Tag("validate")] | Annotated[AggregateStep, Tag("aggregate")],
    Discriminator(_first_key),
]


def step_kind(step: ValidateStep | AggregateStep) -> str:
    return "validate" if isinstance(step, ValidateStep) else "aggregate"


def step_options(step: ValidateStep | AggregateStep) -> ValidateOptions | AggregateOptions:
    return step.validate_ if isinstance(step, ValidateStep) else step.aggregate


# -- sinks and outputs --------------------------------------------------------------------

class PostgresTable(SpecModel):
    """An upsert into a PostgreSQL table (created if absent), keyed by group keys + window."""

    table: Identifier
    from_step: StepId | None = Field(default=None, alias="from")


class PostgresSink(SpecModel):
    postgres: PostgresTable


SINK_KINDS = ("postgres",)
Sink = PostgresSink


class KafkaOutput(SpecModel):
    """An output to a Kafka topic (dead letters, late records)."""

    kafka: KafkaTopic


class Checkpoint(SpecModel):
    interval: Duration = 10_000


class JobSpec(SpecModel):
    """A whole job: one source, an ordered list of steps, sinks and the error outputs."""

    job: JobName
    parallelism: int = Field(default=1, ge=1, le=256)
    checkpoint: Checkpoint = Checkpoint()
    source: Source
    steps: list[Step] = Field(min_length=1)
    sinks: list[Sink] = Field(min_length=1)
    dead_letter: KafkaOutput
    late: KafkaOutput | None = None


def all_keys() -> set[str]:
    """Every key the spec knows, for "did you mean" hints."""
    keys: set[str] = set()
    for model in (KafkaTopic, RecordFormat, EventTime, Source, ValidateOptions, SlidingWindow,
                  SessionWindow, WindowSpec, AggregateOptions, ValidateStep, AggregateStep,
                  PostgresTable, PostgresSink, KafkaOutput, Checkpoint, JobSpec):
        for name, info in model.model_fields.items():
            keys.add(info.alias or name)
    return keys


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the job spec, for editors (``headrace schema > headrace.schema.json``)."""
    schema = JobSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Headrace job spec"
    return schema
