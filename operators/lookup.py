"""Lookups for the ``enrich`` step, in cache levels, batched: plain Python, no Flink.

A :class:`Lookup` answers a batch of keys with the looked-up fields of each (or ``None`` for a
key the store does not have), asking each level only for what the level above did not answer:

- **L1** :class:`LocalCache`: in the worker process, a bounded LRU with a TTL, which also
  remembers misses (for ``miss_ttl``), so an unknown key does not reach the stores on every record.
  Optionally kept in a rocksdict database, written through, so that a rerun or a restarted
  worker starts warm (even after ``kill -9``).
- **L2** :class:`RedisLevel`: a Redis hash per key, read with one pipelined call per batch;
  the keys L3 answers are written back (with a TTL). A cache that does not answer is skipped
  (counted), never waited for: the data is in L3.
- **L3** the store that holds the data: :class:`PostgresSource` (one ``= ANY(%s)`` query per
  batch), :class:`RedisSource` (hashes under a prefix), or :class:`FileSource` (a CSV or JSON-lines
  file read once; the embedded profile's choice). A store that does not answer is retried with
  bounded exponential backoff; then the lookup raises, the job fails and restarts from its
  checkpoint: a record is never emitted unenriched because a store was down.

>>> source = FileSource.from_rows("id", {"a": {"country": "NO"}}, ("country",))
>>> lookup = Lookup(LocalCache(size=10, ttl_ms=60_000, miss_ttl_ms=60_000), None, source)
>>> lookup.get(["a", "b", "a"])
[{'country': 'NO'}, None, {'country': 'NO'}]
>>> lookup.stats.l1_hits, lookup.stats.l3_hits, lookup.stats.misses
(1, 1, 1)
"""

from __future__ import annotations

import csv
import json
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from headrace.connectors.retry import with_backoff

Row = dict[str, Any]
_MISS = object()


@dataclass
class LookupStats:
    """What a lookup did: answers per level, misses, and batch latency."""

    keys: int = 0
    l1_hits: int = 0
    l2_hits: int = 0
    l3_hits: int = 0
    misses: int = 0
    l2_errors: int = 0
    batches: int = 0
    batch_ms: list[float] = field(default_factory=list)  # a sample: the last 1,000 batches
    #: entries L1 started with (from its persisted database), and how its first batch went
    l1_loaded: int = 0
    first_batch_keys: int = 0
    first_batch_l1_hits: int = 0
    #: the JVM engine: keys the Kafka consumer read ahead (EnrichPrefetch.java), and records whose
    #: lookup then still had to wait for a batch on the task thread
    read_ahead: int = 0
    waited: int = 0

    def timed(self, started: float) -> None:
        self.batches += 1
        self.batch_ms.append((time.perf_counter() - started) * 1000)
        if len(self.batch_ms) > 1000:
            del self.batch_ms[:-1000]

    def merged(self, other: LookupStats) -> LookupStats:
        return LookupStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LookupStats:
        return cls(**json.loads(text))


class LocalCache:
    """L1: a bounded LRU of key → fields (or a remembered miss), each entry with an expiry.

    With ``persist`` (a path prefix), the cache is also kept in a rocksdict (RocksDB) database,
    written through: every entry L1 takes is written as it is taken and every entry it evicts is
    deleted, so what a worker has cached is on disk however the worker ends (``kill -9`` included;
    RocksDB's write-ahead log is written before ``put`` returns). Each worker of the step opens the
    first database ``<persist>.<n>`` that no other live worker holds (RocksDB locks it while open;
    the lock dies with its process), so a rerun's or a restarted worker's L1 starts with what the
    previous worker in that slot had, whatever its process id.
    """

    def __init__(self, *, size: int, ttl_ms: int, miss_ttl_ms: int, persist: Path | None = None) -> None:
        self.size, self.ttl, self.miss_ttl = size, ttl_ms / 1000, miss_ttl_ms / 1000
        self.entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self.db: Any = None
        self.loaded = 0
        if persist is not None:
            self.db = _open_free_slot(persist)
            self._load()

    def get(self, key: str, now: float) -> Any:
        """The fields, ``None`` for a remembered miss, or ``_MISS`` when L1 does not know."""
        entry = self.entries.get(key)
        if entry is None:
            return _MISS
        if entry[0] < now:
            del self.entries[key]
            return _MISS
        self.entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: Row | None, now: float) -> None:
        expires = now + (self.ttl if value is not None else self.miss_ttl)
        self.entries[key] = (expires, value)
        self.entries.move_to_end(key)
        if self.db is not None:  # wall-clock expiry: it survives a restart
            self.db[key] = json.dumps([time.time() + expires - now, value])
        while len(self.entries) > self.size:
            evicted, _ = self.entries.popitem(last=False)
            if self.db is not None:
                del self.db[evicted]

    def _load(self) -> None:
        now, mono = time.time(), time.monotonic()
        live: list[tuple[float, str, Any]] = []
        expired: list[tuple[float, str, Any]] = []
        for key, value in self.db.items():
            expires, fields = json.loads(value)
            (live if expires > now else expired).append((expires, str(key), fields))
        live.sort()  # the longest-lived last: they are the most recently taken
        for expires, key, fields in live[-self.size:]:
            self.entries[key] = (mono + expires - now, fields)
        for _, key, _ in expired + live[:-self.size]:
            del self.db[key]
        self.loaded = len(self.entries)

    def save(self) -> None:
        """Close the database (every entry is already in it)."""
        if self.db is not None:
            self.db.close()
            self.db = None


