"""Producing and reading back topics in tests (Kafka-standard clients, no broker specifics)."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from headrace.jobs.sample import SampleEvent

#: settings every client of these helpers takes (the SASL login of a test whose broker wants one)
CLIENT_CONF: dict[str, str] = {}


def produce(bootstrap: str, topic: str, events: Iterable[SampleEvent], partitions: int) -> dict[int, int]:
    """Produce events (keyed, with their event time as record timestamp); returns end offsets."""
    producer = Producer({**CLIENT_CONF, "bootstrap.servers": bootstrap, "linger.ms": 20,
                         "partitioner": "murmur2_random", "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000})
    ends = {p: 0 for p in range(partitions)}
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)

    for i, event in enumerate(events):
        producer.produce(topic, event.payload, key=event.key, timestamp=event.timestamp_ms,
                         on_delivery=delivered)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    assert not failures, failures[:3]
    return ends


def read_all(bootstrap: str, topic: str, expected: int, partitions: int = 1,
             timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every JSON record from the start of every partition (assign, no group join) to its end.

    Reads until it holds at least ``expected`` records *and* has reached the end offset each
    partition has at that moment, so records beyond ``expected`` (a replayed dead letter, a
    duplicate) are read too, however slowly the broker hands them out. Stopping at a count and
    then waiting a fixed second for extras cut the tail off a topic with replays on a busy machine."""
    consumer = Consumer({**CLIENT_CONF, "bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    assigned = [TopicPartition(topic, p, 0) for p in range(partitions)]
    consumer.assign(assigned)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is None:
                    records.append(json.loads(msg.value()))
            if len(records) >= expected and _at_end(consumer, assigned):
                break
    finally:
        consumer.close()
    return records


def _at_end(consumer: Consumer, assigned: list[TopicPartition]) -> bool:
    """Whether the consumer's position is at each partition's end offset, asked of the broker now."""
    positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
    for tp in assigned:
        _, end = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        if end > 0 and positions.get(tp.partition, -1) < end:
            return False
    return True


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.adler32(key) % partitions  # crc32 sends every tenant-N to one of two partitions


def produce_placed(bootstrap: str, topic: str, events: Iterable[SampleEvent], partitions: int,
                   ends: dict[int, int] | None = None) -> list[tuple[int, bytes]]:
    """Produce events to the partition their key picks (adler32), in order: returns ``(partition,
    payload)`` in produce order, which is offset order within each partition. ``ends`` (if given)
    is advanced to each partition's next offset."""
    producer = Producer({**CLIENT_CONF, "bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000, "message.max.bytes": 4_000_000,
                         "max.in.flight.requests.per.connection": 1})  # offsets in produce order
    placed: list[tuple[int, bytes]] = []
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for i, event in enumerate(events):
        partition = partition_of(event.key, partitions)
        producer.produce(topic, event.payload, key=event.key, partition=partition,
                         timestamp=max(event.timestamp_ms, 0) if event.timestamp_ms < 2**62 else 0,
                         on_delivery=delivered)
        placed.append((partition, event.payload))
        if ends is not None:
            ends[partition] = ends.get(partition, 0) + 1
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    assert not failures, failures[:3]
    return placed


def offsets_arg(ends: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))


def raw_topic(broker: Any, topic: str, timeout_s: float = 60) -> bytes:
    """Every record of partition 0 of ``topic`` as ``key value`` lines (keys may be empty), read to
    the partition's end offset as the broker has it now (as :func:`read_all`: three empty polls in a
    row could end the read early on a slow broker, and made every read wait three seconds)."""
    consumer = Consumer({**CLIENT_CONF, "bootstrap.servers": broker.bootstrap, "group.id": f"scan-{topic}",
                         "enable.auto.commit": False})
    assigned = [TopicPartition(topic, 0, 0)]
    consumer.assign(assigned)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not _at_end(consumer, assigned):
            batch = [m for m in consumer.consume(num_messages=5000, timeout=0.5) if m.error() is None]
            out += [(m.key() or b"") + b" " + (m.value() or b"") for m in batch]
    finally:
        consumer.close()
    return b"\n".join(out)
