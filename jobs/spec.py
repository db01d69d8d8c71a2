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

from typing import TYPE_CHECKING, Annotated, Any, Literal

from headrace.jobs.registry import FORMATS, SINKS, STEPS
from headrace.schemas.durations import MAX_INTERVAL_MS
from headrace.schemas.kinds import FormatKind
from headrace.schemas.options import Duration, GroupId, Identifier, SpecModel, StepId, TopicName
from pydantic import BaseModel, Discriminator, Field, Tag, create_model, model_validator

JobName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$", max_length=60)]
__all__ = ["Duration", "Identifier", "SpecModel", "StepId", "JobName"]


# -- source -------------------------------------------------------------------------------

class KafkaTopic(SpecModel):
    """A Kafka topic; ``group`` is the consumer group (defaults to the job name)."""

    topic: TopicName
    group: GroupId | None = None


class _RecordFormat(SpecModel):
    """How records are encoded: one key names the format and its schema file (``json: <JSON
    Schema>``, ``avro: <.avsc>``, ``protobuf: <.proto>`` with its ``message``; the formats of
    ``jobs/registry.py``), relative to the project. ``wire: confluent``: each record starts with the
    magic byte 0 and a 4-byte schema id (Confluent's serializers); the writer schemas come from the
    profile's schema registry, under ``subject`` (default ``<topic>-value``). ``max_record_bytes``
    (binary formats): a longer record is a dead letter."""

    wire: Literal["plain", "confluent"] = "plain"
    subject: str | None = Field(default=None, min_length=1, max_length=255)
    max_record_bytes: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_format(self) -> _RecordFormat:
        given = [name for name in FORMATS if getattr(self, _file_field(name)) is not None]
        if len(given) != 1:
            names = [f"{n}: <{k.file_hint}>" for n, k in FORMATS.items()]
            raise ValueError("name exactly one format: " + ", ".join(names[:-1]) + f" or {names[-1]}"
                             + (f" (got {' and '.join(given)})" if given else ""))
        kind = FORMATS[given[0]]
        if not kind.binary and self.max_record_bytes is not None:
            binary = ", ".join(n for n, k in FORMATS.items() if k.binary)
            raise ValueError(f"max_record_bytes is for binary formats ({binary}) so far")
        for name, other in FORMATS.items():
            for key, (_, _, hint) in other.keys.items():
                present = getattr(self, key) is not None
                if present != (name == kind.name):
                    raise ValueError(f"{name}: needs {key}: <{hint}>, and {key}: goes with {name}:")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in FORMATS if getattr(self, _file_field(name)) is not None)

    @property
    def format(self) -> FormatKind:
        return FORMATS[self.kind]

    @property
    def schema_file(self) -> str:
        return str(getattr(self, _file_field(self.kind)))

    @property
    def options(self) -> dict[str, Any]:
        """The chosen format's own keys (``message`` for Protobuf)."""
        return {key: getattr(self, key) for key in self.format.keys}

    @property
    def binary(self) -> bool:
        """Whether records are bytes rather than text (a binary format, or any Confluent framing)."""
        return self.format.binary or self.wire == "confluent"


def _file_field(name: str) -> str:
    return f"{name}_file"  # 'json' would shadow BaseModel.json; the YAML key is the alias


if TYPE_CHECKING:
    RecordFormat = _RecordFormat
else:  # one key per registered format, and each format's own keys
    RecordFormat = create_model(
        "RecordFormat", __base__=_RecordFormat, __doc__=_RecordFormat.__doc__,
        **{_file_field(name): (str | None, Field(default=None, alias=name)) for name in FORMATS},
        **{key: (typ, field) for kind in FORMATS.values() for key, (typ, field, _) in kind.keys.items()})


class EventTime(SpecModel):
    """Where event time comes from and how watermarks follow it (per source partition).

    ``max_future`` bounds how far ahead of the wall clock an event time may be: a record
    beyond it (a device whose clock says 2100) is a dead letter, so one bad clock cannot move
    the watermark and make every later record late.
    """

    field: Identifier
    max_out_of_orderness: Duration = Field(default=0, lt=MAX_INTERVAL_MS)
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


# -- steps and sinks: one-key mappings whose key names a registered kind -----------------------

def _one_key_models(kinds: dict[str, Any], suffix: str) -> dict[str, type[BaseModel]]:
    """``{"validate": ValidateStep, ...}``: a model with one field, aliased to the kind's name."""
    return {name: create_model(f"{name.title()}{suffix}", __base__=SpecModel,
                               options_=(kind.options, Field(alias=name)))
            for name, kind in kinds.items()}


STEP_MODELS = _one_key_models(STEPS, "Step")
SINK_MODELS = _one_key_models(SINKS, "Sink")
STEP_KINDS = tuple(STEP_MODELS)
SINK_KINDS = tuple(SINK_MODELS)


def _discriminator(models: dict[str, type[BaseModel]]) -> Any:
    def first_key(value: Any) -> str | None:
        if isinstance(value, dict) and len(value) == 1:
            return str(next(iter(value)))
        if isinstance(value, BaseModel):
            return next((name for name, model in models.items() if isinstance(value, model)), None)
        return None
    return Discriminator(first_key)


def _union(models: dict[str, type[BaseModel]]) -> Any:
    members = tuple(Annotated[model, Tag(name)] for name, model in models.items())
    union = members[0]
    for member in members[1:]:
        union = union | member
    return Annotated[union, _discriminator(models)]


Step = _union(STEP_MODELS)
Sink = _union(SINK_MODELS)


def kind_of(item: BaseModel) -> str:
    """The kind a step or sink entry names (``validate``, ``postgres``, …)."""
    return next(iter(type(item).model_fields.values())).alias or ""


def options_of(item: BaseModel) -> Any:
    return item.options_  # type: ignore[attr-defined]


class KafkaOutput(SpecModel):
    """An output to a Kafka topic (dead letters, late records)."""

    kafka: KafkaTopic


class DeadLetterOutput(KafkaOutput):
    """The dead-letter output; ``payload`` says what a dead letter of a job that masks fields
    carries when its payload cannot be parsed (so its fields cannot be masked): ``masked`` (its
    length and keyed hash), ``raw`` or ``omit``."""

    payload: Literal["masked", "raw", "omit"] = "masked"


class Checkpoint(SpecModel):
    #: Flink takes 10 ms at the least
    interval: Duration = Field(default=10_000, ge=10)


class JobSpec(SpecModel):
    """A whole job: one source, an ordered list of steps, sinks and the error outputs."""

    job: JobName
    parallelism: int = Field(default=1, ge=1, le=256)
    checkpoint: Checkpoint = Checkpoint()
    source: Source
    steps: list[Step] = Field(min_length=1)  # type: ignore[valid-type]
    sinks: list[Sink] = Field(min_length=1)  # type: ignore[valid-type]
    dead_letter: DeadLetterOutput
    late: KafkaOutput | None = None


def all_keys() -> set[str]:
    """Every key the spec knows, for "did you mean" hints."""
    keys: set[str] = set()
    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            keys.add(info.alias or name)
            for arg in _models_in(info.annotation):
                walk(arg)

    walk(JobSpec)
    for model in (*STEP_MODELS.values(), *SINK_MODELS.values()):
        walk(model)
    return keys


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the job spec, for editors (``headrace schema > headrace.schema.json``)."""
    schema = JobSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Headrace job spec"
    return schema
