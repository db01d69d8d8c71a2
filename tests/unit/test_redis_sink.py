"""The Redis sink's logic without a server: keys, script arguments, options and profile errors.
(tests/integration/test_redis.py runs it against a real redis-server.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.connectors.batchsink import window_ms
from headrace.connectors.redis import RedisConnection, RowWriter, encode_part
from headrace.jobs.profiles import load_profile
from headrace.schemas.errors import SpecError
from headrace.schemas.types import FieldType
from headrace.schemas.views import ViewDef

from tests.unit.test_graph import HEAD, TAIL, error_of, plan_of

VIEW = ViewDef("pa", keys=(("tenant_id", FieldType.STRING), ("page", FieldType.STRING)),
               measures=(("events", FieldType.INTEGER), ("avg_ms", FieldType.NUMBER),
                         ("total", FieldType.INTEGER)))
ROW = {"tenant_id": "t:1", "page": "/a%b", "window_start": "2026-01-01 00:01:00.000",
       "window_end": "2026-01-01 00:02:00.000", "events": 3, "avg_ms": 2.5, "total": float("nan"), "_records": 3}
JOB = HEAD + """steps:
  - validate: {}
  - aggregate: {group_by: [tenant_id, page], window: {tumbling: 1m}, measures: {events: count()}}
sinks:
  - redis: {ttl: 1h, top: {measure: events}}
""" + TAIL


def test_keys_are_unambiguous_and_values_typed() -> None:
    writer = RowWriter(VIEW, RedisConnection(), ttl_ms=3_600_000, top="events", retry_for_ms=1000)
    keys, args = writer.keys_of(ROW)
    start = window_ms("2026-01-01 00:01:00.000")
    assert keys == [f"pa:t%3A1:/a%25b:{start}", "pa:t%3A1:/a%25b:latest", f"pa:top:events:{start}"]
    assert args[:6] == ["3", str(start), "3600000", "t%3A1:/a%25b", "3.0", "0"]  # score: a double
    fields = dict(zip(args[6::2], args[7::2], strict=True))
    # a null integer measure (NaN in a pandas batch) is stored as "", never as "nan" or "1.0"
    assert fields["events"] == "3" and fields["avg_ms"] == "2.5" and fields["total"] == ""
    assert fields["tenant_id"] == "t:1" and fields["_records"] == "3"
    assert fields["window_start_ms"] == str(start) and fields["window_end"] == "2026-01-01 00:02:00.000"


def test_key_parts_encode_separators() -> None:
    assert encode_part("a:b", FieldType.STRING) == "a%3Ab" and encode_part(False, FieldType.BOOLEAN) == "false"
    assert window_ms("0001-01-01 00:00:00.000") == -62_135_596_800_000


def test_default_prefix_is_the_aggregate_and_explain_says_the_keys(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, JOB)
    sink = plan.sinks[0]
    assert sink.id == "sink.redis.aggregate" and sink.uid == "graph.sink.redis.aggregate"
    assert "redis hashes 'aggregate:<tenant_id:page>:<window start ms>'" in sink.explain()
    assert "TTL 1h" in sink.explain() and "top-N by events" in sink.explain()


def test_top_n_of_an_unknown_measure_is_refused_at_its_line(tmp_path: Path) -> None:
    message, at = error_of(tmp_path, JOB.replace("measure: events", "measure: evnts"))
    assert "top-N measure 'evnts' is not a measure of the view; measures: events" in message
    assert at == JOB.splitlines().index("  - redis: {ttl: 1h, top: {measure: events}}") + 1


def test_a_profile_without_redis_is_one_line(tmp_path: Path) -> None:
    profiles = tmp_path / "p.yaml"
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n")
    sink = plan_of(tmp_path, JOB).sinks[0]
    with pytest.raises(SpecError, match="profile 'svc' names no 'redis' connection, which this job needs"):
        sink.table_ddl(load_profile("svc", profiles))


def test_redis_section_is_validated_and_its_password_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R_PASS", "hunter2")
    profiles = tmp_path / "p.yaml"
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    redis: {port: 6380, password: '${R_PASS}'}\n"
                        "  bad:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n    redis: {prot: 1}\n")
    conn = load_profile("svc", profiles).section(RedisConnection)
    assert conn.client_kwargs()["password"] == "hunter2" and "hunter2" not in repr(conn)
    with pytest.raises(SpecError, match=r"p.yaml:7: profile 'bad': redis.prot: Extra inputs are not permitted"):
        load_profile("bad", profiles)
