"""Avro in the Confluent wire format, end to end with clients nobody here wrote: Confluent's
``SchemaRegistryClient`` and ``AvroSerializer`` register two versions of the click schema in
``headrace registry serve`` and write the records; the example job, reading them with
``schemas/click.avsc`` (v2), fills PostgreSQL exactly as a plain-Python reference (fastavro)
says, and every record it cannot decode is a dead letter with the reason."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.checkpoints import CheckpointStore
from headrace.jobs.sample import SampleEvent, click_events

from tests.integration.clirun import CliRun
from tests.integration.test_failures import (
    SCHEMA,
    assert_exact,
    fault_job,
    final_offsets,
    killed_and_resumed,
    row_count,
    run_args,
)
from tests.jobfiles import ROOT, with_registry
from tests.kafkautil import produce_placed
from tests.reference import Expected, confluent_avro, expected_outcome, is_valid
from tests.services import Broker, Postgres, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 2
V2 = json.loads((ROOT / "schemas" / "click.avsc").read_text())
V1 = {**V2, "fields": [f for f in V2["fields"] if f["name"] not in ("bytes", "email")]}


def serializer(url: str, schema: dict[str, Any]) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer

    return AvroSerializer(SchemaRegistryClient({"url": url}), json.dumps(schema))


def reference_decoder(url: str, reader: dict[str, Any]) -> Any:
    """Payload -> record (None if undecodable) with fastavro and the registry's schemas by id."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient({"url": url})
    writers: dict[int, Any] = {}

    def writer_of(schema_id: int) -> Any:
        if schema_id not in writers:
            try:
                writers[schema_id] = json.loads(client.get_schema(schema_id).schema_str)
            except Exception:
                writers[schema_id] = None
        return writers[schema_id]

    return lambda payload: confluent_avro(payload, writer_of, reader)


def avro_job(tmp_path: Path, name: str) -> Path:
    job = fault_job(tmp_path, name)
    job.write_text(job.read_text().replace(
        f"format: {{json: {ROOT / 'schemas' / 'click.schema.json'}}}",
        f"format: {{avro: {ROOT / 'schemas' / 'click.avsc'}, wire: confluent, max_record_bytes: 100000}}"))
    assert "wire: confluent" in job.read_text()
    return job


def avro_events(registry: str, topic: str, count: int, seed: int) -> list[SampleEvent]:
    """The sample clicks (the valid and the late ones) as Confluent Avro: the first half written
    by an old producer with v1 (no bytes, no email), the rest with v2."""
    context = _context(topic)
    v1, v2 = serializer(registry, V1), serializer(registry, V2)
    events: list[SampleEvent] = []
    for i, e in enumerate(click_events(count, seed=seed)):
        if not is_valid(e.payload, SCHEMA):
            continue
        record = json.loads(e.payload)
        if i < count // 2:
            payload = v1({k: v for k, v in record.items() if k not in ("bytes", "email")}, context)
        else:
            payload = v2({"bytes": None, "email": None, **record}, context)
        events.append(SampleEvent(key=e.key, payload=payload, timestamp_ms=e.timestamp_ms, kind=e.kind))
    return events


def expected_for(registry: str, placed: list[tuple[int, bytes]]) -> Expected:
    return expected_outcome(placed, {}, out_of_orderness_ms=5_000, lateness_ms=30_000,
                            decode=reference_decoder(registry, V2))


def test_confluent_avro_records_of_two_schema_versions_fill_the_view_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str) -> None:
    broker.create_topic(unique, partitions=PARTITIONS)
    events = avro_events(registry, unique, 6_000, seed=81)
    good = events[10].payload
    future = serializer(registry, V2)({**json.loads(click_events(1, seed=1).__next__().payload), "bytes": None,
                                       "email": None, "ts": 4_102_444_800_000}, _context(unique))
    bad = [
        b"\x01" + good[1:],                                 # wrong magic byte
        b"\x00\x00\x00\x03\xe7" + good[5:],                 # schema id 999: not in the registry
        good[:-3],                                          # truncated
        good + b"\x00",                                     # over-long
        b'{"tenant_id": "t1"}',                             # JSON on an Avro topic
        b"\x00",                                            # too short for the framing
        good[:5] + b"\xff" * 12,                            # a varint longer than 10 bytes
        b"\x00" + good[1:5] + bytes([len(good) + 40]) + good[6:],   # a string longer than the record
        future,                                             # well formed, dated 2100
        b"\x00" * 200_000,                                  # over max_record_bytes
    ]
    for i, b in enumerate(bad):
        events.insert(500 + 700 * i, SampleEvent(key=b"tenant-1", payload=b, timestamp_ms=events[0].timestamp_ms,
                                                 kind="invalid"))
    job = avro_job(tmp_path, unique)
    with_registry(profiles_file, registry)
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)))
    assert run.finish() == 0, run.output[-3000:]

    expected = expected_for(registry, placed)
    assert len(expected.dead) == len(bad) and len(expected.on_time) > 5_000
    dead, _ = assert_exact(broker, pg, unique, placed, expected, binary=True)
    reasons = sorted(d["error"] for d in dead)
    for expected_reason in ("wrong magic byte 0x01", "unknown schema id 999", "the record ends early",
                            "byte(s) after the end of the record", "wrong magic byte 0x7b", "too short for the "
                            "Confluent wire format", "bad varint", "over the limit of 100000",
                            "2100-01-01T00:00:00Z (4102444800000 ms) is more than max_future (1d)"):
        assert any(expected_reason in r for r in reasons), (expected_reason, reasons)
    assert all(d["step"] == "validate" for d in dead)
    by_sha = {d["payload_sha256"]: d for d in dead}
    truncated = by_sha[hashlib.sha256(bad[2]).hexdigest()]
    assert base64.b64decode(truncated["payload"]) == bad[2] and not truncated["payload_truncated"]
    assert by_sha[hashlib.sha256(bad[-1]).hexdigest()]["payload_truncated"]
    assert by_sha[hashlib.sha256(future).hexdigest()]["error_path"] == "/ts"


