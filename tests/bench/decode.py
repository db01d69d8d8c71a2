"""Benchmark: the decoding step's per-record cost for each source format, in the JVM engine the
example jobs use, one thread (so: per core), without Flink around it.

    .venv/bin/python -m tests.bench.decode [--seconds 5] [--records 20000]

Each format decodes the same click events (~200 bytes as JSON, fewer as Avro or Protobuf), with
the spec its compiled job gives ``hr_validate`` (JSON) or ``hr_decode`` (Avro, Protobuf; the Confluent wire format, the
writer schemas from ``headrace registry serve``): all valid, then all invalid (each format's own
kind of broken record: a wrong type, truncated data, a bad varint, an unknown schema id). The
clock is ``System.nanoTime`` around the loop after 2 s of warm-up; CPU time is the thread's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
console = Console(width=120)
JOBS = {"json": ROOT / "jobs" / "page_activity.yaml", "avro": ROOT / "jobs" / "page_activity_avro.yaml",
        "protobuf": ROOT / "jobs" / "page_activity_proto.yaml"}


def spec_of(compiled: Any) -> tuple[str, str]:
    """(function, spec) of the decoding a compiled job's source does (``headrace-source``)."""
    decoding = compiled.plan.decoder.source_decoding(compiled.wiring)
    return {"ValidateJson": "validate", "DecodeBinary": "decode"}[decoding.function.rsplit(".", 1)[1]], decoding.spec


def compiled_spec(kind: str, registry: str, workdir: Path) -> tuple[str, str]:
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile

    job = workdir / JOBS[kind].name
    job.write_text(JOBS[kind].read_text().replace("schemas/", f"{ROOT}/schemas/"))
    profiles = workdir / "profiles.yaml"
    profiles.write_text("profiles:\n  bench:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        f"    postgres: {{port: 9, database: postgres, user: postgres}}\n"
                        f"    registry: {{url: '{registry}'}}\n")
    compiled = compile_job(build_plan(parse_job(job)), load_profile("bench", profiles))
    return spec_of(compiled)


def payloads(kind: str, registry: str, n: int) -> tuple[list[bytes], list[bytes]]:
    """(valid, invalid) records of ``kind``, the Confluent wire format for Avro and Protobuf."""
    import jsonschema_rs
    from headrace.jobs.sample import click_events

    check = jsonschema_rs.validator_for(json.loads((ROOT / "schemas" / "click.schema.json").read_text()))
    events = []
    for e in click_events(n * 2, seed=3):
        try:
            record = json.loads(e.payload)
        except ValueError:
            continue
        if not (isinstance(record, dict) and check.is_valid(record)):
            continue
        # ~200 bytes of JSON each: a longer page and user, bytes and email present
        record.update(page=record["page"] + "/products/garden/item-12345?ref=newsletter",
                      user_id=record["user_id"] + "-0123456789", bytes=len(e.payload),
                      email=f"{record['user_id']}@example.com")
        if check.is_valid(record) and "\x00" not in json.dumps(record):
            events.append(record)
    events = events[:n]
    if kind == "json":
        valid = [json.dumps(e).encode() for e in events]
        invalid = [json.dumps({**e, "latency_ms": "slow"}).encode() for e in events]
        return valid, invalid
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext("clicks-" + ("avro" if kind == "avro" else "proto"), MessageField.VALUE)
    if kind == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        serialize = AvroSerializer(client, (ROOT / "schemas" / "click.avsc").read_text())
        valid = [serialize({**e, "bytes": e.get("bytes"), "email": e.get("email")}, context) for e in events]
        invalid = [v[:-3] for v in valid]  # truncated
        return valid, invalid
    pb2 = click_pb2()
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    serialize = ProtobufSerializer(pb2.Click, client, {"use.deprecated.format": False})
    valid = [serialize(pb2.Click(**{k: v for k, v in e.items() if k in ("tenant_id", "user_id", "page", "ts",
                                                                         "latency_ms", "bytes", "email")}), context)
             for e in events]
    invalid = [v[:7] + b"\xff" * 11 + v[18:] for v in valid]  # a varint that never ends
    return valid, invalid


