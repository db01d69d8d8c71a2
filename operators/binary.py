"""What binary formats (``avro``, ``protobuf``) share: a source schema with typed top-level
fields, and a decoding that the validate step calls as ``hr_decode`` in the JVM
(``operators/java/.../DecodeBinary.java``: the Confluent framing, the size limit, the event time
and the row; the format's own module says how its data is read).

A format module provides a :class:`BinarySchema` subclass (loading its schema file, the field
types, ``decoding()``) and a :class:`BinaryDecoding` subclass (its part of the spec literal, and
the writers of a subject in the registry).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from headrace.connectors.sqltext import literal
from headrace.operators import jvm
from headrace.schemas.errors import SpecError
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType

DECODE_FUNCTION = "hr_decode"


@dataclass(frozen=True)
class BinarySchema(ABC):
    """A binary format's record schema as a source schema: the facts the planner needs."""

    path: Path
    document: Any
    types: dict[str, FieldType | None] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    #: fields that may hold an event time besides the required integers (a Protobuf Timestamp)
    timestamps: frozenset[str] = frozenset()
    #: how to declare an event-time field in this format, for the error that asks for one
    event_time_hint: ClassVar[str] = ""

    def field_type(self, name: str) -> FieldType | None:
        return self.types.get(name)

    @property
    def properties(self) -> list[str]:
        return list(self.types)

    @abstractmethod
    def decoding(self, fmt: Any, topic: str) -> BinaryDecoding:
        """How the validate step reads this source (``fmt``: the spec's ``source.format``)."""

    def check_event_time(self, name: str, where: str) -> None:
        """The event-time field: an integer (epoch ms) every record has, or a timestamp field."""
        ok = self.field_type(name) is FieldType.INTEGER and (name in self.required or name in self.timestamps)
        if not ok:
            raise SpecError(f"event-time field '{name}' must be a non-null epoch-milliseconds integer of "
                            f"{self.path.name}", where=where, hint=self.event_time_hint)


@dataclass(frozen=True)
class BinaryDecoding(ABC):
    """The decoding of one source: the schema, the framing, and (Confluent wire) the writers."""

    schema: BinarySchema
    wire: str = "plain"
    subject: str = ""
    #: schema id -> what the format needs of that writer (the registry's versions of the subject)
    writers: dict[int, Any] = field(default_factory=dict)
    max_record_bytes: int | None = None
    name: str = ""  # "Avro", "Protobuf"
    #: the registry as the running job asks it (new versions, unknown ids): url, user, refresh_ms
    registry: dict[str, Any] | None = None

    def explain(self) -> str:
        framing = f", Confluent wire format (subject '{self.subject}')" if self.wire == "confluent" else ""
        return f"decode {self.name} ({self.schema.path.name}{framing}) in the JVM"

    @abstractmethod
    def format_spec(self) -> dict[str, Any]:
        """The format's keys of the spec literal (its schema, its writers)."""

    @abstractmethod
    def subject_writers(self, profile: Profile) -> dict[int, Any]:
        """The writers of ``subject`` the profile's registry holds now."""

    def with_writers(self, profile: Profile) -> BinaryDecoding:
        """This decoding with the registry's writers (Confluent wire), read once per compilation."""
        if self.wire != "confluent":
            return self
        connection = profile.registry
        return replace(self, writers=self.subject_writers(profile),
                       registry=connection.runtime() if connection is not None else None)

    def spec(self, fields: tuple[tuple[str, FieldType], ...], event_time: str, max_future_ms: int,
             max_future_text: str) -> str:
        """The JVM decoder's spec literal (``DecodeBinary.java``)."""
        spec: dict[str, Any] = {**self.format_spec(), "wire": self.wire, "subject": self.subject,
                                "event_time": event_time, "max_future_ms": max_future_ms,
                                "max_future": max_future_text, "fields": [[n, t.value] for n, t in fields]}
        if self.max_record_bytes is not None:
            spec["max_bytes"] = self.max_record_bytes
        if self.registry is not None:
            spec["registry"] = self.registry
        return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)

    def call(self, fields: tuple[tuple[str, FieldType], ...], event_time: str, max_future_ms: int,
             max_future_text: str) -> str:
        """``hr_decode(_payload, '<spec>')``: the decoder as a SQL function (tests, the benchmark)."""
        text = self.spec(fields, event_time, max_future_ms, max_future_text)
        return f"{DECODE_FUNCTION}(`_payload`, {literal(text)})"

    @staticmethod
    def function_ddl() -> str:
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {DECODE_FUNCTION} AS {literal(jvm.DECODE_CLASS)} "
                "LANGUAGE JAVA")
