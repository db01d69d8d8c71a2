"""Field types Headrace derives from schemas, and and how each maps to Flink SQL (each store maps them itself)."""

from __future__ import annotations

from enum import StrEnum


class FieldType(StrEnum):
    """The scalar JSON types a record field can have."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    #: never a record field: a view's kept sketch (``keep_sketch: true``), served as base64 text
    BYTES = "bytes"

    @property
    def flink_sql(self) -> str:
        return {"string": "STRING", "integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN",
                "bytes": "BYTES"}[self.value]

    @property
    def numeric(self) -> bool:
        return self in (FieldType.INTEGER, FieldType.NUMBER)
