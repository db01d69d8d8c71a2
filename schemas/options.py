"""Building blocks of a job spec's options, shared by every step, sink and source kind: a
frozen model that refuses unknown keys, durations with units, identifiers.

Each kind's options model (``operators/aggregate.py``'s ``AggregateOptions``, …) is made of these;
``jobs/spec.py`` joins them into the whole spec, whose JSON Schema ``headrace schema`` prints.
"""

from __future__ import annotations

from typing import Annotated

from headrace.schemas.durations import format_duration_ms, parse_duration_ms
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema


class SpecModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Duration = Annotated[
    int,
    BeforeValidator(parse_duration_ms),
    PlainSerializer(format_duration_ms, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+\s*(ms|s|min|m|h|d)$",
                    "examples": ["500ms", "10s", "1m", "2h"]}),
]
"""A duration written with a unit (``10s``); held as milliseconds."""

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
"""A field, measure or table name: lower_snake_case (so never quoted differently by a store)."""
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
