"""``headrace schema check | publish | list | show | diff`` and ``headrace validate --profile``
against ``headrace registry serve``, with Confluent's ``SchemaRegistryClient`` (a client nobody
here wrote) registering versions beside the CLI and reading back what the CLI published."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from headrace.schemas.protoc import descriptor_set

from tests.jobfiles import ROOT

pytestmark = pytest.mark.integration
AVSC = json.loads((ROOT / "schemas" / "click.avsc").read_text())
AVRO_JOB = ROOT / "jobs" / "page_activity_avro.yaml"
PROTO_JOB = ROOT / "jobs" / "page_activity_proto.yaml"


def headrace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "headrace.jobs.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def job_on(tmp_path: Path, job: Path, subject: str) -> Path:
    """The example job reading ``subject`` (schema paths made absolute)."""
    text = job.read_text().replace("schemas/", f"{ROOT}/schemas/")
    text = text.replace("wire: confluent}", f"wire: confluent, subject: {subject}}}")
    path = tmp_path / job.name
    path.write_text(text)
    return path


def test_publish_check_diff_list_show_an_avro_subject(tmp_path: Path, registry: str, unique: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    subject = f"{unique}-value"
    job = job_on(tmp_path, AVRO_JOB, subject)
    client = SchemaRegistryClient({"url": registry})
    v1 = {**AVSC, "fields": [f for f in AVSC["fields"] if f["name"] not in ("bytes", "email")]}
    v1_id = client.register_schema(subject, Schema(json.dumps(v1), "AVRO"))  # an older producer's version

    checked = headrace("schema", "check", str(job), "--registry", registry)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"can be v2 of {subject} (BACKWARD, compared with {subject} v1-v1)" in checked.stdout
    diff = headrace("schema", "diff", str(job), "--registry", registry)
    assert diff.stdout.splitlines()[1:] == ["  + bytes: null | long (default null)",
                                            "  + email: null | string (default null)"], diff.stdout
    published = headrace("schema", "publish", str(job), "--registry", registry)
    assert published.returncode == 0, published.stdout + published.stderr
    latest = client.get_latest_version(subject)
    assert latest.version == 2 and json.loads(latest.schema.schema_str) == AVSC
    assert f"as {subject} v2 (id {latest.schema_id}, BACKWARD)" in published.stdout
    assert "already" in headrace("schema", "publish", str(job), "--registry", registry).stdout

    # v3 adds a field without a default: check names it and fails, publish refuses it
    v3 = tmp_path / "click.avsc"
    v3.write_text(json.dumps({**AVSC, "fields": [*AVSC["fields"], {"name": "plan", "type": "string"}]}))
    broken = headrace("schema", "check", str(v3), "--subject", subject, "--registry", registry)
    assert broken.returncode == 1
    assert broken.stdout.strip() == (f"{v3} v3: field 'plan' added without a default — breaks BACKWARD "
                                     "(readers of v3 cannot read v2 records)")
    refused = headrace("schema", "publish", str(v3), "--subject", subject, "--registry", registry)
    assert refused.returncode == 1 and "not published: 1 breaking change(s) for BACKWARD" in refused.stdout
    assert client.get_latest_version(subject).version == 2
    # under BACKWARD_TRANSITIVE a reader of v2's fields only, with bytes required, cannot read v1
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    strict = tmp_path / "strict.avsc"
    strict.write_text(json.dumps({**AVSC, "fields": [*AVSC["fields"][:5], {"name": "bytes", "type": "long"}]}))
    transitive = headrace("schema", "check", str(strict), "--subject", subject, "--registry", registry)
    assert transitive.returncode == 1
    assert transitive.stdout.splitlines() == [
        f"{strict} v3: type null at bytes can no longer be read (not in the reader's long) — breaks "
        "BACKWARD_TRANSITIVE (readers of v3 cannot read v2 records)",
        f"{strict} v3: field 'bytes' added without a default — breaks BACKWARD_TRANSITIVE (readers of v3 cannot "
        "read v1 records)"], transitive.stdout
    # against an earlier copy in the working tree, no registry: v2 readers skip v3's new field (FORWARD)
    kept = headrace("schema", "check", str(v3), "--subject", subject, "--against",
                    str(ROOT / "schemas" / "click.avsc"), "--mode", "forward")
    assert kept.returncode == 0 and "(FORWARD, compared with" in kept.stdout

    listed = headrace("schema", "list", "--registry", registry)
    row = next(line for line in listed.stdout.splitlines() if subject in line)
    assert "│ 2 " in row and "AVRO" in row and "BACKWARD_TRANSITIVE" in row, listed.stdout
    shown = headrace("schema", "show", subject, "--version", "1", "--registry", registry)
    assert shown.stdout.startswith(f"# {subject} v1 (id {v1_id}, AVRO)")
    assert json.loads(shown.stdout.split("\n", 1)[1]) == v1


def test_protobuf_and_json_subjects_follow_their_own_rules(tmp_path: Path, registry: str, unique: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry})
    subject = f"{unique}-value"
    # the Python serializer registers a descriptor in base64; the check reads it as the .proto text
    proto = ROOT / "schemas" / "click.proto"
    from google.protobuf import descriptor_pb2

    registered = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(proto)).file[-1]
    client.register_schema(subject, Schema(base64.b64encode(registered.SerializeToString()).decode(), "PROTOBUF"))
    job = job_on(tmp_path, PROTO_JOB, subject)
    same = headrace("schema", "check", str(job), "--registry", registry)
    assert same.returncode == 0 and f"can be v2 of {subject}" in same.stdout, same.stdout + same.stderr
    renumbered = tmp_path / "click.proto"
    renumbered.write_text(proto.read_text().replace("int64 ts = 4;", "int64 ts = 14;")
                          .replace("int64 latency_ms = 5;", "double latency_ms = 5;"))
    broken = headrace("schema", "check", str(renumbered), "--subject", subject, "--registry", registry)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert [line.split(": ", 1)[1].split(" — ")[0] for line in broken.stdout.splitlines()] == [
        "field 'Click.ts' number changed from 4 to 14",
        "field 'Click.latency_ms' (5) changed type from int64 to double (wire type varint to 64-bit)"]
    assert "~ headrace.examples.Click.latency_ms: int64 = 5 → double = 5" in headrace(
        "schema", "diff", str(renumbered), "--subject", subject, "--registry", registry).stdout

    json_subject = f"{unique}-json"
    schema = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
    client.register_schema(json_subject, Schema(json.dumps(schema), "JSON"))
    client.set_compatibility(json_subject, "FULL")
    narrowed = tmp_path / "click.schema.json"
    narrowed.write_text(json.dumps({**schema, "required": [*schema["required"], "bytes"]}))
    out = headrace("schema", "check", str(narrowed), "--subject", json_subject, "--registry", registry)
    assert out.returncode == 1
    assert out.stdout.strip() == (f"{narrowed} v2: property 'bytes' added as required — breaks FULL (readers of v2 "
                                  "cannot read v1 records)")
    refused = headrace("schema", "publish", str(narrowed), "--subject", json_subject, "--registry", registry)
    assert refused.returncode == 1
    with pytest.raises(Exception, match="added as required"):  # the registry itself refuses it too
        client.register_schema(json_subject, Schema(narrowed.read_text(), "JSON"))


def test_validate_checks_the_job_reads_every_registered_version(
        tmp_path: Path, registry: str, unique: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry})
    subject = f"{unique}-value"
    job = job_on(tmp_path, AVRO_JOB, subject)
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  reg:\n    kafka: {{bootstrap_servers: '127.0.0.1:1'}}\n"
                        f"    registry: {{url: '{registry}'}}\n")
    client.set_compatibility(subject, "NONE")
    client.register_schema(subject, Schema(json.dumps(AVSC), "AVRO"))
    ok = headrace("validate", str(job), "--profile", "reg", "--profiles", str(profiles))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a producer's version the job cannot read: its 'ts' is a string
    odd = {**AVSC, "fields": [{**f, "type": "string"} if f["name"] == "ts" else f for f in AVSC["fields"]]}
    odd_id = client.register_schema(subject, Schema(json.dumps(odd), "AVRO"))
    bad = headrace("validate", str(job), "--profile", "reg", "--profiles", str(profiles))
    assert bad.returncode == 1
    assert bad.stdout.strip() == (f"error: click.avsc cannot read {subject} v2 (id {odd_id}): type at ts changed "
                                  "from string to long")


def test_user_errors_are_one_line(tmp_path: Path, registry: str) -> None:
    no_subject = headrace("schema", "check", str(ROOT / "schemas" / "click.avsc"), "--registry", registry)
    assert no_subject.returncode == 2
    assert no_subject.stderr.strip().splitlines() == [
        f"error: {ROOT / 'schemas' / 'click.avsc'}: which subject is it a version of?; add --subject (e.g. "
        "--subject clicks-value), or name the job spec instead"]
    down = headrace("schema", "list", "--registry", "http://127.0.0.1:9")
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "cannot reach the schema registry at http://127.0.0.1:9" in down.stderr
    garbage = tmp_path / "bad.avsc"
    garbage.write_text("{not json")
    bad = headrace("schema", "check", str(garbage), "--subject", "x", "--against", str(garbage))
    assert bad.returncode == 2 and "not a schema (invalid AVRO schema" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_registry_keeps_its_versions_in_the_profiles_postgresql(
        tmp_path: Path, pg: Any, profiles_file: Path, unique: str) -> None:
    """Under a service profile two servers share one registry in PostgreSQL: what one registers the
    other serves, a restarted server still has it, and a database outage is a clear 500, then over."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    from tests.services import _wait_port, free_port

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port", str(port),
                                 "--profile", "test", "--profiles", str(profiles_file)], cwd=ROOT)
        _wait_port(port, proc, "headrace registry serve --profile test")
        return proc, f"http://127.0.0.1:{port}"

    subject = f"{unique}-value"
    first, a = start()
    second, b = start()
    try:
        v1 = {**AVSC, "fields": AVSC["fields"][:5]}
        id1 = SchemaRegistryClient({"url": a}).register_schema(subject, Schema(json.dumps(v1), "AVRO"))
        id2 = SchemaRegistryClient({"url": b}).register_schema(subject, Schema(json.dumps(AVSC), "AVRO"))
        assert id2 != id1 and SchemaRegistryClient({"url": a}).get_latest_version(subject).schema_id == id2
        refused = headrace("schema", "publish", str(tmp_path / "x.avsc"), "--subject", subject, "--registry", a)
        assert refused.returncode == 2  # no such file: one line
        breaking = tmp_path / "breaking.avsc"
        breaking.write_text(json.dumps({**AVSC, "fields": [*AVSC["fields"], {"name": "plan", "type": "string"}]}))
        with pytest.raises(Exception, match="added without a default"):
            SchemaRegistryClient({"url": b}).register_schema(subject, Schema(breaking.read_text(), "AVRO"))
        pg.shut_down()
        try:
            import urllib.error
            import urllib.request

            with pytest.raises(urllib.error.HTTPError) as outage:
                urllib.request.urlopen(f"{a}/subjects/{subject}/versions", timeout=10)
            body = json.loads(outage.value.read())
            assert outage.value.code == 500 and body["error_code"] == 50001
            assert body["message"].startswith("the registry's store (PostgreSQL) does not answer")
        finally:
            pg.start_again()
        assert SchemaRegistryClient({"url": a}).get_versions(subject) == [1, 2]  # reconnected
    finally:
        first.terminate()
        first.wait(10)
    third, c = start()
    try:
        assert SchemaRegistryClient({"url": c}).get_schema(id1).schema_str == json.dumps(v1, separators=(",", ":"))
    finally:
        second.terminate()
        third.terminate()
        second.wait(10)
        third.wait(10)


