"""The JVM decoders at run time, with writers the job was not compiled with: a record naming a
schema id the job does not know makes one lookup of its subject in the registry (Headrace's own
``headrace registry serve``, registered with Confluent's client); found, its records decode
(Avro resolved against the reader, Protobuf by the message indexes of the registered descriptor or
.proto text, JSON by the subject's ids); not found, they are dead letters that say so, and the
registry is not asked again for that id (counted on a registry double that counts requests)."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from headrace.operators import jvm
from headrace.operators.avro import AvroDecoding, avro_record_schema
from headrace.operators.protobuf import load_proto_schema
from headrace.schemas.protoc import descriptor_set
from headrace.schemas.types import FieldType

from tests.jobfiles import ROOT
from tests.jvmdecode import decode_in_jvm
from tests.reference import confluent_avro

pytestmark = pytest.mark.flink
READER: dict[str, Any] = {"type": "record", "name": "Probe", "fields": [
    {"name": "id", "type": "string"}, {"name": "ts", "type": "long"},
    {"name": "n", "type": "long", "default": -1}]}
WRITER: dict[str, Any] = {"type": "record", "name": "Probe", "fields": [
    {"name": "id", "type": "string"}, {"name": "ts", "type": "long"}, {"name": "n", "type": "int"},
    {"name": "gone", "type": "string"}]}
FIELDS = [("id", FieldType.STRING), ("ts", FieldType.INTEGER), ("n", FieldType.INTEGER)]


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    import fastavro

    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def avro_call(subject: str, url: str) -> str:
    decoding = AvroDecoding(schema=avro_record_schema(READER, Path("probe.avsc")), wire="confluent",
                            subject=subject, writers={}, registry={"url": url, "refresh_ms": 3_600_000})
    return decoding.call(tuple(FIELDS), "ts", 10**15, "forever")


def test_avro_ids_registered_after_compilation_are_looked_up(registry: str, unique: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    subject = f"{unique}-value"
    client = SchemaRegistryClient({"url": registry})
    writer_id = client.register_schema(subject, Schema(json.dumps(WRITER), "AVRO"))
    records = [{"id": f"r{i}", "ts": 1_000 + i, "n": i - 50, "gone": "x"} for i in range(100)]
    payloads = [framed(writer_id, WRITER, r) for r in records] + [framed(999_999, WRITER, records[0])] * 3
    got = decode_in_jvm(avro_call(subject, registry), FIELDS, payloads)
    for payload, (_, error, event_ms, *values) in zip(payloads[:100], got, strict=False):
        want = confluent_avro(payload, lambda i: WRITER if i == writer_id else None, READER)
        assert error is None and want is not None
        assert values == [want["id"], want["ts"], want["n"]] and event_ms == want["ts"]
    for _, error, *_ in got[100:]:
        assert error == (f"unknown schema id 999999 (subject '{subject}' has ids [{writer_id}]; looked up in the "
                         f"schema registry at {registry}: not a version of the subject)")


class _Counting(http.server.ThreadingHTTPServer):
    requests: list[str]
    versions: dict[int, dict[str, Any]]


@pytest.fixture()
def counting_registry() -> Iterator[_Counting]:
    """A registry double: the subject 'probe-value' with the versions the test gives it; every
    request is counted."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            server: _Counting = self.server  # type: ignore[assignment]
            server.requests.append(self.path)
            base = "/subjects/probe-value/versions"
            if self.path == base:
                body: Any = sorted(server.versions)
            elif self.path.startswith(base + "/") and int(self.path.rsplit("/", 1)[1]) in server.versions:
                body = server.versions[int(self.path.rsplit("/", 1)[1])]
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = _Counting(("127.0.0.1", 0), Handler)
    server.requests, server.versions = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_an_unknown_id_is_looked_up_once_however_many_records_name_it(counting_registry: _Counting) -> None:
    counting_registry.versions[1] = {"id": 7, "schema": json.dumps(WRITER)}
    url = f"http://127.0.0.1:{counting_registry.server_address[1]}"
    record = {"id": "a", "ts": 5, "n": 1, "gone": ""}
    payloads = [framed(7, WRITER, record), framed(9, WRITER, record)] * 500
    got = decode_in_jvm(avro_call("probe-value", url), FIELDS, payloads)
    assert all(row[1] is None for row in got[::2]) and all(row[1] is not None for row in got[1::2])
    assert got[1][1].endswith("looked up in the schema registry at " + url + ": not a version of the subject)")
    # id 7: the versions and version 1; id 9: the versions again (version 1 is known); nothing more
    assert counting_registry.requests == ["/subjects/probe-value/versions", "/subjects/probe-value/versions/1",
                                          "/subjects/probe-value/versions"]