def test_a_version_registered_while_the_job_runs_is_looked_up_and_read(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str) -> None:
    """The job (reader v2) is compiled knowing v1 and v2; once it runs, a producer registers v3
    (a field added with a default, which BACKWARD admits) and writes with it: the decoder looks
    the new id up in the registry and reads those records too, exactly."""
    v3 = {**V2, "fields": [*V2["fields"], {"name": "plan", "type": "string", "default": "free"}]}
    broker.create_topic(unique, partitions=PARTITIONS)
    events = avro_events(registry, unique, 3_000, seed=83)
    later = [e for e in click_events(2_000, seed=84) if is_valid(e.payload, SCHEMA)]
    job = avro_job(tmp_path, unique)
    with_registry(profiles_file, registry)
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events, later)))
    run.wait_for(lambda: run.line_matching("running on the local mini-cluster") is not None, 120, "the job to start")
    write_v3 = serializer(registry, v3)  # registers v3 with the first record it writes
    newer = [SampleEvent(key=e.key, payload=write_v3({"bytes": None, "email": None, **json.loads(e.payload),
                                                      "plan": "pro"}, _context(unique)),
                         timestamp_ms=e.timestamp_ms, kind=e.kind) for e in later]
    placed += produce_placed(broker.bootstrap, unique, newer, PARTITIONS)
    assert run.finish() == 0, run.output[-3000:]

    dead, _ = assert_exact(broker, pg, unique, placed, expected_for(registry, placed), binary=True)
    assert not any("unknown schema id" in d["error"] for d in dead)
    from confluent_kafka.schema_registry import SchemaRegistryClient

    assert len(SchemaRegistryClient({"url": registry}).get_versions(f"{unique}-value")) == 3


def test_postgres_down_15_s_and_the_registry_gone_during_an_avro_run_is_exact(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    """Once the job runs, its registry is stopped for good and PostgreSQL for 15 s: the decoders
    need the registry only for ids they do not know (these records all name known ones), the
    sink rides the outage out, and the view is exact."""
    import subprocess
    import sys

    from tests.services import _wait_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port", str(port),
                               "--store", str(tmp_path / "registry.sqlite")], cwd=ROOT)
    try:
        _wait_port(port, server, "headrace registry serve")  # type: ignore[arg-type]
        registry = f"http://127.0.0.1:{port}"
        broker.create_topic(unique, partitions=PARTITIONS)
        events = avro_events(registry, unique, 12_000, seed=85)
        half = len(events) // 2
        job = avro_job(tmp_path, unique)
        with_registry(profiles_file, registry)
        placed = produce_placed(broker.bootstrap, unique, events[:half], PARTITIONS)
        run = CliRun(*run_args(job, profiles_file, final_offsets(events)))
        run.wait_for(lambda: row_count(pg, f"{unique}_1m") > 0, 120, "view rows")
        decode = reference_decoder(registry, V2)
        for e in events:  # the reference learns the writer schemas while the registry is there
            decode(e.payload)
    finally:
        server.terminate()
        server.wait(10)
    pg.shut_down()
    try:
        placed += produce_placed(broker.bootstrap, unique, events[half:], PARTITIONS)
        run.wait_for(lambda: run.line_matching("not answering") is not None, 30, "a progress line naming PostgreSQL")
        time.sleep(13)
    finally:
        pg.start_again()
    assert run.finish() == 0, run.output[-3000:]
    assert any("! restart" in line for line in run.lines), run.output[-3000:]
    expected = expected_outcome(placed, {}, out_of_orderness_ms=5_000, lateness_ms=30_000, decode=decode)
    assert_exact(broker, pg, unique, placed, expected, binary=True)


