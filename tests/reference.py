"""An independent plain-Python computation of the example job's results.

It validates with the pure-Python ``jsonschema`` library (the job uses ``jsonschema-rs``) and
aggregates with ordinary dicts, so agreement between the two is evidence, not an echo.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema


def is_valid(payload: bytes, schema: dict[str, Any]) -> bool:
    """Whether ``payload`` is JSON valid against ``schema``. A test asks this of the same records
    several times (each check of the outcome computes it again), so the answers are kept: with a
    validator built per record, the roll-up kill -9 test's five checks of 30,000 records took its
    process about 25 CPU-s beside the job it checks (5 CPU-s each; now 5 the first time, 1.3-1.5 after)."""
    return _is_valid(payload, json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _validator(schema: str) -> Any:
    return jsonschema.Draft202012Validator(json.loads(schema))


@functools.lru_cache(maxsize=200_000)
def _is_valid(payload: bytes, schema: str) -> bool:
    try:
        record = json.loads(payload)
    except ValueError:
        return False
    return bool(_validator(schema).is_valid(record))


def genuinely_late(events: Iterable[Any], schema: dict[str, Any], behind_ms: int) -> Counter[bytes]:
    """Payloads of valid events at or behind (max event time produced before them - behind_ms).

    A per-partition watermark never exceeds that bound, so a record the job calls late must be
    in this set; the job may call fewer late (a watermark is emitted periodically, not per record).
    """
    late: Counter[bytes] = Counter()
    max_ts = 0
    for e in events:
        if is_valid(e.payload, schema):
            if e.timestamp_ms <= max_ts - behind_ms:
                late[e.payload] += 1
            max_ts = max(max_ts, e.timestamp_ms)
    return late


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def tumbling_page_activity(records: Iterable[dict[str, Any]], size_ms: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """{(tenant, page, window_start, window_end): (events, total_bytes, avg_ms, min_ms, max_ms)}."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        start = r["ts"] - r["ts"] % size_ms
        groups[(r["tenant_id"], r["page"], utc(start), utc(start + size_ms))].append(r)
    out = {}
    for key, rs in groups.items():
        lat = [r["latency_ms"] for r in rs]
        byts = [r["bytes"] for r in rs if r.get("bytes") is not None]  # SUM skips NULL
        out[key] = (len(rs), sum(byts) if byts else None, sum(lat) / len(lat), min(lat), max(lat))
    return out


MIN_EVENT_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z


@dataclass
class Expected:
    """What the example job must produce, record by record."""

    dead: Counter[bytes] = field(default_factory=Counter)  # refused by validate
    unstorable: Counter[bytes] = field(default_factory=Counter)  # refused at the sink boundary
    late: Counter[bytes] = field(default_factory=Counter)
    on_time: list[dict[str, Any]] = field(default_factory=list)
    #: (partition, offset) of each on-time record, in the same order
    on_time_at: list[tuple[Any, int]] = field(default_factory=list)
    #: (partition, offset) of each record in dead / unstorable / late
    dead_at: set[tuple[Any, int]] = field(default_factory=set)
    unstorable_at: set[tuple[Any, int]] = field(default_factory=set)
    late_at: set[tuple[Any, int]] = field(default_factory=set)

    def views(self, size_ms: int = 60_000) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        return tumbling_page_activity(self.on_time, size_ms)

    @property
    def total(self) -> int:
        return sum(self.dead.values()) + sum(self.unstorable.values()) + sum(self.late.values()) + len(self.on_time)


