"""Protobuf in the Confluent wire format, end to end with Confluent's ``ProtobufSerializer``
writing the records (schema registered in ``headrace registry serve``) and its
``ProtobufDeserializer`` as the reference: the example job reading ``schemas/click.proto`` fills
PostgreSQL exactly as the reference says, reads records of an older writer version and records
with fields it does not know, and every broken record is a dead letter with the reason."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.sample import SampleEvent, click_events
from headrace.schemas.protoc import descriptor_set

from tests.integration.clirun import CliRun
from tests.integration.test_failures import SCHEMA, assert_exact, fault_job, final_offsets, run_args
from tests.jobfiles import ROOT, with_registry
from tests.kafkautil import produce_placed
from tests.reference import expected_outcome, is_valid
from tests.services import Broker, Postgres

pytestmark = pytest.mark.integration
PARTITIONS = 2
PROTO = ROOT / "schemas" / "click.proto"
# an older producer's message: no bytes, no email, nothing after latency_ms
V1_PROTO = """syntax = "proto3";
package headrace.examples;
message Click { string tenant_id = 1; string user_id = 2; string page = 3; int64 ts = 4; int64 latency_ms = 5; }
"""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_confluent_protobuf_records_fill_the_view_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str,
        click_pb2: Any) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import descriptor_pb2

    broker.create_topic(unique, partitions=PARTITIONS)
    context = SerializationContext(unique, MessageField.VALUE)
    client = SchemaRegistryClient({"url": registry})
    # the old producer's version, registered first (as the Java serializer would, by its descriptor)
    v1_file = tmp_path / "click_v1.proto"
    v1_file.write_text(V1_PROTO)
    v1_descriptor = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(v1_file)).file[-1]
    # the subject keeps the default mode, BACKWARD: the serializer's v2 adds fields, which a reader
    # of v2 defaults in v1 records, so the registry takes it
    v1_id = client.register_schema(f"{unique}-value", Schema(
        base64.b64encode(v1_descriptor.SerializeToString()).decode(), "PROTOBUF"))
    serialize = ProtobufSerializer(click_pb2.Click, client, {"use.deprecated.format": False})

    events: list[SampleEvent] = []
    for i, e in enumerate(click_events(6_000, seed=91)):
        if not is_valid(e.payload, SCHEMA):
            continue
        record = __import__("json").loads(e.payload)
        message = click_pb2.Click(tenant_id=record["tenant_id"], user_id=record["user_id"], page=record["page"],
                                  ts=record["ts"], latency_ms=record["latency_ms"])
        if i < 2_000:  # written by the v1 producer: its id, and only its fields
            payload = b"\x00" + v1_id.to_bytes(4, "big") + b"\x00" + message.SerializeToString()
        else:
            if "bytes" in record:
                message.bytes = record["bytes"]
            message.device = click_pb2.Click.MOBILE
            message.tags.extend(["a", "b"])
            message.labels["k"] = "v"
            message.campaign = "spring"
            message.sent_at.FromMilliseconds(record["ts"] + 5)
            payload = serialize(message, context)
            if i % 5 == 0:  # a newer producer: fields 20 and 21 this job does not know
                payload += _varint(20 << 3) + _varint(7) + _varint(21 << 3 | 2) + _varint(3) + b"abc"
        events.append(SampleEvent(key=e.key, payload=payload, timestamp_ms=e.timestamp_ms, kind=e.kind))

    good = events[-1].payload
    header, body = good[:6], good[6:]
    assert header[5] == 0  # message indexes [0]
    bad = [
        b"\x07" + good[1:],                                          # wrong magic byte
        b"\x00\x00\x00\x03\xe7\x00" + body,                          # unknown schema id 999
        header + _varint(1 << 3 | 2) + _varint(10) + b"abc",         # truncated: 3 of 10 bytes
        header + _varint(5 << 3 | 2) + _varint(1) + b"x",            # latency_ms (5) with wire type 2
        header + _varint(4 << 3) + b"\xff" * 11,                     # a varint longer than 10 bytes
        header + _varint(1 << 3 | 2) + _varint(2) + b"\xc3\x28",     # tenant_id not UTF-8
        good[:5] + b"\x02\x02" + body,                               # message indexes [1]: not Click
        header + _varint(3 << 3 | 7),                                # wire type 7 does not exist
        good[:5] + b"\x00" * 200_000,                                # over max_record_bytes
    ]
    future = click_pb2.Click(tenant_id="tenant-1", user_id="u1", page="/", ts=4_102_444_800_000, latency_ms=1)
    bad_or_late = [*bad, serialize(future, context)]
    for i, b in enumerate(bad_or_late):
        events.insert(300 + 500 * i, SampleEvent(key=b"tenant-1", payload=b, timestamp_ms=events[0].timestamp_ms,
                                                 kind="invalid"))

    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text().replace(
        f"format: {{json: {ROOT / 'schemas' / 'click.schema.json'}}}",
        f"format: {{protobuf: {PROTO}, message: headrace.examples.Click, wire: confluent, "
        "max_record_bytes: 100000}"))
    assert "protobuf:" in job.read_text()
    with_registry(profiles_file, registry)
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)))
    assert run.finish() == 0, run.output[-3000:]

    deserialize = ProtobufDeserializer(click_pb2.Click, {"use.deprecated.format": False})
    broken = set(bad)

    def decode(payload: bytes) -> dict[str, Any] | None:
        if payload in broken:  # made broken on purpose; Protobuf parsers keep wrong wire types as unknown
            return None
        m = deserialize(payload, context)
        return {"tenant_id": m.tenant_id, "page": m.page, "ts": m.ts, "latency_ms": m.latency_ms,
                "bytes": m.bytes if m.HasField("bytes") else None}

    reference: Callable[[bytes], dict[str, Any] | None] = decode
    expected = expected_outcome(placed, {}, out_of_orderness_ms=5_000, lateness_ms=30_000, decode=reference)
    assert len(expected.dead) == len(bad) + 1 and len(expected.on_time) > 5_000
    dead, _ = assert_exact(broker, pg, unique, placed, expected, binary=True)
    by_sha = {d["payload_sha256"]: d for d in dead}

    def reason(payload: bytes) -> tuple[str, str]:
        d = by_sha[hashlib.sha256(payload).hexdigest()]
        return d["error_path"], d["error"]

    assert reason(bad[0])[1].startswith("wrong magic byte 0x07")
    assert reason(bad[1])[1].startswith("unknown schema id 999 (subject")
    assert "ends early" in reason(bad[2])[1]
    assert reason(bad[3]) == ("/latency_ms", "field 5 ('latency_ms') has wire type 2 at offset 6, but its type "
                              "needs wire type 0")
    assert reason(bad[4])[0] == "/ts" and "bad varint" in reason(bad[4])[1]
    assert reason(bad[5])[0] == "/tenant_id" and "not valid UTF-8" in reason(bad[5])[1]
    assert "message indexes [1]" in reason(bad[6])[1]
    assert "wire type 7" in reason(bad[7])[1]
    assert "over the limit of 100000" in reason(bad[8])[1]
    assert reason(bad_or_late[-1])[0] == "/ts" and "max_future" in reason(bad_or_late[-1])[1]
