"""Serving views that live in Redis and InfluxDB: rows written by the sinks' own writers (no Flink
needed), read back over REST, filtered, paged and tenant-isolated like PostgreSQL views."""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from headrace.connectors.influx import InfluxConnection, PointWriter
from headrace.connectors.redis import WRITE_SCRIPT, RedisConnection, RowWriter
from headrace.jobs.catalog import load_catalog
from headrace.jobs.profiles import load_profile
from headrace.jobs.serve import build

from tests.integration.test_serve import SECRET, auth, token
from tests.jobfiles import ROOT
from tests.services import InfluxServer, RedisServer

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1)


def rows() -> list[dict[str, Any]]:
    out = []
    for w in range(30):
        for tenant in ("t1", "t2"):
            for page in ("/", "/a:b", "/c"):  # a ':' in a key value is encoded, never ambiguous
                n = 1 + (w + len(page) + int(tenant[1])) % 9
                start = START + timedelta(minutes=w)
                out.append({"tenant_id": tenant, "page": page,
                            "window_start": start.strftime("%Y-%m-%d %H:%M:%S.000"),
                            "window_end": (start + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.000"),
                            "events": n, "total_bytes": None if w % 5 == 0 else n * 10, "avg_ms": n / 4,
                            "min_ms": 0, "max_ms": n, "_records": n})
    return out


@pytest.fixture()
def served(tmp_path: Path, redis_server: RedisServer, influx_server: InfluxServer) -> Any:
    from fastapi.testclient import TestClient

    name = f"v{os.getpid()}_{id(tmp_path) % 10000}"
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "a.yaml").write_text(
        (ROOT / "jobs" / "page_activity.yaml").read_text()
        .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
        .replace("  - postgres: {table: page_activity_1m}",
                 f"  - redis: {{view: {name}, top: {{measure: events}}}}\n  - influx: {{measurement: {name}_m}}"))
    urllib.request.urlopen(urllib.request.Request(f"{influx_server.url}/query?q=CREATE+DATABASE+{name}",
                                                  method="POST"), timeout=10).read()
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  test:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
        f"    redis: {{port: {redis_server.port}}}\n"
        f"    influx: {{url: '{influx_server.url}', mode: v1, database: {name}}}\n"
        "    serve:\n      auth: {hs256_secret: '${HEADRACE_TEST_JWT}'}\n")
    os.environ["HEADRACE_TEST_JWT"] = SECRET
    catalog = load_catalog(tmp_path)
    data = rows()
    redis_view, influx_view = catalog.get(name), catalog.get(f"{name}_m")
    assert redis_view is not None and influx_view is not None
    client: Any = redis_server.client()
    RowWriter(redis_view.view, RedisConnection(port=redis_server.port), 0, "events", 1000).write(
        client, client.register_script(WRITE_SCRIPT), data)
    PointWriter(influx_view.view, f"{name}_m", InfluxConnection(url=influx_server.url, mode="v1", database=name),
                1000).write(data)
    with TestClient(build(tmp_path, load_profile("test", profiles))) as test_client:
        yield test_client, name, data


def expected(data: list[dict[str, Any]], tenant: str, **match: str) -> list[tuple[Any, ...]]:
    chosen = [r for r in data if r["tenant_id"] == tenant and all(r[k] == v for k, v in match.items())]
    chosen.sort(key=lambda r: (r["window_start"], r["tenant_id"], r["page"], r["window_end"]), reverse=True)
    return [(r["page"], r["window_start"].replace(" ", "T") + "Z", r["events"], r["total_bytes"], r["avg_ms"])
            for r in chosen]


@pytest.mark.parametrize("store", ["redis", "influx"])
def test_views_in_redis_and_influxdb_are_served_like_tables(served: Any, store: str) -> None:
    client, name, data = served
    view = name if store == "redis" else f"{name}_m"
    got, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"/v1/views/{view}", params=params, headers=auth(token(tenant="t2"))).json()
        got += [(r["page"], r["window_start"], r["events"], r["total_bytes"], r["avg_ms"]) for r in body["rows"]]
        assert {r["tenant_id"] for r in body["rows"]} <= {"t2"}
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert got == expected(data, "t2")
    one = client.get(f"/v1/views/{view}", params={"page": "/a:b", "since": "2026-03-01T00:25:00Z"},
                     headers=auth(token())).json()["rows"]
    assert [(r["page"], r["window_start"], r["events"], r["total_bytes"], r["avg_ms"]) for r in one] == [
        e for e in expected(data, "t1", page="/a:b") if e[1] >= "2026-03-01T00:25"]
    assert one[0]["window_end"] == "2026-03-01T00:30:00.000Z"
    assert client.get(f"/v1/views/{view}", params={"tenant_id": "t1"},
                      headers=auth(token(tenant="t2"))).status_code == 403
    assert json.loads(client.get("/healthz").text)["stores"][store] == "ok"


def test_a_redis_view_ranks_a_windows_keys_by_its_top_measure(served: Any) -> None:
    client, name, data = served
    window = "2026-03-01T00:07:00Z"
    answer = client.get(f"/v1/views/{name}/top", params={"window_start": window, "n": 2}, headers=auth(token()))
    assert answer.status_code == 200, answer.text
    ranked = [r for r in data if r["tenant_id"] == "t1" and r["window_start"] == "2026-03-01 00:07:00.000"]
    ranked.sort(key=lambda r: r["events"], reverse=True)
    got = answer.json()["rows"]
    assert [row["events"] for row in got] == [r["events"] for r in ranked[:2]]
    assert all(row["key"]["tenant_id"] == "t1" for row in got)  # only the token's tenant
    assert client.get(f"/v1/views/{name}/top", params={"n": 2}, headers=auth(token())).status_code == 400
    assert client.get(f"/v1/views/{name}_m/top", params={"window_start": window},
                      headers=auth(token())).status_code == 404
