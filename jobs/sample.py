"""Sample click events for the example job, with the mess real streams have.

Deterministic for a seed: most events are valid and slightly out of order (less than the
job's ``max_out_of_orderness``); a few are invalid (not JSON, missing or mistyped fields); a few,
after the first 40% of the stream, are hours behind and therefore late.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SampleEvent:
    key: bytes
    payload: bytes
    timestamp_ms: int
    kind: str  # "valid" | "invalid" | "late"


def _invalid(rng: random.Random, good: dict[str, object]) -> bytes:
    choice = rng.randrange(6)
    bad = dict(good)
    if choice == 0:
        return b'{"tenant_id": "t1", "page": '  # truncated JSON
    if choice == 1:
        del bad["page"]
    elif choice == 2:
        bad["latency_ms"] = "slow"
    elif choice == 3:
        bad["latency_ms"] = -5
    elif choice == 4:
        bad["page"] = "no-leading-slash"
    else:
        bad["unexpected"] = True
    return json.dumps(bad).encode()


#: the domains of the sample's e-mail addresses (with ``emails=True``)
EMAIL_DOMAINS = ("example.com", "mail.example", "corp.example")


def click_events(count: int, *, seed: int = 7, start_ms: int = START_MS, step_ms: int = 20,
                 tenants: int = 4, pages: int = 6, users: int = 300, max_jitter_ms: int = 4000,
                 invalid_rate: float = 0.01, late_rate: float = 0.002, emails: bool = False) -> Iterator[SampleEvent]:
    rng = random.Random(seed)
    page_names = ["/", "/pricing", "/docs", "/blog", "/signup", "/checkout", "/account", "/search"][:pages]
    for i in range(count):
        base = start_ms + i * step_ms
        tenant = f"tenant-{rng.randrange(tenants)}"
        ts = base - rng.randrange(max_jitter_ms)
        kind = "valid"
        roll = rng.random()
        if roll < invalid_rate:
            kind = "invalid"
        elif roll < invalid_rate + late_rate and i > count * 2 // 5:
            kind = "late"
            ts = base - 2 * 3_600_000 - rng.randrange(600_000)
        event: dict[str, object] = {
            "tenant_id": tenant,
            "user_id": f"u{rng.randrange(users)}",
            "page": rng.choice(page_names),
            "ts": ts,
            "latency_ms": int(rng.expovariate(1 / 120)),
        }
        if rng.random() < 0.8:
            event["bytes"] = rng.randrange(200, 50_000)
        if emails:  # the user's address (no draw of the generator: the other fields stay as they were)
            event["email"] = f"{event['user_id']}@{EMAIL_DOMAINS[int(str(event['user_id'])[1:]) % 3]}"
        payload = _invalid(rng, event) if kind == "invalid" else json.dumps(event).encode()
        yield SampleEvent(key=tenant.encode(), payload=payload, timestamp_ms=ts, kind=kind)


def write_jsonl(path: Path, events: Iterator[SampleEvent]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as out:
        for event in events:
            out.write(event.payload + b"\n")
            n += 1
    return n


def encoder_for(plan: object, schema_id: int | None) -> Callable[[dict[str, object]], bytes]:
    """Record -> the bytes a producer of the job's source format writes (with the Confluent framing
    and ``schema_id`` when the source's wire is ``confluent``); raises ValueError or TypeError for a
    record the format cannot hold (a missing or mistyped field)."""
    fmt = plan.spec.source.format  # type: ignore[attr-defined]
    schema = plan.schema  # type: ignore[attr-defined]
    encode = fmt.format.encoder(schema)
    header = fmt.format.framing(schema, schema_id) if fmt.wire == "confluent" and schema_id is not None else b""
    return lambda record: header + encode(record)


def write_encoded(path: Path, events: Iterator[SampleEvent], encode: Callable[[dict[str, object]], bytes]) -> int:
    """The events as base64 lines (the embedded profile's binary topics), each encoded; an event
    that is not JSON or that the format cannot hold is written as a record with a wrong magic
    byte, so that the job dead-letters it."""
    import base64

    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("wb") as out:
        for event in events:
            out.write(base64.b64encode(encoded_sample(event.payload, encode)) + b"\n")
            n += 1
    return n


def encoded_sample(payload: bytes, encode: Callable[[dict[str, object]], bytes]) -> bytes:
    """A sample event in a binary format; one that is not a JSON object or that the format cannot
    hold becomes a record with a wrong magic byte, so that the job dead-letters it."""
    try:
        record = json.loads(payload)
        return encode(record) if isinstance(record, dict) else b"\x07" + payload
    except (ValueError, TypeError, AttributeError):
        return b"\x07" + payload
