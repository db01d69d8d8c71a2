"""``headrace produce`` against the real broker: tenants keyed where Java's partitioner puts them,
a heavy tenant spread over K partitions, and the example job exact on such a topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from headrace.connectors.producer import partition_for

from tests.integration.clirun import CliRun
from tests.integration.test_failures import assert_exact, fault_job
from tests.kafkautil import offsets_arg
from tests.services import Broker, Postgres

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4

JAVA_PARTITIONS = """
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
public class Partitions {
  public static void main(String[] args) {
    int n = Integer.parseInt(args[0]);
    for (int i = 1; i < args.length; i++)
      System.out.println(args[i] + " " + BuiltInPartitioner.partitionForKey(args[i].getBytes(), n));
  }
}
"""


def java_partitions(tmp_path: Path, keys: list[str], partitions: int) -> dict[str, int]:
    """What Kafka's Java producer picks for each key (its own code, from the connector jars)."""
    import pyflink
    from headrace.connectors import jars

    source = tmp_path / "Partitions.java"
    source.write_text(JAVA_PARTITIONS)
    classpath = [str(p) for p in jars.required_jars({"kafka"}) if "kafka-clients" in p.name]
    classpath += [str(p) for p in (Path(pyflink.__file__).parent / "lib").glob("*.jar")]
    done = subprocess.run(["java", "-cp", ":".join(classpath), str(source), str(partitions), *keys],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {line.split()[0]: int(line.split()[1]) for line in done.stdout.splitlines()}


def read_placed(bootstrap: str, topic: str, ends: dict[int, int]) -> list[tuple[int, bytes, bytes | None]]:
    """Every record of the topic as ``(partition, payload, key)``, in offset order per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: dict[int, list[tuple[int, bytes, bytes | None]]] = defaultdict(list)
    try:
        while sum(len(v) for v in got.values()) < sum(ends.values()):
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                if msg.error() is None:
                    got[msg.partition()].append((msg.offset(), msg.value(), msg.key()))
    finally:
        consumer.close()
    return [(p, value, key) for p in sorted(got) for _, value, key in sorted(got[p])]


def test_tenants_land_where_java_puts_them_a_heavy_one_is_spread_and_the_job_stays_exact(
        tmp_path: Path, broker: Broker, pg: Postgres, profiles_file: Path, unique: str) -> None:
    profiles_file.write_text(profiles_file.read_text().replace(
        f'    kafka: {{bootstrap_servers: "{broker.bootstrap}"}}\n',
        f'    kafka:\n      bootstrap_servers: "{broker.bootstrap}"\n'
        "      tenants: {key_field: tenant_id, heavy: {tenant-0: 3}, sub_key: user_id}\n"))
    produce = CliRun("produce", unique, "--generate", "40000", "--seed", "23", "--partitions", str(PARTITIONS),
                     "--profile", "test", "--profiles", str(profiles_file))
    assert produce.finish() == 0, produce.output[-2000:]
    assert produce.line_matching("40,000 records to"), produce.output

    ends = {p: 0 for p in range(PARTITIONS)}
    for line in produce.lines:  # the summary table: "│ 2 │ 9,876 │"
        cells = [c.strip().replace(",", "") for c in line.split("│") if c.strip()]
        if len(cells) == 2 and all(c.isdigit() for c in cells):
            ends[int(cells[0])] = int(cells[1])
    assert sum(ends.values()) == 40_000, produce.output
    placed = read_placed(broker.bootstrap, unique, ends)

    tenants = [f"tenant-{i}" for i in range(4)]
    java = java_partitions(tmp_path, tenants, PARTITIONS)
    assert java == {t: partition_for(t.encode(), PARTITIONS) for t in tenants}
    where: dict[str, set[int]] = defaultdict(set)
    user_at: dict[str, set[int]] = defaultdict(set)
    for partition, payload, key in placed:
        try:
            record = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(record, dict) or "tenant_id" not in record:
            continue
        assert key == str(record["tenant_id"]).encode()
        where[str(record["tenant_id"])].add(partition)
        if record["tenant_id"] == "tenant-0":
            user_at[str(record.get("user_id"))].add(partition)
    for tenant in tenants[1:]:
        assert where[tenant] == {java[tenant]}, (tenant, where[tenant], java[tenant])
    home = java["tenant-0"]
    assert where["tenant-0"] == {(home + i) % PARTITIONS for i in range(3)}
    assert all(len(p) == 1 for p in user_at.values())  # a user's clicks stay on one partition, in order

    job = fault_job(tmp_path, unique)
    run = CliRun("run", str(job), "--profile", "test", "--profiles", str(profiles_file),
                 "--stop-at-offsets", offsets_arg(ends), "--limit", "1")
    assert run.finish() == 0, run.output[-3000:]
    assert_exact(broker, pg, unique, [(p, payload) for p, payload, _ in placed])


def test_produce_from_a_file_refuses_what_the_format_cannot_hold(tmp_path: Path, broker: Broker,
                                                                 profiles_file: Path, unique: str) -> None:
    source = tmp_path / "records.jsonl"
    source.write_text('{"tenant_id": "t1", "page": "/", "user_id": "u1", "ts": 1, "bytes": 1, "latency_ms": 1}\n'
                      '{"tenant_id": "t1", "page": 7}\n')
    avro_job = (ROOT / "jobs" / "page_activity_avro.yaml").read_text().replace(
        "schemas/", str(ROOT / "schemas") + "/").replace(", wire: confluent", "")
    job = tmp_path / "avro.yaml"
    job.write_text(avro_job)
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "produce", unique, "--from", str(source),
                           "--job", str(job), "--partitions", "1", "--quiet", "--profile", "test",
                           "--profiles", str(profiles_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert output.startswith(f"error: {source}:2: record 2 cannot be written as avro"), output
    assert len(output.splitlines()) <= 2
