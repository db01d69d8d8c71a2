"""GraphQL, gRPC, live subscriptions and the web page of a running ``headrace serve`` against a real
PostgreSQL: nested GraphQL reads in one round trip per field, abusive queries refused, every
protocol limited to the token's tenant, subscriptions fed from the sink's change stamps (a row
upserted the way the JDBC sink does reaches subscribers, other tenants' rows never), and the page
in Debian's Chromium plotting a view and adding a new window's point live."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from headrace.connectors.postgres import ensure_table
from headrace.connectors.serving.grpcapi import from_row, generated
from headrace.jobs.catalog import load_catalog
from headrace.jobs.profiles import load_profile
from headrace.jobs.serve import build

from tests.integration.test_serve import SECRET, auth, iso, token, wait_until_serving
from tests.jobfiles import ROOT
from tests.services import Postgres, free_port_pair, listening_on

pytestmark = pytest.mark.integration
TENANTS, PAGES, WINDOWS = ("t1", "t2"), ("/a", "/b", "/c"), 30
START = datetime(2026, 2, 1)
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, pg: Postgres) -> Iterator[dict[str, Any]]:
    """A project with two views of one job (per minute, and per tenant only), rows in both, and a
    ``headrace serve`` process on free ports."""
    root = tmp_path_factory.mktemp("live")
    table = f"live_{os.getpid()}"
    spec = f"""job: live
source:
  kafka: {{topic: clicks, group: live}}
  format: {{json: {ROOT / "schemas" / "click.schema.json"}}}
  event_time: {{field: ts, max_out_of_orderness: 5s}}
steps:
  - validate: {{}}
  - aggregate:
      id: per_page
      group_by: [tenant_id, page]
      window: {{tumbling: 1m}}
      measures:
        events: count()
        avg_ms: avg(latency_ms)
        latency: percentiles(latency_ms, [0.5, 0.95, 0.99])
  - aggregate:
      id: per_tenant
      from: validate
      group_by: [tenant_id]
      window: {{tumbling: 1m}}
      measures: {{events: count()}}
sinks:
  - postgres: {{table: {table}, from: per_page}}
  - postgres: {{table: {table}_tenant, from: per_tenant}}
dead_letter: {{kafka: {{topic: clicks.dlq}}}}
"""
    (root / "jobs").mkdir()
    (root / "jobs" / "live.yaml").write_text(spec)
    profiles = root / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  test:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
        "    serve:\n      auth: {hs256_secret: '${HEADRACE_TEST_JWT}'}\n      hide: {guest: [avg_ms]}\n"
        "      changes_interval: 500ms\n")
    os.environ["HEADRACE_TEST_JWT"] = SECRET
    catalog = load_catalog(root)
    for name in (table, f"{table}_tenant"):
        view = catalog.get(name)
        assert view is not None, [v.name for v in catalog.views]
        ensure_table(pg.conninfo(), view.view)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for w in range(WINDOWS):
            start = START + timedelta(minutes=w)
            for tenant in TENANTS:
                total = 0
                for p, page in enumerate(PAGES):
                    n = 1 + (w + p) % 5
                    total += n
                    upsert(conn, table, (tenant, page), start, n)
                upsert(conn, f"{table}_tenant", (tenant,), start, total)
    port = free_port_pair()  # below the ephemeral range, port + 1 free too
    grpc_port = port + 1
    server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(root),
                               "--profile", "test", "--profiles", str(profiles), "--port", str(port),
                               "--grpc-port", str(grpc_port)],
                              env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_until_serving(port, proc=server)
        yield {"root": root, "profiles": profiles, "table": table, "port": port, "grpc_port": grpc_port,
               "url": f"http://127.0.0.1:{port}"}
    finally:
        server.terminate()
        server.wait(10)
        output = server.stdout.read().decode() if server.stdout else ""
        assert "Traceback" not in output, output[-3000:]


def upsert(conn: psycopg.Connection[Any], table: str, keys: tuple[str, ...], start: datetime, events: int) -> None:
    """What Flink's JDBC sink sends: INSERT … ON CONFLICT (keys) DO UPDATE."""
    names = ["tenant_id", "page"][:len(keys)]
    columns = [*names, "window_start", "window_end", "events", "_records"]
    values = [*keys, start, start + timedelta(minutes=1), events, events]
    if len(keys) == 2:
        columns += ["avg_ms", "latency_p50", "latency_p95", "latency_p99"]
        values += [events / 2, events * 10.0, events * 20.5, events * 30.25]
    quoted = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns[len(keys) + 2:])
    conn.execute(f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join(["%s"] * len(values))}) '  # type: ignore[arg-type]
                 f'ON CONFLICT ({", ".join(names)}, window_start, window_end) DO UPDATE SET {updates}', values)


