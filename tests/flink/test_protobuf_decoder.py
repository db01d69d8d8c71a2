"""The JVM Protobuf decoder (hr_decode) against Python's protobuf runtime, on messages hypothesis
makes and breaks.

Every input must come out as a row or a dead letter, never an exception; a message as written is
a row equal to what Python's parser reads; a broken one that Python's parser refuses is a dead
letter. (Python keeps a field of the wrong wire type as an unknown field, where Headrace calls
the record broken, so a broken message Python accepts may rightly be a dead letter here.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from headrace.operators.protobuf import ProtoDecoding, load_proto_schema
from headrace.schemas.types import FieldType
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.jvmdecode import decode_in_jvm, mutate, same

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "schemas" / "click.proto"
WRITER_ID = 3
FIELDS = [("tenant_id", FieldType.STRING), ("ts", FieldType.INTEGER), ("latency_ms", FieldType.INTEGER),
          ("bytes", FieldType.INTEGER), ("email", FieldType.STRING), ("sent_at", FieldType.INTEGER),
          ("device", FieldType.STRING), ("campaign", FieldType.STRING)]


def frame(body: bytes) -> bytes:
    return b"\x00" + WRITER_ID.to_bytes(4, "big") + b"\x00" + body


def values(m: Any) -> list[Any]:
    sent = m.sent_at.seconds * 1000 + m.sent_at.nanos // 1_000_000 if m.HasField("sent_at") else None
    device = type(m).Device.Name(m.device) if m.device in type(m).Device.values() else str(m.device)
    return [m.tenant_id, m.ts, m.latency_ms, m.bytes if m.HasField("bytes") else None,
            m.email if m.HasField("email") else None, sent, device,
            m.campaign if m.WhichOneof("source") == "campaign" else None]


def test_every_input_is_a_row_or_a_dead_letter_and_rows_equal_protobuf(click_pb2: Any) -> None:
    from google.protobuf.message import DecodeError

    Click = click_pb2.Click  # noqa: N806
    messages = st.builds(
        lambda tenant, ts, latency, size, email, sent, device, tags, labels, campaign: _click(
            Click, tenant, ts, latency, size, email, sent, device, tags, labels, campaign),
        st.text(max_size=10), st.integers(0, 4_000_000_000_000), st.integers(-2**63, 2**63 - 1),
        st.none() | st.integers(0, 2**62), st.none() | st.text(max_size=6),
        st.none() | st.integers(-62_135_596_800_000, 253_402_300_799_000), st.integers(0, 5),
        st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                                                    max_size=2),
        st.none() | st.text(max_size=4))
    payloads: list[bytes] = []
    intact: list[Any] = []

    @settings(max_examples=1500, database=None, deadline=None)
    @given(messages, st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 255), st.binary(max_size=40))
    def collect(message: Any, how: int, at: int, value: int, noise: bytes) -> None:
        body = message.SerializeToString()
        payloads.append(frame(body))
        intact.append(message)
        payloads.append(frame(mutate(body, how, at, value) if how < 4 else noise))
        intact.append(None)

    collect()
    schema = load_proto_schema(PROTO, "headrace.examples.Click")
    decoding = ProtoDecoding(schema=schema, wire="confluent", subject="probe-value", writers={WRITER_ID: [0]})
    got = decode_in_jvm(decoding.call(tuple(FIELDS), "ts", 10**15, "forever"), FIELDS, payloads)
    rows = dead = 0
    for payload, message, (path, error, event_ms, *row) in zip(payloads, intact, got, strict=True):
        rows, dead = rows + (error is None), dead + (error is not None)
        if message is not None:
            assert error is None, (payload, path, error)
            assert event_ms == message.ts and row == values(message), payload
            continue
        parsed = Click()
        try:
            parsed.ParseFromString(payload[6:])
        except DecodeError:
            assert error, payload  # Python refuses it: a dead letter here too
            continue
        if error is None:
            assert same(row, values(parsed)), payload
    assert rows + dead == len(payloads) and rows >= 1500 and dead >= 300, (rows, dead)


def _click(cls: Any, tenant: str, ts: int, latency: int, size: int | None, email: str | None, sent: int | None,
           device: int, tags: list[str], labels: dict[str, str], campaign: str | None) -> Any:
    m = cls(tenant_id=tenant, ts=ts, latency_ms=latency, device=device, tags=tags)
    m.labels.update(labels)
    if size is not None:
        m.bytes = size
    if email is not None:
        m.email = email
    if sent is not None:
        m.sent_at.FromMilliseconds(sent)
    if campaign is not None:
        m.campaign = campaign
    return m
