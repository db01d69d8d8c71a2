"""An independent plain-Python computation of the example job's results.

It validates with the pure-Python ``jsonschema`` library (the job uses ``jsonschema-rs``) and
aggregates with ordinary dicts, so agreement between the two is evidence, not an echo.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import jsonschema


def is_valid(payload: bytes, schema: dict[str, Any]) -> bool:
    try:
        record = json.loads(payload)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(record)


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
        byts = [r["bytes"] for r in rs if "bytes" in r]
        out[key] = (len(rs), sum(byts) if byts else None, sum(lat) / len(lat), min(lat), max(lat))
    return out