def test_protobuf_imports_are_registered_as_references_and_checked_with_them(
        tmp_path: Path, registry: str, unique: str) -> None:
    """Confluent's ProtobufSerializer registers a message's imported file as its own subject and
    refers to it; the registry keeps the reference, serves it, and checks a new version with the
    imported file in place (its field types resolve)."""
    import importlib

    from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from headrace.schemas.protoc import run_protoc

    pkg = f"p{unique}"
    (tmp_path / f"{pkg}_addr.proto").write_text(
        f'syntax = "proto3";\npackage {pkg};\nmessage Address {{ string city = 1; }}\n')
    order = f'syntax = "proto3";\npackage {pkg};\nimport "{pkg}_addr.proto";\n' \
            "message Order { string id = 1; Address home = 2; }\n"
    (tmp_path / f"{pkg}_order.proto").write_text(order)
    run_protoc(tmp_path / f"{pkg}_order.proto", f"--python_out={tmp_path}")
    run_protoc(tmp_path / f"{pkg}_addr.proto", f"--python_out={tmp_path}")
    sys.path.insert(0, str(tmp_path))
    try:
        order_pb2 = importlib.import_module(f"{pkg}_order_pb2")
    finally:
        sys.path.remove(str(tmp_path))
    client = SchemaRegistryClient({"url": registry})
    subject = f"{unique}-value"
    serialize = ProtobufSerializer(order_pb2.Order, client, {"use.deprecated.format": False})
    framed = serialize(order_pb2.Order(id="o1", home={"city": "Oslo"}),
                       SerializationContext(unique, MessageField.VALUE))
    assert framed[:1] == b"\x00"
    latest = client.get_latest_version(subject)
    assert [r.name for r in latest.schema.references] == [f"{pkg}_addr.proto"]
    # v2 as .proto text with the same reference: the Address field renumbered breaks BACKWARD
    moved = Schema(order.replace("Address home = 2;", "Address home = 3;"), "PROTOBUF",
                   references=[SchemaReference(f"{pkg}_addr.proto", latest.schema.references[0].subject, 1)])
    assert not client.test_compatibility(subject, moved)
    added = Schema(order.replace("Address home = 2;", "Address home = 2; Address work = 4;"), "PROTOBUF",
                   references=moved.references)
    assert client.test_compatibility(subject, added)
    assert client.register_schema(subject, added) != latest.schema_id