def test_a_registry_that_does_not_answer_makes_dead_letters_that_say_so() -> None:
    record = {"id": "a", "ts": 5, "n": 1, "gone": ""}
    got = decode_in_jvm(avro_call("probe-value", "http://127.0.0.1:9"), FIELDS, [framed(7, WRITER, record)] * 50)
    assert {row[1].split(" (")[0] for row in got} == {"unknown schema id 7"}
    assert "the schema registry at http://127.0.0.1:9 did not answer" in got[0][1]
    assert "asked again 30 s later" in got[0][1]


PROTO = ROOT / "schemas" / "click.proto"


def test_protobuf_and_json_ids_registered_after_compilation_are_looked_up(
        registry: str, unique: str, click_pb2: Any) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from google.protobuf import descriptor_pb2

    client = SchemaRegistryClient({"url": registry})
    subject = f"{unique}-value"
    client.set_compatibility(subject, "NONE")
    file = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(PROTO)).file[-1]
    as_descriptor = client.register_schema(subject, Schema(base64.b64encode(file.SerializeToString()).decode(),
                                                           "PROTOBUF"))
    # the Java serializer's way: the .proto text, here with the message second in its file
    text = PROTO.read_text().replace("message Click {", "message Before { int32 x = 1; }\nmessage Click {", 1)
    as_text = client.register_schema(subject, Schema(text, "PROTOBUF"))
    schema = load_proto_schema(PROTO, "headrace.examples.Click")
    decoding = schema.decoding(type("F", (), {"wire": "confluent", "subject": subject, "max_record_bytes": None})(),
                               "t")
    from dataclasses import replace

    decoding = replace(decoding, registry={"url": registry, "refresh_ms": 3_600_000})
    fields = [("tenant_id", FieldType.STRING), ("ts", FieldType.INTEGER)]
    body = click_pb2.Click(tenant_id="t1", user_id="u", page="/", ts=42, latency_ms=1).SerializeToString()
    payloads = [b"\x00" + as_descriptor.to_bytes(4, "big") + b"\x00" + body,
                b"\x00" + as_text.to_bytes(4, "big") + b"\x02\x02" + body,  # indexes [1]
                b"\x00" + as_text.to_bytes(4, "big") + b"\x00" + body]      # [0]: Before, not Click
    got = decode_in_jvm(decoding.call(tuple(fields), "ts", 10**15, "forever"), fields, payloads)
    assert got[0][1] is None and got[0][3:] == ("t1", 42)
    assert got[1][1] is None and got[1][3:] == ("t1", 42)
    assert got[2][1] is not None and "name another message than headrace.examples.Click" in got[2][1]

    json_subject = f"{unique}-json"
    document = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
    json_id = client.register_schema(json_subject, Schema(json.dumps(document), "JSON"))
    spec = {"schema": document, "event_time": "ts", "max_future_ms": 10**15, "max_future": "forever",
            "fields": [["tenant_id", "string"], ["ts", "integer"]], "wire": "confluent", "subject": json_subject,
            "ids": [], "registry": {"url": registry, "refresh_ms": 3_600_000}}
    good = json.dumps({"tenant_id": "t", "user_id": "u", "page": "/", "ts": 7, "latency_ms": 1}).encode()
    from headrace.connectors.sqltext import literal

    got = decode_in_jvm(f"hr_decode(`_payload`, {literal(json.dumps(spec))})", [("tenant_id", FieldType.STRING),
                        ("ts", FieldType.INTEGER)], [b"\x00" + json_id.to_bytes(4, "big") + good,
                                                     b"\x00" + (json_id + 1000).to_bytes(4, "big") + good],
                        function=jvm.VALIDATE_CLASS)
    assert got[0][1] is None and got[0][3:] == ("t", 7)
    assert got[1][1].startswith(f"unknown schema id {json_id + 1000} (subject '{json_subject}' has ids [{json_id}]")
