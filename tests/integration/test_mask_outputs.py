"""A job that masks personal data, on real services: every output it writes (the dead-letter and
late topics, the PostgreSQL table, the Redis hashes, the InfluxDB points) is searched for the clear
values, and the view is grouped by exactly the reference's keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from headrace.jobs.sample import SampleEvent, click_events

from tests.integration.clirun import CliRun
from tests.integration.test_failures import PARTITIONS, fault_job, final_offsets, run_args
from tests.kafkautil import produce_placed
from tests.services import Broker, InfluxServer, Postgres, RedisServer

pytestmark = pytest.mark.integration
KEY = "integration-mask-key-42"


def raw_topic(broker: Broker, topic: str) -> bytes:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"scan-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out, empty = [], 0
    while empty < 3:
        batch = [m for m in consumer.consume(num_messages=5000, timeout=1.0) if m.error() is None]
        empty = 0 if batch else empty + 1
        out += [(m.key() or b"") + b" " + (m.value() or b"") for m in batch]
    consumer.close()
    return b"\n".join(out)


def test_no_store_or_topic_holds_a_clear_value(
        tmp_path: Path, broker: Broker, pg: Postgres, redis_server: RedisServer, influx_server: InfluxServer,
        profiles_file: Path, unique: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{influx_server.url}/query?q=CREATE+DATABASE+{unique}",
                                                  method="POST"), timeout=10).read()
    job = fault_job(tmp_path, unique)
    job.write_text(job.read_text()
                   .replace("  - validate: {}",
                            "  - validate: {}\n  - mask: {fields: {user_id: hash, email: email_domain}}")
                   .replace("group_by: [tenant_id, page]", "group_by: [tenant_id, user_id]")
                   .replace(f"  - postgres: {{table: {unique}_1m}}",
                            f"  - postgres: {{table: {unique}_1m}}\n  - redis: {{view: {unique}}}\n"
                            f"  - influx: {{measurement: {unique}}}"))
    profiles_file.write_text(profiles_file.read_text().replace(
        "    state:", f"    redis: {{port: {redis_server.port}}}\n"
                     f"    influx: {{url: \"{influx_server.url}\", mode: v1, database: {unique}}}\n    state:"))
    events = []
    for i, event in enumerate(click_events(6_000, seed=33)):
        if event.kind != "invalid":
            record = json.loads(event.payload)
            record["user_id"], record["email"] = f"secretuser{i % 50}", f"hidden{i}@corp.example"
            if i % 500 == 0:
                record["latency_ms"] = -1  # a dead letter that holds the values
            event = SampleEvent(key=event.key, payload=json.dumps(record).encode(), timestamp_ms=event.timestamp_ms,
                                kind=event.kind)
        events.append(event)
    events.append(SampleEvent(key=b"tenant-0", payload=b"secretuserZ hiddenZ@corp.example", timestamp_ms=0,
                              kind="invalid"))
    broker.create_topic(unique, partitions=PARTITIONS)
    produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)), env={"HEADRACE_MASK_KEY": KEY})
    assert run.finish() == 0, run.output[-3000:]

    found: dict[str, bytes] = {}
    found["dead letters"] = raw_topic(broker, f"{unique}.dlq")
    found["late"] = raw_topic(broker, f"{unique}.late")
    with psycopg.connect(**pg.conninfo()) as conn:
        rows = conn.execute(f'SELECT * FROM "{unique}_1m"').fetchall()
    found["postgres"] = repr(rows).encode()
    client: Any = redis_server.client()
    found["redis"] = b"\n".join(k + b" " + repr(client.hgetall(k)).encode()
                                for k in client.scan_iter(match=f"{unique}:*"))
    found["influx"] = json.dumps(influx_server.query(unique, f'SELECT * FROM "{unique}"')).encode()
    assert all(found.values()), {k: len(v) for k, v in found.items()}
    for where, text in found.items():
        assert b"secretuser" not in text and b"hidden" not in text, where
    # the view's ids are the keyed hashes of the clear ones, as an independent HMAC computes them
    hashed = {hmac.new(KEY.encode(), f"secretuser{n}".encode(), hashlib.sha256).hexdigest() for n in range(50)}
    assert {row[1] for row in rows} <= hashed and len({row[1] for row in rows}) == 50
    assert b"@corp.example" in found["dead letters"] and b"masked_payload" in found["dead letters"]
