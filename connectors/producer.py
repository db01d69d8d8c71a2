"""``headrace produce``: records onto a topic, keyed by tenant, where a Java producer would put them.

A record's key is its tenant (``kafka.tenants.key_field``, default ``tenant_id``), and its partition
is Kafka's default for a keyed record: ``murmur2(key) & 0x7fffffff % partitions`` (the Java
client's ``BuiltInPartitioner``; librdkafka's ``murmur2_random`` is the same function). So every
record of a tenant lands on one partition and keeps its order there, and Headrace's producer,
a Java producer and Kafka Streams agree on where a tenant lives.

A tenant that is too big for one partition is named in the profile with the number of partitions
to spread it over (``kafka.tenants.heavy: {tenant-0: 4}``): its records go to the K partitions
that follow its own one (``(murmur2(tenant) + murmur2(sub_key) % K) % partitions``, the
``sub_key`` field, default ``user_id``), still keyed by the tenant. The price is order: the
tenant's records keep their order per sub-key (a user's clicks stay in order), not across the
tenant. Headrace judges lateness per partition and windows by event time, so its views stay exact;
a consumer that needs the tenant's total order cannot have it for a spread tenant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from headrace.schemas.errors import ServiceError
from headrace.schemas.kafka import KafkaConnection, TenantSpread


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed 0x9747b28c), as a signed 32-bit int like Java's."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Placement:
    """Where each record goes: its key, and its partition."""

    spread: TenantSpread
    partitions: int

    def place(self, record: dict[str, Any] | None) -> tuple[bytes | None, int | None]:
        """``(key, partition)``; a record that is not a JSON object, or has no tenant, goes keyless
        to a partition of librdkafka's choosing (``None``)."""
        tenant = record.get(self.spread.key_field) if isinstance(record, dict) else None
        if tenant is None:
            return None, None
        key = str(tenant).encode()
        home = partition_for(key, self.partitions)
        spread = self.spread.heavy.get(str(tenant))
        if not spread:
            return key, home
        sub = str(record.get(self.spread.sub_key) if isinstance(record, dict) else "").encode()
        return key, (home + (murmur2(sub) & 0x7FFFFFFF) % spread) % self.partitions


@dataclass
class Produced:
    records: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def produce(kconn: KafkaConnection, topic: str, items: Iterable[tuple[dict[str, Any] | None, bytes, int | None]],
            *, rate: float | None = None, on_progress: Callable[[int], None] | None = None) -> Produced:
    """Produce ``(record, payload, timestamp_ms)`` items (``record``: the parsed JSON, for the key)
    to ``topic``; at most ``rate`` records/s when given. Waits for every delivery."""
    from confluent_kafka import KafkaException, Producer
    from headrace.connectors.kafka import check_reachable

    partitions = check_reachable(kconn).get(topic)
    if partitions is None:
        raise ServiceError(f"topic '{topic}' does not exist on {kconn.bootstrap_servers}",
                           hint="create it with the partitions you want (or pass --partitions N to create it)")
    placement = Placement(kconn.tenants or TenantSpread(), partitions)
    result = Produced(per_partition={p: 0 for p in range(partitions)})

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            result.failures.append(str(error))
        else:
            result.per_partition[message.partition()] += 1

    producer = Producer({**kconn.librdkafka_config(), "partitioner": "murmur2_random", "linger.ms": 20,
                         "enable.idempotence": True, "queue.buffering.max.messages": 500_000, "log_level": 0})
    started = time.monotonic()
    for i, (record, payload, ts) in enumerate(items):
        key, partition = placement.place(record)
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if ts is not None and 0 <= ts < 2**62:
            extra["timestamp"] = ts
        while True:
            try:
                producer.produce(topic, payload, key=key, on_delivery=delivered, **extra)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
            except KafkaException as exc:
                raise ServiceError(f"cannot produce to '{topic}': {exc.args[0].str()}") from None
        result.records += 1
        if rate:
            ahead = result.records / rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(ahead)
        if i % 1000 == 0:
            producer.poll(0)
            if on_progress:
                on_progress(result.records)
    left = producer.flush(60)
    result.seconds = time.monotonic() - started
    if on_progress:
        on_progress(result.records)
    if left:
        raise ServiceError(f"{left:,} records were not delivered to '{topic}' within 60 s",
                           hint="is the broker answering? nothing was lost that was reported delivered")
    if result.failures:
        raise ServiceError(f"{len(result.failures):,} records were refused by the broker: {result.failures[0]}")
    return result


def json_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any] | None, bytes]]:
    """``(line number, its JSON object or None, the line)`` for each non-empty line (a line that is
    not a JSON object is produced as it is: the job dead-letters it, as from any producer)."""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if line:
            yield number, json_object(line), line


def json_object(payload: bytes) -> dict[str, Any] | None:
    """The JSON object ``payload`` holds (for its key), or None."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