def graphql(url: str, query: str, bearer: str | None = None) -> httpx.Response:
    headers = auth(bearer) if bearer else {}
    return httpx.post(f"{url}/graphql", json={"query": query}, headers=headers, timeout=10)


def test_graphql_reads_equal_rest_and_nested_rows_cost_one_round_trip(live: dict[str, Any], pg: Postgres) -> None:
    table = live["table"]
    nested = (f'{{ {table}(where: {{page: ["/a", "/b"]}}, limit: 20) {{ rows {{ tenant_id page window_start events '
              f'{table}_tenant(limit: 3) {{ tenant_id window_start events }} '
              f'{table}(limit: 2, since: "{iso(START)}") {{ window_start events }} }} next_cursor }} }}')
    # a server built in this process, so that its store's round trips can be counted
    app = build(live["root"], load_profile("test", live["profiles"]))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        store = app.state.hub.stores["postgres"]
        before = store.round_trips
        answer = client.post("/graphql", json={"query": nested}, headers=auth(token()))
        trips = store.round_trips - before
    body = answer.json()
    assert answer.status_code == 200 and "errors" not in body, body
    page = body["data"][table]
    rest = httpx.get(f"{live['url']}/v1/views/{table}", params={"page": ["/a", "/b"], "limit": 20},
                     headers=auth(token())).json()
    assert [{k: r[k] for k in ("tenant_id", "page", "window_start", "events")} for r in page["rows"]] == [
        {k: r[k] for k in ("tenant_id", "page", "window_start", "events")} for r in rest["rows"]]
    assert page["next_cursor"] == rest["next_cursor"]
    # 20 parent rows, two nested fields: 1 read for the page + 1 per nested field, not 1 + 2 × 20
    assert trips == 3, trips
    with psycopg.connect(**pg.conninfo()) as conn:
        for row in page["rows"]:
            want = conn.execute(f'SELECT window_start, events FROM "{table}_tenant" WHERE tenant_id = %s '  # type: ignore[arg-type]
                                "ORDER BY window_start DESC LIMIT 3", (row["tenant_id"],)).fetchall()
            assert [(r["window_start"], r["events"]) for r in row[f"{table}_tenant"]] == [
                (iso(s), n) for s, n in want]
            assert {r["tenant_id"] for r in row[f"{table}_tenant"]} == {"t1"}
            assert len(row[table]) == 2 and row[table][0]["window_start"] == iso(START + timedelta(minutes=WINDOWS - 1))