def expected_outcome(records: Iterable[tuple[Any, bytes]], schema: dict[str, Any], *, out_of_orderness_ms: int,
                     lateness_ms: int, max_future_ms: int = 86_400_000, keys: tuple[str, ...] = ("tenant_id", "page"),
                     now_ms: int | None = None, decode: Callable[[bytes], dict[str, Any] | None] | None = None,
                     event_time: Callable[[bytes], int | None] | None = None) -> Expected:
    """The example job's outcome for ``(partition, payload)`` pairs, each partition in offset order.

    A valid record is late when its event time is at or behind the largest event time read
    from its partition so far (itself included) minus ``out_of_orderness_ms`` minus 1 ms minus
    ``lateness_ms``. Every record whose top-level ``ts`` is an integer in range counts towards
    that largest time, valid or not (as towards the source's watermark); an event time outside
    [0001-01-01, now + max_future] makes a record invalid; a group key holding NUL cannot be
    stored by PostgreSQL.

    ``decode`` (for binary formats) turns a payload into its record, or None when it cannot be
    decoded: such a record is dead and has no event time, unless ``event_time`` gives one (JSON in
    a framing, whose invalid records still have the event time the source's watermark follows).
    """
    import time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = Expected()
    largest: dict[Any, int] = {}
    offsets: Counter[Any] = Counter()
    for partition, payload in records:
        at = (partition, offsets[partition])
        offsets[partition] += 1
        decoded = decode(payload) if decode is not None else None
        if event_time is not None:
            ts = event_time(payload)
        else:
            ts = json_event_ms(payload) if decode is None else (decoded or {}).get("ts")
        if ts is not None and MIN_EVENT_MS <= ts <= now_ms + max_future_ms:
            largest[partition] = max(largest.get(partition, ts), ts)
        if (decoded is None) if decode is not None else not is_valid(payload, schema):
            out.dead[payload] += 1
            out.dead_at.add(at)
            continue
        record = decoded if decoded is not None else json.loads(payload)
        ts = record["ts"]
        if ts < MIN_EVENT_MS or ts > now_ms + max_future_ms:
            out.dead[payload] += 1
            out.dead_at.add(at)
            continue
        if ts <= largest[partition] - out_of_orderness_ms - 1 - lateness_ms:
            out.late[payload] += 1
            out.late_at.add(at)
        elif any("\x00" in str(record[k]) for k in keys):
            out.unstorable[payload] += 1
            out.unstorable_at.add(at)
        else:
            out.on_time.append(record)
            out.on_time_at.append(at)
    return out


def json_event_ms(payload: bytes, field_name: str = "ts") -> int | None:
    """The integer (or integral number) at the top-level event-time field, if the record has one."""
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    value = record.get(field_name) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (value.is_integer() and abs(value) < 9.0e15):
        return None
    return int(value)


def drop_replays(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dead letters or late records with repeats (the same ``id``) dropped, as a reader would."""
    seen: set[Any] = set()
    kept = []
    for r in records:
        if r.get("id") is None or r["id"] not in seen:
            seen.add(r.get("id"))
            kept.append(r)
    return kept


def _plain_timestamps(schema: Any) -> Any:
    """An Avro schema with its timestamp logical types dropped: fastavro then gives epoch numbers
    (as the job reads them) instead of datetimes, which cannot hold years past 9999."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            return schema["type"]
        return {k: _plain_timestamps(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_plain_timestamps(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=64)
def _parsed(schema: str) -> Any:
    import fastavro

    return fastavro.parse_schema(_plain_timestamps(json.loads(schema)))


def confluent_avro(payload: bytes, writer_of: Callable[[int], Any], reader: Any) -> dict[str, Any] | None:
    """fastavro's reading of a Confluent-framed Avro record (the magic byte 0, a 4-byte schema
    id, the data) with the writer schema ``writer_of(id)`` names (None: unknown) as ``reader``;
    None where it cannot decode the record to its last byte."""
    import io

    import fastavro

    if len(payload) < 5 or payload[0] != 0:
        return None
    writer = writer_of(int.from_bytes(payload[1:5], "big"))
    if writer is None:
        return None
    body = io.BytesIO(payload[5:])
    try:
        record = fastavro.schemaless_reader(body, _parsed(json.dumps(writer)), _parsed(json.dumps(reader)))
    except Exception:
        return None
    return record if body.tell() == len(payload) - 5 and isinstance(record, dict) else None
