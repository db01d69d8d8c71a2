"""The JVM Avro decoder (hr_decode) against fastavro, on records hypothesis makes and breaks.

Every input must come out of the decoder as a row or a dead letter, never an exception (the
query would fail); a record is a row exactly when fastavro, reading it with the same writer and
reader schemas, decodes it to the end; and a row's fields equal fastavro's values.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from headrace.operators.avro import AvroDecoding, avro_record_schema
from headrace.schemas.types import FieldType
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jvmdecode import decode_in_jvm as run_decoder
from tests.jvmdecode import mutate, same
from tests.reference import confluent_avro

pytestmark = pytest.mark.flink

WRITER: dict[str, Any] = {
    "type": "record", "name": "Probe", "namespace": "t", "fields": [
        {"name": "id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "int"},
        {"name": "score", "type": ["null", "double"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
        {"name": "flag", "type": "boolean"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "gone", "type": "string"},
    ]}
# the reader: 'gone' dropped, 'n' promoted to long, 'extra' added with a default
READER: dict[str, Any] = {**WRITER, "fields": [
    *(f if f["name"] != "n" else {"name": "n", "type": "long"} for f in WRITER["fields"] if f["name"] != "gone"),
    {"name": "extra", "type": "string", "default": "x"}]}
FIELDS = [("id", FieldType.STRING), ("ts", FieldType.INTEGER), ("n", FieldType.INTEGER),
          ("score", FieldType.NUMBER), ("kind", FieldType.STRING), ("flag", FieldType.BOOLEAN),
          ("price", FieldType.NUMBER), ("extra", FieldType.STRING)]
WRITER_ID = 7

records = st.fixed_dictionaries({
    "id": st.text(max_size=12), "ts": st.integers(0, 4_000_000_000_000), "n": st.integers(-2**31, 2**31 - 1),
    "score": st.none() | st.floats(allow_nan=False), "kind": st.sampled_from(["A", "B", "C"]),
    "flag": st.booleans(), "tags": st.lists(st.text(max_size=5), max_size=4),
    "attrs": st.dictionaries(st.text(max_size=4), st.integers(-2**63, 2**63 - 1), max_size=3),
    "digest": st.binary(min_size=4, max_size=4), "price": st.decimals(-9999999, 9999999, places=2),
    "gone": st.text(max_size=3)})


def encode(record: dict[str, Any]) -> bytes:
    import fastavro

    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(WRITER), record)
    return b"\x00" + WRITER_ID.to_bytes(4, "big") + out.getvalue()


def reference(payload: bytes) -> dict[str, Any] | None:
    """fastavro's reading with the same schemas, or None where it cannot decode the record whole."""
    return confluent_avro(payload, lambda schema_id: WRITER if schema_id == WRITER_ID else None, READER)


def decode_in_jvm(payloads: list[bytes]) -> list[tuple[Any, ...]]:
    schema = avro_record_schema(READER, Path("probe.avsc"))
    decoding = AvroDecoding(schema=schema, wire="confluent", subject="probe-value", writers={WRITER_ID: WRITER})
    return run_decoder(decoding.call(tuple(FIELDS), "ts", 10**15, "forever"), FIELDS, payloads)


def test_every_input_is_a_row_or_a_dead_letter_and_rows_equal_fastavro() -> None:
    """Records as written are rows equal to fastavro's reading; broken ones that fastavro refuses
    are dead letters. (fastavro is lenient where a skipped or short string runs past the end of
    the data, so a broken record it accepts may rightly be a dead letter here: not asserted.)"""
    payloads: list[bytes] = []
    intact: list[bool] = []

    @settings(max_examples=1500, database=None, deadline=None)
    @given(records, st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 255), st.binary(max_size=40))
    def collect(record: dict[str, Any], how: int, at: int, value: int, noise: bytes) -> None:
        good = encode(record)
        broken = mutate(good, how, at, value) if how < 4 else b"\x00" + WRITER_ID.to_bytes(4, "big") + noise
        payloads.extend((good, broken))
        intact.extend((True, broken == good))

    collect()
    got = decode_in_jvm(payloads)
    rows = dead = 0
    for payload, whole, (path, error, event_ms, *values) in zip(payloads, intact, got, strict=True):
        rows, dead = rows + (error is None), dead + (error is not None)
        want = reference(payload)
        if want is None:
            assert error, (payload, values)
            continue
        if not whole and error is not None:
            continue
        assert error is None, (payload, path, error)
        ms = want["ts"]
        assert event_ms == ms
        expected = [want["id"], ms, want["n"], want["score"], want["kind"], want["flag"], float(want["price"]),
                    want["extra"]]
        assert same(values, expected), payload
    assert rows + dead == len(payloads) and rows >= 1500 and dead >= 300, (rows, dead)


def test_reasons_name_what_is_wrong() -> None:
    record = {"id": "a", "ts": 5, "n": 1, "score": None, "kind": "B", "flag": True, "tags": [], "attrs": {},
              "digest": b"abcd", "price": __import__("decimal").Decimal("1.50"), "gone": ""}
    good = encode(record)
    bad_utf8 = good[:6] + b"\xff" + good[7:]  # the id's single character
    got = decode_in_jvm([good, good[:-1], good + b"\x01", b"\x02" + good[1:], good[:1] + b"\x00\x00\x00\x09" + good[5:],
                         bad_utf8])
    assert got[0][1] is None and got[0][3:5] == ("a", 5)
    assert "ends early" in got[1][1]
    assert got[2][1] == "1 byte(s) after the end of the record (it is longer than its schema says)"
    assert got[3][1].startswith("wrong magic byte 0x02")
    assert got[4][1] == "unknown schema id 9 (subject 'probe-value' has ids [7])"
    assert got[5][0] == "/id" and "not valid UTF-8" in got[5][1]
    assert json.dumps(got[1][0]).startswith('"/')