def test_graphql_refuses_deep_or_huge_queries_bad_tokens_and_other_tenants(live: dict[str, Any]) -> None:
    url, table = live["url"], live["table"]
    deep = f"{{ {table}(limit: 1) {{ rows {{ " + f"{table}(limit: 1) {{ " * 6 + "events" + " }" * 6 + " } } }"
    answer = graphql(url, deep, token()).json()
    assert answer["data"] is None and "exceeds maximum operation depth" in answer["errors"][0]["message"]
    huge = f"{{ {table}(limit: 1000) {{ rows {{ {table}(limit: 1000) {{ events }} }} }} }}"
    answer = graphql(url, huge, token()).json()
    assert answer["data"] is None and answer["errors"][0]["message"].startswith(
        "query too large: it could read 1,001,000 rows and the limit is 10,000")
    for bad in (None, "not.a.jwt", token(exp=int(time.time()) - 60)):
        refused = graphql(url, f"{{ {table} {{ rows {{ events }} }} }}", bad)
        assert refused.status_code == 401 and refused.json() == {"error": "unauthorized"}
    other = graphql(url, f'{{ {table}(where: {{tenant_id: ["t2"]}}) {{ rows {{ tenant_id events }} }} }}', token())
    assert other.json() == {"data": None, "errors": [{"message": "forbidden", "locations": [{"line": 1, "column": 3}],
                                                       "path": [table]}]}
    guest = graphql(url, f"{{ {table}(limit: 2) {{ rows {{ events avg_ms }} }} }}", token(roles=["guest"])).json()
    assert [r["avg_ms"] for r in guest["data"][table]["rows"]] == [None, None]
    assert all(r["events"] is not None for r in guest["data"][table]["rows"])
    metrics = httpx.get(f"{url}/metrics").text
    assert 'headrace_serve_requests_total{status="401",view="graphql"}' in metrics


PROBE_PAGE = "/probe"


async def _subscribe(url: str, bearer: str, query: str, received: list[dict[str, Any]], ready: threading.Event,
                     count: int) -> None:
    import websockets

    async with websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {bearer}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        while len(received) < count:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert message["type"] == "next", message
            row = next(iter(message["payload"]["data"].values()))
            if row.get("page") == PROBE_PAGE:  # the feed delivers: the rows under test may be written
                ready.set()
                continue
            received.append(message["payload"]["data"])


def subscribed(url: str, query: str, count: int, table: str, pg: Postgres,
               new: datetime) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """A subscriber (t1's token) in a thread; it collects ``count`` rows, then ends. Returns once
    the feed has delivered it a probe row (t1's page /probe, written every 0.3 s until then), so
    that nothing written afterwards can fall before the subscription's baseline."""
    received: list[dict[str, Any]] = []
    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_subscribe(url, token(), query, received, ready, count)))
    thread.start()
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for attempt in range(100):
            upsert(conn, table, ("t1", PROBE_PAGE), new, attempt + 1)
            if ready.wait(0.3):
                break
    assert ready.is_set(), "the subscription never delivered the probe row"
    return thread, received


def test_subscriptions_push_upserted_rows_of_the_tokens_tenant_only(live: dict[str, Any], pg: Postgres) -> None:
    url, table = live["url"], live["table"]
    query = f"subscription {{ {table} {{ tenant_id page window_start events }} }}"
    new = START + timedelta(minutes=WINDOWS + 5)
    thread, received = subscribed(url, query, 3, table, pg, new)
    def delivered(n: int) -> None:
        """A feed delivers each changed row's newest state: a row written twice before the feed
        reads it is delivered once, so the next update waits for the previous delivery."""
        deadline = time.monotonic() + 20
        while len(received) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        upsert(conn, table, ("t2", "/a"), new, 50)  # another tenant: never delivered
        upsert(conn, table, ("t1", "/a"), new, 7)
        delivered(1)
        with conn.transaction():  # one transaction, two rows; then an update of the first
            upsert(conn, table, ("t1", "/b"), new, 8)
            upsert(conn, table, ("t2", "/b"), new, 9)
        delivered(2)
        upsert(conn, table, ("t1", "/a"), new, 11)
    thread.join(30)
    assert [r[table] for r in received] == [
        {"tenant_id": "t1", "page": "/a", "window_start": iso(new), "events": 7},
        {"tenant_id": "t1", "page": "/b", "window_start": iso(new), "events": 8},
        {"tenant_id": "t1", "page": "/a", "window_start": iso(new), "events": 11}]
    # a bad token is refused at connection_init
    import websockets

    async def refused() -> int:
        async with websockets.connect(url.replace("http", "ws") + "/graphql",
                                      subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}))
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else 0
            return 0
    assert asyncio.run(refused()) == 4403