def _open_free_slot(prefix: Path, slots: int = 256) -> Any:
    """The first rocksdict database ``<prefix>.<n>`` that no live process holds open."""
    from rocksdict import Rdict

    prefix.parent.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        try:
            return Rdict(f"{prefix}.{slot}")
        except Exception as exc:  # rocksdict raises a plain Exception for RocksDB's lock
            if "lock" not in str(exc).lower():
                raise
    raise RuntimeError(f"all {slots} L1 databases under {prefix}.* are held by live workers")


class Source(Protocol):
    """L3: the store that holds the looked-up fields."""

    def fetch(self, keys: Sequence[str]) -> dict[str, Row]:
        """The rows of the keys it has (one round trip)."""

    def close(self) -> None: ...


class RedisLevel:
    """L2: fields of a key as the hash ``<prefix><key>``, with a TTL on write-back."""

    def __init__(self, client: Any, prefix: str, ttl_ms: int, fields: Sequence[str]) -> None:
        self.client, self.prefix, self.ttl_ms, self.fields = client, prefix, ttl_ms, tuple(fields)

    def fetch(self, keys: Sequence[str]) -> dict[str, Row]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.prefix + key)
        found = {}
        for key, values in zip(keys, pipe.execute(), strict=True):
            if values:
                found[key] = {f: _decode(values.get(f.encode())) for f in self.fields}
        return found

    def store(self, rows: dict[str, Row]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, row in rows.items():
            mapping = {f: json.dumps(v) for f, v in row.items()}
            pipe.hset(self.prefix + key, mapping=mapping)
            if self.ttl_ms:
                pipe.pexpire(self.prefix + key, self.ttl_ms)
        pipe.execute()


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class PostgresSource:
    """Rows of a table (``key_column`` = the key) or of a query taking the batch's keys as
    ``%(keys)s`` (a text array) and returning the key column first, then the fields.

    A table's key is compared in its own type, so its index serves the lookup: text keys as they
    are, integer keys as ``bigint`` (a key that is not an integer cannot match, and is not sent).
    """

    def __init__(self, conninfo: dict[str, Any], fields: Sequence[str], *, table: str | None = None,
                 key_column: str | None = None, query: str | None = None, retry_for_ms: int = 30_000) -> None:
        self.conninfo, self.fields, self.retry_for_ms = conninfo, tuple(fields), retry_for_ms
        self.table, self.key_column, self.query = table, key_column, query
        self.statement: Any = query
        self.integer_key = False
        self.conn: Any = None
        self.where = f"PostgreSQL at {conninfo.get('host')}:{conninfo.get('port')}"

    def _prepare(self) -> None:
        """The statement for a table, once its key column's type is known."""
        from psycopg import sql

        assert self.table is not None and self.key_column is not None
        row = self.conn.execute(
            "SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped",
            (".".join(f'"{part}"' for part in self.table.split(".")), self.key_column)).fetchone()
        if row is None:
            raise ValueError(f"table {self.table} has no column {self.key_column}")
        self.integer_key = row[0] in ("int2", "int4", "int8")
        keys = sql.SQL("%(keys)s::bigint[]" if self.integer_key else "%(keys)s::text[]")
        key = sql.Identifier(self.key_column)
        as_is = self.integer_key or row[0] in ("text", "varchar", "bpchar")
        compared = key if as_is else sql.SQL("{}::text").format(key)
        self.statement = sql.SQL("SELECT {key}::text, {fields} FROM {table} WHERE {compared} = ANY({keys})").format(
            key=key, fields=sql.SQL(", ").join(map(sql.Identifier, self.fields)),
            table=sql.Identifier(*self.table.split(".")), compared=compared, keys=keys)

    def fetch(self, keys: Sequence[str]) -> dict[str, Row]:
        import psycopg

        def attempt() -> dict[str, Row]:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(**self.conninfo, autocommit=True)
                if self.statement is None:
                    self._prepare()
                asked = [k for k in keys if _is_bigint(k)] if self.integer_key else list(keys)
                rows = self.conn.execute(self.statement, {"keys": asked}).fetchall()
            except psycopg.OperationalError:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                raise
            return {str(r[0]): dict(zip(self.fields, r[1:], strict=True)) for r in rows}

        return with_backoff(attempt, retry_for_ms=self.retry_for_ms, what=self.where,
                            transient=(psycopg.OperationalError,))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _is_bigint(text: str) -> bool:
    """Whether a key is an integer PostgreSQL's bigint holds, written as ``bigint::text`` writes it."""
    body = text[1:] if text.startswith("-") else text
    return body.isascii() and body.isdigit() and (body == "0" or not body.startswith("0")) \
        and -(2**63) <= int(text) < 2**63


class RedisSource:
    """Rows as hashes ``<prefix><key>`` in Redis (the data's own store, no TTL)."""

    def __init__(self, client: Any, prefix: str, fields: Sequence[str], retry_for_ms: int = 30_000,
                 where: str = "Redis") -> None:
        self.level = RedisLevel(client, prefix, 0, fields)
        self.client, self.retry_for_ms, self.where = client, retry_for_ms, where

    def fetch(self, keys: Sequence[str]) -> dict[str, Row]:
        import redis

        def attempt() -> dict[str, Row]:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self.level.prefix + key)
            return {k: {f: _text(v.get(f.encode())) for f in self.level.fields}
                    for k, v in zip(keys, pipe.execute(), strict=True) if v}

        return with_backoff(attempt, retry_for_ms=self.retry_for_ms, what=self.where,
                            transient=(redis.ConnectionError, redis.TimeoutError))

    def close(self) -> None:
        self.client.close()


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


