"""JSON in the Confluent wire format: Confluent's ``JSONSerializer`` registers the click schema in
``headrace registry serve`` and writes the records; the example job, with ``wire: confluent``,
fills PostgreSQL exactly as the plain-Python reference says, invalid records (framed correctly)
are dead letters with the schema's reason, and a wrong framing is a dead letter that says so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.sample import SampleEvent, click_events

from tests.integration.clirun import CliRun
from tests.integration.test_failures import SCHEMA, assert_exact, fault_job, final_offsets, run_args
from tests.jobfiles import ROOT, with_registry
from tests.kafkautil import produce_placed
from tests.reference import expected_outcome, is_valid, json_event_ms
from tests.services import Broker, Postgres

pytestmark = pytest.mark.integration
PARTITIONS = 2


def test_confluent_json_records_fill_the_view_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    broker.create_topic(unique, partitions=PARTITIONS)
    context = SerializationContext(unique, MessageField.VALUE)
    client = SchemaRegistryClient({"url": registry})
    # an older producer's version first (no 'email'); the serializer then registers the job's (v2)
    v1 = {**SCHEMA, "properties": {k: v for k, v in SCHEMA["properties"].items() if k != "email"}}
    v1_id = client.register_schema(f"{unique}-value", Schema(json.dumps(v1), "JSON"))
    serialize = JSONSerializer(json.dumps(SCHEMA), client)
    events: list[SampleEvent] = []
    header = b""
    for e in click_events(6_000, seed=95, invalid_rate=0.03):
        if is_valid(e.payload, SCHEMA):
            payload = serialize(json.loads(e.payload), context)
            header = payload[:5]
        else:  # the serializer refuses invalid records: frame them as a careless producer would
            payload = None
        events.append(SampleEvent(key=e.key, payload=payload if payload is not None else e.payload,
                                  timestamp_ms=e.timestamp_ms, kind=e.kind if payload is not None else "unframed"))
    # the records the serializer would not write, framed with the registered id
    events = [SampleEvent(e.key, header + e.payload, e.timestamp_ms, "invalid") if e.kind == "unframed" else e
              for e in events]
    schema_id = int.from_bytes(header[1:], "big")
    # every third record as the v1 producer frames it (its records are valid v2 records too)
    v1_header = b"\x00" + v1_id.to_bytes(4, "big")
    events = [SampleEvent(e.key, v1_header + e.payload[5:], e.timestamp_ms, e.kind) if i % 3 == 0 else e
              for i, e in enumerate(events)]
    plain = events[-1].payload[5:]
    odd = [plain, b"\x00\x00\x00\x03\xe7" + plain, b"\x00\x01"]  # no framing, unknown id, too short
    for i, b in enumerate(odd):
        events.insert(400 + 900 * i, SampleEvent(key=b"tenant-1", payload=b, timestamp_ms=events[0].timestamp_ms,
                                                 kind="invalid"))
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text().replace(
        f"format: {{json: {ROOT / 'schemas' / 'click.schema.json'}}}",
        f"format: {{json: {ROOT / 'schemas' / 'click.schema.json'}, wire: confluent}}"))
    assert "wire: confluent" in job.read_text()
    with_registry(profiles_file, registry)
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    later = [e for e in click_events(1_500, seed=96) if is_valid(e.payload, SCHEMA)]
    run = CliRun(*run_args(job, profiles_file, final_offsets(events, later)))
    run.wait_for(lambda: run.line_matching("running on the local mini-cluster") is not None, 120, "the job to start")
    # once the job runs, a newer producer registers v3 (an optional 'plan') and writes with it:
    # the validator looks the new id up and checks those records against the job's schema
    v3 = {**SCHEMA, "properties": {**SCHEMA["properties"], "plan": {"type": "string"}}}
    v3_id = client.register_schema(f"{unique}-value", Schema(json.dumps(v3), "JSON"))
    placed += produce_placed(broker.bootstrap, unique, [
        SampleEvent(e.key, b"\x00" + v3_id.to_bytes(4, "big") + e.payload, e.timestamp_ms, e.kind) for e in later],
        PARTITIONS)
    assert run.finish() == 0, run.output[-3000:]
    known = {v1_id, schema_id, v3_id}

    def framed_json(payload: bytes) -> bytes | None:
        ok = len(payload) >= 5 and payload[0] == 0 and int.from_bytes(payload[1:5], "big") in known
        return payload[5:] if ok else None

    def decode(payload: bytes) -> dict[str, Any] | None:
        body = framed_json(payload)
        return json.loads(body) if body is not None and is_valid(body, SCHEMA) else None

    def event_time(payload: bytes) -> int | None:
        body = framed_json(payload)
        return json_event_ms(body) if body is not None else None

    expected = expected_outcome(placed, {}, out_of_orderness_ms=5_000, lateness_ms=30_000, decode=decode,
                                event_time=event_time)
    assert len(expected.dead) >= 150 and len(expected.on_time) > 5_000
    dead, _ = assert_exact(broker, pg, unique, placed, expected, binary=True)
    by_sha = {d["payload_sha256"]: d for d in dead}
    assert by_sha[hashlib.sha256(odd[0]).hexdigest()]["error"].startswith("wrong magic byte 0x7b")
    unknown = by_sha[hashlib.sha256(odd[1]).hexdigest()]["error"]  # looked up once at run time, in vain
    assert unknown.startswith(f"unknown schema id 999 (subject '{unique}-value' has ids [")
    assert unknown.endswith(f"; looked up in the schema registry at {registry}: not a version of the subject)")
    listed = {int(i) for i in unknown.split("has ids [", 1)[1].split("]", 1)[0].split(", ")}
    assert {v1_id, schema_id} <= listed <= {v1_id, schema_id, v3_id}  # v3 too if it came before the lookup
    assert "too short for the Confluent wire format" in by_sha[hashlib.sha256(odd[2]).hexdigest()]["error"]
    schema_errors = [d for d in dead if d["error_path"] != "/" or d["error"].startswith("not valid JSON")]
    assert len(schema_errors) >= 100  # the schema's own verdicts, past the framing
