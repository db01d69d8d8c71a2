"""Running the decoding step's JVM function (``hr_decode``) over payloads, in one Flink batch query."""

from __future__ import annotations

import base64
from typing import Any

from headrace.connectors.sqltext import literal
from headrace.operators import jvm
from headrace.schemas.types import FieldType


def decode_in_jvm(call: str, fields: list[tuple[str, FieldType]], payloads: list[bytes],
                  function: str = jvm.DECODE_CLASS) -> list[tuple[Any, ...]]:
    """``(err_path, err_msg, event_ms, *fields)`` per payload, for the ``hr_decode(...)`` ``call``
    (a decoding's ``call()``: its literal is reused); ``function``: the class behind ``hr_decode``
    (``jvm.VALIDATE_CLASS`` runs the JSON validator with the call's spec)."""
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    spec = call[call.index("'"):-1]
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("pipeline.jars", jvm.build().resolve().as_uri())
    t_env.get_config().set("parallelism.default", "1")
    t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION hr_decode AS {literal(function)} LANGUAGE JAVA")
    # base64 in, FROM_BASE64 gives the bytes as a STRING unchanged, as the Kafka source's raw format
    # does (CAST(BYTES AS STRING) would decode them as UTF-8 and replace what is not)
    rows = t_env.from_elements([(i, base64.b64encode(p).decode()) for i, p in enumerate(payloads)], DataTypes.ROW(
        [DataTypes.FIELD("i", DataTypes.INT()), DataTypes.FIELD("b", DataTypes.STRING())]))
    t_env.create_temporary_view("probe", rows)
    names = ["err_path", "err_msg", "event_ms"] + [n for n, _ in fields]
    columns = ", ".join(f"v.`{name}`" for name in names)  # PyFlink cannot collect a nested ROW with nulls
    query = f"SELECT i, {columns} FROM (SELECT i, hr_decode(FROM_BASE64(b), {spec}) AS v FROM probe)"
    with t_env.execute_sql(query).collect() as result:
        by_index = {row[0]: tuple(row[1:]) for row in result}
    return [by_index[i] for i in range(len(payloads))]


def mutate(data: bytes, how: int, at: int, value: int) -> bytes:
    """``data`` truncated (0), extended (1), with a byte changed (2) or three inserted (3)."""
    at = at % (len(data) + 1)
    if how == 0:
        return data[:at]
    if how == 1:
        return data + bytes([value])
    if how == 2 and at < len(data):
        return data[:at] + bytes([value]) + data[at + 1:]
    return data[:at] + bytes([value]) * 3 + data[at:]


def same(got: list[Any], want: list[Any]) -> bool:
    """Equal, NaN included (a changed byte can make any double, NaN too)."""
    return len(got) == len(want) and all(g == w or (g != g and w != w) for g, w in zip(got, want, strict=True))