def test_a_writer_schema_with_references_is_read_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str) -> None:
    """A producer's schema takes its Address record from another subject (a schema reference, as
    Confluent's client registers it): the job resolves the reference when it compiles, and the
    records fill the view exactly as fastavro (given the referenced schema) reads them."""
    import io

    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry})
    address = {"type": "record", "name": "Address", "namespace": "dev.headrace.examples",
               "fields": [{"name": "city", "type": "string"}]}
    client.register_schema(f"{unique}-address", Schema(json.dumps(address), "AVRO"))
    writer = {**V2, "fields": [*V2["fields"], {"name": "home", "type": ["null", "dev.headrace.examples.Address"],
                                               "default": None}]}
    referencing = Schema(json.dumps(writer), "AVRO",
                         references=[SchemaReference("dev.headrace.examples.Address", f"{unique}-address", 1)])
    writer_id = client.register_schema(f"{unique}-value", referencing)
    assert client.get_schema(writer_id).references[0].subject == f"{unique}-address"
    named: dict[str, Any] = {}
    fastavro.parse_schema(address, named_schemas=named)
    parsed = fastavro.parse_schema(writer, named_schemas=named)

    broker.create_topic(unique, partitions=PARTITIONS)
    events = []
    for i, e in enumerate(click_events(4_000, seed=87)):
        if not is_valid(e.payload, SCHEMA):
            continue
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {"bytes": None, "email": None, **json.loads(e.payload),
                                                 "home": {"city": f"c{i % 7}"} if i % 2 else None})
        events.append(SampleEvent(key=e.key, payload=b"\x00" + writer_id.to_bytes(4, "big") + out.getvalue(),
                                  timestamp_ms=e.timestamp_ms, kind=e.kind))
    job = avro_job(tmp_path, unique)
    with_registry(profiles_file, registry)
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)))
    assert run.finish() == 0, run.output[-3000:]

    # the reference reads with the writer as a person would write it out: Address in its place
    standalone = {**V2, "fields": [*V2["fields"], {"name": "home", "type": ["null", address], "default": None}]}
    writer_of = lambda i: standalone if i == writer_id else None  # noqa: E731
    expected = expected_outcome(placed, {}, out_of_orderness_ms=5_000, lateness_ms=30_000,
                                decode=lambda p: confluent_avro(p, writer_of, V2))
    dead, _ = assert_exact(broker, pg, unique, placed, expected, binary=True)
    assert not dead


def test_kill_9_of_an_avro_job_and_the_same_command_resumes_exactly(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str, registry: str) -> None:
    broker.create_topic(unique, partitions=PARTITIONS)
    events = avro_events(registry, unique, 36_000, seed=82)
    phases = [events[:12_000], events[12_000:24_000], events[24_000:]]
    job = avro_job(tmp_path, unique)
    with_registry(profiles_file, registry)
    args = run_args(job, profiles_file, final_offsets(*phases))
    store = CheckpointStore(tmp_path / "checkpoints", "page-activity")
    placed = killed_and_resumed(broker, pg, unique, args, store, phases)
    assert_exact(broker, pg, unique, placed, expected_for(registry, placed), binary=True)


def test_an_unreachable_registry_is_one_line(tmp_path: Path, profiles_file: Path, unique: str) -> None:
    job = avro_job(tmp_path, unique)
    with_registry(profiles_file, f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    run = CliRun(*run_args(job, profiles_file, {0: 1, 1: 1}))
    code = run.finish(60)
    errors = [line for line in run.lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, run.output[-3000:]
    assert errors[0].startswith("error: cannot reach the schema registry at http://127.0.0.1:"), errors
    assert "Traceback" not in run.output and time.monotonic() - started < 30


def _context(topic: str) -> Any:
    from confluent_kafka.serialization import MessageField, SerializationContext

    return SerializationContext(topic, MessageField.VALUE)


def test_registry_refuses_an_incompatible_version_with_the_change_named(registry: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient({"url": registry})
    subject = "compat-test-value"
    first = client.register_schema(subject, Schema(json.dumps(V1), "AVRO"))
    assert client.register_schema(subject, Schema(json.dumps(V2), "AVRO")) != first  # defaults: BACKWARD holds
    assert client.register_schema(subject, Schema(json.dumps(V1), "AVRO")) == first  # already known: same id
    required = {**V2, "fields": [*V2["fields"], {"name": "plan", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(required), "AVRO"))
    assert refused.value.http_status_code == 409
    assert "field 'plan' added without a default — breaks BACKWARD" in refused.value.error_message
    assert not client.test_compatibility(subject, Schema(json.dumps(required), "AVRO"))
    client.set_compatibility(subject, "NONE")
    assert client.test_compatibility(subject, Schema(json.dumps(required), "AVRO"))
    assert client.get_compatibility(subject) == "NONE"
    latest = client.get_latest_version(subject)
    assert latest.version == 2 and json.loads(latest.schema.schema_str) == V2
    assert [f["name"] for f in json.loads(client.get_schema(first).schema_str)["fields"]] == [
        f["name"] for f in V1["fields"]]
