"""The InfluxDB sink's logic without a server: line protocol, escaping, what it cannot store.
(tests/integration/test_influx.py writes to real servers and reads the points back.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from headrace.connectors.influx import InfluxConnection, line
from headrace.schemas.types import FieldType
from headrace.schemas.views import ViewDef
from pydantic import ValidationError

from tests.unit.test_graph import HEAD, TAIL, plan_of

VIEW = ViewDef("pa", keys=(("tenant_id", FieldType.STRING), ("page", FieldType.STRING)),
               measures=(("events", FieldType.INTEGER), ("avg_ms", FieldType.NUMBER),
                         ("total", FieldType.INTEGER), ("top_page", FieldType.STRING)))
JOB = HEAD + """steps:
  - validate: {}
  - aggregate: {group_by: [tenant_id, page], window: {tumbling: 1m}, measures: {events: count()}}
sinks:
  - influx: {measurement: page_activity}
""" + TAIL


def test_a_row_is_one_escaped_line_with_the_window_start_in_ms() -> None:
    row = {"tenant_id": "t 1", "page": "/a,b=c", "window_start": "1970-01-01 00:01:00.000",
           "window_end": "1970-01-01 00:02:00.000", "events": 3, "avg_ms": 2.5, "total": float("nan"),
           "top_page": 'say "hi"\\', "_records": 3}
    assert line(VIEW, "page activity", row) == (
        'page\\ activity,tenant_id=t\\ 1,page=/a\\,b\\=c events=3i,avg_ms=2.5,top_page="say \\"hi\\"\\\\",'
        "_records=3i,window_end_ms=120000i 60000")


def test_values_a_tag_cannot_carry_are_refused_at_the_sink_boundary(tmp_path: Path) -> None:
    sink = plan_of(tmp_path, JOB).sinks[0]
    predicate, reason = sink.unstorable("`page`", FieldType.STRING)
    assert "= ''" in predicate and "CHR(10)" in predicate and "tag" in reason
    assert sink.unstorable("`events`", FieldType.INTEGER) is None
    predicate, reason = sink.unstorable_time("`_event_ms`")
    assert "-9000000000000" in predicate and "1677" in reason
    assert sink.id == "sink.influx.page_activity" and "tags (tenant_id, page)" in sink.explain()


def test_each_mode_needs_its_target() -> None:
    with pytest.raises(ValidationError, match="mode v2 needs 'bucket'"):
        InfluxConnection(mode="v2")
    with pytest.raises(ValidationError, match="mode v1 needs 'database'"):
        InfluxConnection(mode="v1")
    assert InfluxConnection(mode="v1", database="d").url == "http://127.0.0.1:8086"
