"""The enrich step's lookup levels in plain Python (stores faked here; tests/integration/test_enrich_stores.py
and test_enrich_persist.py use real PostgreSQL and Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from headrace.operators.enrich import convert
from headrace.operators.lookup import FileSource, LocalCache, Lookup, LookupStats, RedisLevel
from headrace.schemas.types import FieldType


class CountingSource:
    """A store that counts its round trips and can be made to fail."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows, self.calls, self.asked, self.fail = rows, 0, [], False

    def fetch(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.fail:
            raise RuntimeError("PostgreSQL at db:5432 did not answer for 30s: OperationalError: down")
        self.calls += 1
        self.asked.append(list(keys))
        return {k: self.rows[k] for k in keys if k in self.rows}

    def close(self) -> None:
        pass


class FakeRedis:
    """Enough of redis-py's pipeline for RedisLevel; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.down = False
        self.round_trips = 0

    def pipeline(self, transaction: bool = False) -> Any:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.ops = redis, []

    def hgetall(self, key: str) -> None:
        self.ops.append(("get", key))

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.ops.append(("set", key, mapping))

    def pexpire(self, key: str, ms: int) -> None:
        pass

    def execute(self) -> list[Any]:
        if self.redis.down:
            raise ConnectionError("redis down")
        self.redis.round_trips += 1
        out = []
        for op in self.ops:
            if op[0] == "get":
                out.append(self.redis.hashes.get(op[1], {}))
            else:
                self.redis.hashes[op[1]] = {k.encode(): v.encode() for k, v in op[2].items()}
                out.append(1)
        return out


def lookup(source: CountingSource, l2: RedisLevel | None = None, **cache: Any) -> Lookup:
    options = {"size": 100, "ttl_ms": 60_000, "miss_ttl_ms": 60_000, **cache}
    return Lookup(LocalCache(**options), l2, source)


def test_one_round_trip_per_batch_and_each_key_once() -> None:
    source = CountingSource({"a": {"c": "NO"}, "b": {"c": "SE"}})
    got = lookup(source).get(["a", "b", "a", None, "x", "x"])
    assert got == [{"c": "NO"}, {"c": "SE"}, {"c": "NO"}, None, None, None]
    assert source.calls == 1 and sorted(source.asked[0]) == ["a", "b", "x"]


def test_l1_remembers_hits_and_misses_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("headrace.operators.lookup.time.monotonic", lambda: now[0])
    source = CountingSource({"a": {"c": "NO"}})
    lk = lookup(source, ttl_ms=10_000, miss_ttl_ms=2_000)
    lk.get(["a", "x"])
    lk.get(["a", "x"])
    assert source.calls == 1 and lk.stats.l1_hits == 2 and lk.stats.l3_hits == 1 and lk.stats.misses == 1
    now[0] += 3  # the miss expired, the hit not
    lk.get(["a", "x"])
    assert source.asked[-1] == ["x"]
    now[0] += 10
    lk.get(["a"])
    assert source.asked[-1] == ["a"]


def test_l1_is_bounded_least_recently_used_first() -> None:
    source = CountingSource({k: {"c": k} for k in "abcd"})
    lk = lookup(source, size=2)
    lk.get(["a", "b"])
    lk.get(["a"])  # b is now the least recently used
    lk.get(["c"])
    lk.get(["a", "b"])
    assert source.asked[-1] == ["b"]


def test_l2_answers_before_l3_and_l3_hits_are_written_back() -> None:
    redis = FakeRedis()
    l2 = RedisLevel(redis, "u:", 3_600_000, ["c"])
    source = CountingSource({"a": {"c": "NO"}, "b": {"c": "SE"}})
    first = lookup(source, l2)
    first.get(["a", "b", "z"])
    assert set(redis.hashes) == {"u:a", "u:b"}  # written back; a miss is not
    second = lookup(source, l2)  # another worker, its L1 empty
    assert second.get(["a", "b", "z"]) == [{"c": "NO"}, {"c": "SE"}, None]
    assert second.stats.l2_hits == 2 and second.stats.l3_hits == 0 and source.asked[-1] == ["z"]
    assert redis.round_trips == 3  # per batch: one read, one write-back (none when L3 found nothing)


def test_a_cache_that_does_not_answer_is_skipped_a_store_that_does_not_is_an_error() -> None:
    redis = FakeRedis()
    redis.down = True
    source = CountingSource({"a": {"c": "NO"}})
    lk = lookup(source, RedisLevel(redis, "u:", 0, ["c"]))
    assert lk.get(["a"]) == [{"c": "NO"}] and lk.stats.l2_errors == 2
    source.fail = True
    with pytest.raises(RuntimeError, match="did not answer for 30s"):
        lookup(source).get(["b"])


def test_stats_add_up_and_round_trip() -> None:
    stats = LookupStats(keys=3, l1_hits=1, l3_hits=1, misses=1, batches=1, batch_ms=[2.0])
    merged = stats.merged(LookupStats.from_json(stats.to_json()))
    assert merged.keys == 6 and merged.batch_ms == [2.0, 2.0]


def test_files_give_csv_and_json_lines_rows(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("id,country,tier\nu1,NO,2\nu2,,1\n")
    (tmp_path / "u.jsonl").write_text('{"id": "u1", "country": "NO", "tier": 2}\n\n{"id": 7, "tier": null}\n')
    assert FileSource.read(tmp_path / "u.csv", "id", ["country", "tier"]).rows == {
        "u1": {"country": "NO", "tier": "2"}, "u2": {"country": None, "tier": "1"}}
    assert FileSource.read(tmp_path / "u.jsonl", "id", ["country", "tier"]).rows == {
        "u1": {"country": "NO", "tier": 2}, "7": {"country": None, "tier": None}}
    assert convert("2", FieldType.INTEGER) == 2 and convert("2.5", FieldType.NUMBER) == 2.5


def test_l1_persisted_with_rocksdict_starts_warm(tmp_path: Path) -> None:
    pytest.importorskip("rocksdict")
    source = CountingSource({"a": {"c": "NO"}})
    first = lookup(source, persist=tmp_path / "l1")
    first.get(["a", "x"])
    first.close()
    again = lookup(source, persist=tmp_path / "l1")
    assert again.get(["a", "x"]) == [{"c": "NO"}, None] and source.calls == 1


KILLED_WORKER = """
import os, signal, sys
from pathlib import Path
from headrace.operators.lookup import LocalCache
cache = LocalCache(size=100, ttl_ms=600_000, miss_ttl_ms=600_000, persist=Path(sys.argv[1]))
for i in range(50):
    cache.put(f"u{i}", {"c": str(i)} if i % 5 else None, 0.0 + __import__("time").monotonic())
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no save()
"""


def test_l1_is_written_through_so_a_killed_worker_leaves_it_warm(tmp_path: Path) -> None:
    import subprocess
    import sys

    pytest.importorskip("rocksdict")
    done = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(tmp_path / "l1" / "job.enrich")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    source = CountingSource({f"u{i}": {"c": str(i)} for i in range(100)})
    again = lookup(source, persist=tmp_path / "l1" / "job.enrich")
    assert again.l1.loaded == 50
    assert again.get(["u1", "u5", "u7"]) == [{"c": "1"}, None, {"c": "7"}] and source.calls == 0
    assert (again.stats.first_batch_keys, again.stats.first_batch_l1_hits, again.stats.l1_loaded) == (3, 3, 50)


def test_each_live_worker_has_its_own_database_and_eviction_deletes(tmp_path: Path) -> None:
    pytest.importorskip("rocksdict")
    prefix = tmp_path / "job.enrich"
    one = LocalCache(size=2, ttl_ms=60_000, miss_ttl_ms=60_000, persist=prefix)
    two = LocalCache(size=2, ttl_ms=60_000, miss_ttl_ms=60_000, persist=prefix)  # slot 0 is held: slot 1
    for key in ("a", "b", "c"):
        one.put(key, {"v": key}, 0.0)
    two.put("z", {"v": "z"}, 0.0)
    one.save()
    two.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.enrich.0", "job.enrich.1"]
    reopened = LocalCache(size=10, ttl_ms=60_000, miss_ttl_ms=60_000, persist=prefix)
    assert sorted(reopened.entries) == ["b", "c"]  # 'a' was evicted, from the database too
    reopened.save()