class FileSource:
    """A CSV file (with a header row) or JSON lines, read once into memory."""

    def __init__(self, rows: dict[str, Row]) -> None:
        self.rows = rows

    @classmethod
    def from_rows(cls, key: str, rows: dict[str, Row], fields: Sequence[str]) -> FileSource:
        return cls({k: {f: v.get(f) for f in fields} for k, v in rows.items()})

    @classmethod
    def read(cls, path: Path, key: str, fields: Sequence[str]) -> FileSource:
        rows: dict[str, Row] = {}
        with path.open(encoding="utf-8", newline="") as handle:
            records: Any = csv.DictReader(handle) if path.suffix == ".csv" else (
                json.loads(line) for line in handle if line.strip())
            for record in records:
                if record.get(key) is not None:
                    rows[str(record[key])] = {f: (record.get(f) if record.get(f) != "" or path.suffix != ".csv"
                                                  else None) for f in fields}
        return cls(rows)

    def fetch(self, keys: Sequence[str]) -> dict[str, Row]:
        return {k: self.rows[k] for k in keys if k in self.rows}

    def close(self) -> None:
        pass


class Lookup:
    """L1, then L2 (if any), then L3, for a batch of keys; see the module's text."""

    def __init__(self, l1: LocalCache, l2: RedisLevel | None, l3: Source) -> None:
        self.l1, self.l2, self.l3 = l1, l2, l3
        self.stats = LookupStats()
        #: one stats file per lookup: several subtasks can share one worker process
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def get(self, keys: Sequence[str | None]) -> list[Row | None]:
        """The fields of each key (``None``: no store has it), in order; counts which level
        answered each record (a key asked again in the same batch is answered from memory: L1)."""
        started = time.perf_counter()
        now = time.monotonic()
        answers: dict[str, Row | None] = {}
        wanted: list[str] = []
        for key in keys:
            if key is None or key in answers:
                continue
            value = self.l1.get(key, now)
            answers[key] = None if value is _MISS else value
            if value is _MISS:
                wanted.append(key)
        found: dict[str, Row] = {}
        from_l3: dict[str, Row] = {}
        if wanted:
            if self.l2 is not None:
                try:
                    found = self.l2.fetch(wanted)
                except Exception:  # a cache that does not answer is skipped: L3 has the data
                    self.stats.l2_errors += 1
            rest = [k for k in wanted if k not in found]
            from_l3 = self.l3.fetch(rest) if rest else {}
            if self.l2 is not None and from_l3:
                try:
                    self.l2.store(from_l3)  # write-back: the next worker asking finds it in L2
                except Exception:
                    self.stats.l2_errors += 1
            for key in wanted:
                answers[key] = found.get(key) or from_l3.get(key)
                self.l1.put(key, answers[key], now)
        if self.stats.batches == 0:  # how warm L1 started: distinct keys it answered itself
            self.stats.l1_loaded = self.l1.loaded
            self.stats.first_batch_keys = len(answers)
            self.stats.first_batch_l1_hits = len(answers) - len(wanted)
        first = set(wanted)
        for key in keys:
            if key is None:
                continue
            self.stats.keys += 1
            if key in first:
                first.discard(key)
                if key in found:
                    self.stats.l2_hits += 1
                elif key in from_l3:
                    self.stats.l3_hits += 1
                else:
                    self.stats.misses += 1
            else:
                self.stats.l1_hits += 1
        self.stats.timed(started)
        return [answers.get(k) if k is not None else None for k in keys]

    def save_stats(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{name}.{self.instance}.json"
        partial = target.with_suffix(".part")
        partial.write_text(self.stats.to_json())
        partial.replace(target)

    def close(self) -> None:
        self.l1.save()
        self.l3.close()