def click_pb2() -> Any:
    import importlib

    out = Path(tempfile.mkdtemp(prefix="headrace-bench-pb2-"))
    from headrace.schemas.protoc import run_protoc

    run_protoc(ROOT / "schemas" / "click.proto", f"--python_out={out}")
    sys.path.insert(0, str(out))
    return importlib.import_module("click_pb2")


def compile_bench(workdir: Path) -> str:
    from headrace.operators import jvm

    jar = jvm.build()
    classes = workdir / "classes"
    lib = f"{jvm._flink_lib() / '*'}:{jar}"
    done = subprocess.run([shutil.which("javac") or "javac", "-nowarn", "-d", str(classes), "-cp", lib,
                           str(ROOT / "tests" / "bench" / "java" / "dev" / "headrace" / "functions"
                               / "DecodeBench.java")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return f"{classes}:{lib}"


def measure(classpath: str, function: str, spec: str, records: list[bytes], seconds: float,
            workdir: Path) -> dict[str, float]:
    (workdir / "spec.json").write_text(spec)
    with (workdir / "payloads.bin").open("wb") as out:
        for r in records:
            out.write(struct.pack(">i", len(r)) + r)
    done = subprocess.run(["java", "-Xmx1g", "-cp", classpath, "dev.headrace.functions.DecodeBench", function,
                           str(workdir / "spec.json"), str(workdir / "payloads.bin"), str(seconds)],
                          capture_output=True, text=True, check=True)
    n, elapsed, dead, cpu = done.stdout.split()
    return {"per_s": int(n) / float(elapsed), "per_cpu_s": int(n) / float(cpu), "dead": int(dead) / int(n)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    from tests.services import _wait_port, free_port

    workdir = Path(tempfile.mkdtemp(prefix="headrace-bench-decode-"))
    port = free_port()
    registry = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port", str(port),
                               "--store", str(workdir / "registry.sqlite")], cwd=ROOT)
    rows = []
    try:
        _wait_port(port, server, "headrace registry serve")  # type: ignore[arg-type]
        classpath = compile_bench(workdir)
        for kind in JOBS:
            valid, invalid = payloads(kind, registry, args.records)  # registers the writer schemas first
            function, spec = compiled_spec(kind, registry, workdir)
            size = sum(map(len, valid)) / len(valid)
            console.print(f"{kind}: {len(valid):,} records of {size:.0f} bytes on average, hr_{function} …")
            good = measure(classpath, function, spec, valid, args.seconds, workdir)
            bad = measure(classpath, function, spec, invalid, args.seconds, workdir)
            assert good["dead"] == 0 and bad["dead"] == 1, (kind, good, bad)
            rows.append((kind, size, good, bad))
    finally:
        server.terminate()
        server.wait(10)
    table = Table(title="decode + validate, one thread (records/s per core; the aim is ≥ 500,000 valid)",
                  title_justify="left")
    for column in ("format", "bytes/record", "valid/s", "valid ns", "invalid/s", "invalid ns", "× JSON (valid)"):
        table.add_column(column, justify="left" if column == "format" else "right")
    json_rate = rows[0][2]["per_cpu_s"]
    for kind, size, good, bad in rows:
        table.add_row(kind, f"{size:.0f}", f"{good['per_cpu_s']:,.0f}", f"{1e9 / good['per_cpu_s']:,.0f}",
                      f"{bad['per_cpu_s']:,.0f}", f"{1e9 / bad['per_cpu_s']:,.0f}",
                      f"{good['per_cpu_s'] / json_rate:.2f}")
    console.print(table)
    out = ROOT / ".headrace" / "bench" / "decode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{"format": k, "bytes": s, "valid": g, "invalid": b} for k, s, g, b in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
