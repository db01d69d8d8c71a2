"""The InfluxDB sink against real servers, read back and compared with the plain-Python reference:
v1 (``/write?db=``) against Debian's InfluxDB 1.6, read with InfluxQL, also after influxd was
stopped for 10 s while the job ran; v2 (``/api/v2/write`` through influxdb-client) against
VictoriaMetrics, read through its export API."""

from __future__ import annotations

import calendar
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from headrace.jobs.sample import click_events
from headrace.operators.sketches import quantile

from tests.integration.clirun import CliRun
from tests.integration.test_failures import PARTITIONS, assert_exact, fault_job, final_offsets, row_count, run_args
from tests.jobfiles import ROOT
from tests.kafkautil import produce_placed
from tests.reference import expected_outcome
from tests.services import Broker, InfluxServer, Postgres, VictoriaMetrics

pytestmark = pytest.mark.integration
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())


def with_influx(tmp_path: Path, name: str, profiles: Path, section: str, lateness: str = "30s") -> Path:
    job = fault_job(tmp_path, name)
    job.write_text(job.read_text().replace(
        f"  - postgres: {{table: {name}_1m}}",
        f"  - postgres: {{table: {name}_1m}}\n  - influx: {{measurement: {name}}}").replace(
        "allowed_lateness: 30s", f"allowed_lateness: {lateness}"))
    profiles.write_text(profiles.read_text().replace("    state:", f"    influx: {section}\n    state:"))
    return job


def reference(placed: list[tuple[int, bytes]], lateness_ms: int) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    want = expected_outcome(placed, SCHEMA, out_of_orderness_ms=5_000, lateness_ms=lateness_ms).views()
    return {(t, p, calendar.timegm(s.timetuple()) * 1000): v for (t, p, s, _e), v in want.items()}


def test_influx_v1_points_are_exact_and_a_10_s_outage_is_ridden_out(
        tmp_path: Path, broker: Broker, pg: Postgres, influx_server: InfluxServer, profiles_file: Path,
        unique: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{influx_server.url}/query?q=CREATE+DATABASE+{unique}",
                                                  method="POST"), timeout=10).read()
    section = f"{{url: \"{influx_server.url}\", mode: v1, database: {unique}}}"
    job = with_influx(tmp_path, unique, profiles_file, section)
    # a percentile with its sketch kept (keep_sketch: base64 text in a string field)
    text = job.read_text().replace("      allowed_lateness: 30s",
                                   "      allowed_lateness: 30s\n      keep_sketch: true", 1)
    job.write_text(text.replace("        max_ms: max(latency_ms)\n",
                                "        max_ms: max(latency_ms)\n        p95_ms: percentile(latency_ms, 0.95)\n"))
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(30_000, seed=91))
    phases = [events[:15_000], events[15_000:]]
    placed = produce_placed(broker.bootstrap, unique, phases[0], PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(*phases)))
    run.wait_for(lambda: row_count(pg, f"{unique}_1m") > 0, 120, "view rows")
    influx_server.shut_down()
    try:
        placed += produce_placed(broker.bootstrap, unique, phases[1], PARTITIONS)
        run.wait_for(lambda: run.line_matching("InfluxDB http") is not None, 30, "a progress line naming InfluxDB")
        time.sleep(8)
    finally:
        influx_server.start_again()
    assert run.finish() == 0, run.output[-3000:]
    assert "not answering" in (run.line_matching("InfluxDB http") or "")
    assert_exact(broker, pg, unique, placed)

    series = influx_server.query(unique, f'SELECT * FROM "{unique}"')
    columns = series[0]["columns"]  # type: ignore[index]
    got = {}
    for values in series[0]["values"]:  # type: ignore[index]
        r = dict(zip(columns, values, strict=True))  # type: ignore[arg-type]
        got[(r["tenant_id"], r["page"], r["time"])] = (r["events"], r["total_bytes"], r["avg_ms"], r["min_ms"],
                                                       r["max_ms"], r["_records"])
        assert quantile(r["latency_ms_dd_sketch"], 0.95) == r["p95_ms"], r  # the kept sketch reads back
    want = reference(placed, 30_000)
    assert got.keys() == want.keys()
    for key, (n, total, avg, lo, hi) in want.items():
        assert got[key][:2] == (n, total) and got[key][3:] == (lo, hi, n), key
        assert got[key][2] == pytest.approx(avg, rel=1e-12), key


def test_influx_v2_api_through_influxdb_client_is_exact(
        tmp_path: Path, broker: Broker, pg: Postgres, victoria: VictoriaMetrics, profiles_file: Path,
        unique: str) -> None:
    # no late firing: each window is written once, as VictoriaMetrics keeps every sample it gets
    job = with_influx(tmp_path, unique, profiles_file,
                      f"{{url: \"{victoria.url}\", mode: v2, org: headrace, bucket: views, token: \"${{INFLUX_T}}\"}}",
                      lateness="0s")
    broker.create_topic(unique, partitions=PARTITIONS)
    events = list(click_events(8_000, seed=92))
    placed = produce_placed(broker.bootstrap, unique, events, PARTITIONS)
    run = CliRun(*run_args(job, profiles_file, final_offsets(events)), env={"INFLUX_T": "not-a-real-token"})
    assert run.finish() == 0, run.output[-3000:]
    assert "not-a-real-token" not in run.output
    got: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for series in victoria.export(f"{unique}_.*"):
        metric: Any = series["metric"]
        field = metric["__name__"].removeprefix(f"{unique}_")
        for ts, value in zip(series["timestamps"], series["values"], strict=True):  # type: ignore[call-overload]
            got.setdefault((metric["tenant_id"], metric["page"], ts), {}).setdefault(field, []).append(value)
    want = reference(placed, 0)
    assert got.keys() == want.keys()
    for key, (n, total, avg, lo, hi) in want.items():
        point = got[key]
        assert point["events"] == [n] and point["_records"] == [n] and point["min_ms"] == [lo], key
        assert point["max_ms"] == [hi] and point.get("total_bytes", [None]) == [total], key
        assert point["avg_ms"][0] == pytest.approx(avg, rel=1e-12), key