def test_grpc_query_and_subscribe_with_the_same_rules(live: dict[str, Any], pg: Postgres) -> None:
    table = live["table"]
    messages, services = generated()
    with grpc.insecure_channel(f"127.0.0.1:{live['grpc_port']}") as channel:
        stub = services.ViewsStub(channel)
        metadata = [("authorization", f"Bearer {token()}")]
        reply = stub.Query(messages.QueryRequest(view=table, where=[messages.Filter(column="page", values=["/c"])],
                                                 limit=5, fields=["page", "window_start", "events"]),
                           metadata=metadata, timeout=10)
        rest = httpx.get(f"{live['url']}/v1/views/{table}", params={"page": "/c", "limit": 5,
                                                                     "fields": "page,window_start,events"},
                         headers=auth(token())).json()
        assert [from_row(r) for r in reply.rows] == rest["rows"] and reply.next_cursor == rest["next_cursor"]
        for bad, code in (([("authorization", "Bearer x")], grpc.StatusCode.UNAUTHENTICATED),
                          ([], grpc.StatusCode.UNAUTHENTICATED)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Query(messages.QueryRequest(view=table), metadata=bad, timeout=10)
            assert refused.value.code() == code and refused.value.details() == "unauthorized"
        with pytest.raises(grpc.RpcError) as refused:
            stub.Query(messages.QueryRequest(view=table, where=[messages.Filter(column="tenant_id", values=["t2"])]),
                       metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            stub.Query(messages.QueryRequest(view=table, sort="'; DROP TABLE x"), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameter 'sort'" in refused.value.details()

        stream = stub.Subscribe(messages.SubscribeRequest(view=table, where=[
            messages.Filter(column="page", values=["/c"])]), metadata=metadata)
        new = START + timedelta(minutes=WINDOWS + 10)

        def write() -> None:
            time.sleep(1.5)
            with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
                upsert(conn, table, ("t1", "/a"), new, 1)  # not /c: filtered out
                upsert(conn, table, ("t2", "/c"), new, 2)  # not t1: filtered out
                upsert(conn, table, ("t1", "/c"), new, 3)
        writer = threading.Thread(target=write)
        writer.start()
        first = from_row(next(stream))
        stream.cancel()
        writer.join()
    assert first == {"tenant_id": "t1", "page": "/c", "window_start": iso(new),
                     "window_end": iso(new + timedelta(minutes=1)), "events": 3, "avg_ms": 1.5,
                     "latency_p50": 30.0, "latency_p95": 61.5, "latency_p99": 90.75}
    # gRPC binds 127.0.0.1 as an IPv4-mapped IPv6 socket (::ffff:127.0.0.1): loopback still
    assert listening_on(live["grpc_port"]) <= {"0100007F", "0000000000000000FFFF00000100007F"}
    assert listening_on(live["grpc_port"])


def test_the_web_page_plots_a_view_and_adds_a_new_window_live(live: dict[str, Any], pg: Postgres) -> None:
    from playwright.sync_api import sync_playwright

    table = live["table"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 620})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live["url"] + "/")
            page.fill("#token", token())
            page.click("#connect")
            # locators only: the page's Content-Security-Policy forbids the evaluation of strings
            page.wait_for_selector(f"#view option[value='{table}']", state="attached")
            page.select_option("#view", table)
            page.wait_for_selector("#plot:not([disabled])")
            page.select_option("#key", json.dumps(["t1", "/a"], separators=(",", ":")))
            # p50, p95 and p99 of the view together, a line each
            quantiles = ["latency_p50", "latency_p95", "latency_p99"]
            page.select_option("#measure", quantiles)
            page.click("#plot")
            page.wait_for_selector("#status:has-text('live')")

            def drawn(measure: str) -> list[tuple[str | None, float]]:
                return [(d.get_attribute("data-window"), float(d.get_attribute("data-value") or "nan"))
                        for d in page.locator(f"#chart circle.dot[data-measure='{measure}']").all()]

            with psycopg.connect(**pg.conninfo()) as conn:
                want = conn.execute(f'SELECT window_start, latency_p50, latency_p95, latency_p99 FROM "{table}" '  # type: ignore[arg-type]
                                    "WHERE tenant_id = %s AND page = %s ORDER BY window_start", ("t1", "/a")).fetchall()
            for i, measure in enumerate(quantiles, start=1):
                assert drawn(measure) == [(iso(row[0]), row[i]) for row in want], measure
            legend = page.inner_text("#legend")
            assert page.locator("#chart polyline.line").count() == 3 and all(q in legend for q in quantiles)
            time.sleep(1.0)
            new = START + timedelta(minutes=WINDOWS + 20)
            with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
                upsert(conn, table, ("t1", "/a"), new, 4)  # a new window closes
            fresh = f"#chart circle.dot.live[data-measure='latency_p95'][data-window='{iso(new)}']"
            page.wait_for_selector(fresh, timeout=15_000)
            assert page.get_attribute(fresh, "data-value") == "82"
            assert "1 update" in page.inner_text("#status")
            page.screenshot(path=str(ARTIFACTS / "web-page.png"))
            assert errors == []
        finally:
            browser.close()


def test_graphql_arguments_fuzzed_change_no_sql_and_leak_no_rows(live: dict[str, Any], pg: Postgres) -> None:
    from tests.integration.test_serve import HOSTILE

    url, table = live["url"], live["table"]
    with psycopg.connect(**pg.conninfo()) as conn:
        before = conn.execute(f'SELECT count(*), sum(events) FROM "{table}"').fetchone()  # type: ignore[arg-type]
    for value in HOSTILE:
        literal = json.dumps(value)
        for arguments in (f"where: {{page: [{literal}]}}", f"where: {{tenant_id: [{literal}]}}", f"since: {literal}",
                          f"until: {literal}", f"sort: {literal}", f"after: {literal}"):
            answer = graphql(url, f"{{ {table}({arguments}) {{ rows {{ tenant_id page events }} }} }}", token())
            assert answer.status_code == 200 and "Traceback" not in answer.text, (arguments, answer.text)
            body = answer.json()
            rows = (body.get("data") or {}).get(table) or {"rows": []}
            assert {r["tenant_id"] for r in rows["rows"]} <= {"t1"}, (arguments, body)
            if body.get("errors"):
                assert body.get("data") is None and len(body["errors"]) == 1, body
    with psycopg.connect(**pg.conninfo()) as conn:
        assert conn.execute(f'SELECT count(*), sum(events) FROM "{table}"').fetchone() == before  # type: ignore[arg-type]


def test_a_subscription_survives_a_postgresql_restart(live: dict[str, Any], pg: Postgres) -> None:
    url, table = live["url"], live["table"]
    query = f'subscription {{ {table}(where: {{page: ["/b", "{PROBE_PAGE}"]}}) {{ page window_start events }} }}'
    new = START + timedelta(minutes=WINDOWS + 30)
    thread, received = subscribed(url, query, 2, table, pg, new)
    pg.shut_down()
    try:
        time.sleep(3)  # the feed finds the store away and keeps trying
        health = httpx.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 503 and "PostgreSQL" in health.json()["stores"]["postgres"]
    finally:
        pg.start_again()
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        upsert(conn, table, ("t1", "/b"), new, 21)
        upsert(conn, table, ("t1", "/b"), new + timedelta(minutes=1), 22)
    thread.join(40)
    assert [r[table] for r in received] == [
        {"page": "/b", "window_start": iso(new), "events": 21},
        {"page": "/b", "window_start": iso(new + timedelta(minutes=1)), "events": 22}]
