"""Building blocks of a job spec's options, shared by every step, sink and source kind: a
frozen model that refuses unknown keys, durations with units, identifiers.

Each kind's options model (``operators/aggregate.py``'s ``AggregateOptions``, …) is made of these;
``jobs/spec.py`` joins them into the whole spec, whose JSON Schema ``headrace schema`` prints.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from headrace.schemas.durations import format_duration_ms, parse_duration_ms
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)


def _numeric(annotation: Any) -> bool:
    """A number field (int, float, or either or None): YAML's true/false is not one of its values."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return bool not in members and any(m in (int, float) for m in members) and all(
            m in (int, float, type(None)) for m in members)
    return False


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1: 'parallelism: true' would run at parallelism 1
        if isinstance(value, bool) and info.field_name and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is wanted here, not {str(value).lower()}")
        return value


Duration = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+\s*(ms|s|min|m|h|d)$",
                    "examples": ["500ms", "10s", "1m", "2h"]}),
]
"""A duration written with a unit (``10s``); held as milliseconds."""

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)]
"""A field, measure or table name: lower_snake_case (so never quoted differently by a store), at
most 63 characters (PostgreSQL cuts longer names, so two could become one)."""
GroupId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]+$", max_length=249)]
"""A Kafka consumer group id: printable, without spaces."""
FilePath = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f]+$")]
"""A path to a file: not empty, no control characters (a NUL would cut it short)."""
Text = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A host, database, user name or location: one line, not empty, no control characters."""
Port = Annotated[int, Field(ge=1, le=65535)]
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=60)]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=249)]


class StepOptions(SpecModel):
    """What every step's options have: its ``id`` (defaults to the kind) and ``from``, the step
    it reads (defaults to the step before it in the list)."""

    id: StepId | None = None
    from_step: StepId | None = Field(default=None, alias="from")


class SinkOptions(SpecModel):
    """What every sink's options have: ``from``, the aggregate step whose rows it stores
    (defaults to the last aggregate step of the job)."""

    from_step: StepId | None = Field(default=None, alias="from")
