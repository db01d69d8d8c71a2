"""Traces, logs and metrics of a running ``headrace --log-format json serve``: a span for every
request on every protocol (REST, GraphQL, a GraphQL subscription's WebSocket, gRPC), exported over
OTLP/HTTP to a collector (a small OTLP receiver here), continuing the caller's ``traceparent``;
the trace id in the response, in every log line of the request, and in every 5xx body; every
serve panel of the dashboard reads a metric ``/metrics`` has."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from headrace.connectors.postgres import ensure_table
from headrace.connectors.serving.grpcapi import generated
from headrace.jobs.catalog import load_catalog

from tests.integration.test_serve import SECRET, auth, token
from tests.jobfiles import ROOT
from tests.services import Postgres, free_port_pair

pytestmark = pytest.mark.integration
START = datetime(2026, 3, 1)


class Collector:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        spans: list[dict[str, Any]] = []
        self.spans = spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = next((a.value.string_value for a in resource.resource.attributes
                                    if a.key == "service.name"), "")
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            spans.append({"trace_id": span.trace_id.hex(), "parent": span.parent_span_id.hex(),
                                          "name": span.name, "kind": span.kind, "status": span.status.code,
                                          "service": service,
                                          "attributes": {a.key: a.value for a in span.attributes}})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, trace_id: str, timeout_s: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s["trace_id"] == trace_id]
            if found:
                return found
            time.sleep(0.2)
        return []


def traceparent() -> tuple[str, str]:
    """A caller's W3C traceparent header, and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, pg: Postgres) -> Iterator[dict[str, Any]]:
    """A project with a view in PostgreSQL (rows in it) and one in a Redis that is down, served by
    'headrace --log-format json serve' exporting its spans to a collector."""
    root = tmp_path_factory.mktemp("traced")
    table = f"traced_{os.getpid()}"
    (root / "jobs").mkdir()
    (root / "jobs" / "t.yaml").write_text(
        (ROOT / "jobs" / "page_activity.yaml").read_text().replace("page_activity_1m", table)
        .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
        .replace(f"  - postgres: {{table: {table}}}",
                 f"  - postgres: {{table: {table}}}\n  - redis: {{view: {table}_r}}"))
    collector = Collector()
    profiles = root / "profiles.yaml"
    profiles.write_text(
        "profiles:\n  test:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
        f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
        f"    redis: {{port: {closed_port()}}}\n"
        "    serve:\n      auth: {hs256_secret: '${HEADRACE_TEST_JWT}'}\n      timeout: 2s\n"
        f"      otlp_endpoint: {collector.url}\n")
    os.environ["HEADRACE_TEST_JWT"] = SECRET
    view = load_catalog(root).get(table)
    assert view is not None
    ensure_table(pg.conninfo(), view.view)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        for w in range(5):
            start = START + timedelta(minutes=w)
            conn.execute(f'INSERT INTO "{table}" (tenant_id, page, window_start, window_end, events, total_bytes, '
                         'avg_ms, min_ms, max_ms, _records) VALUES (%s, %s, %s, %s, 1, 1, 1, 1, 1, 1)',
                         ("t1", "/a", start, start + timedelta(minutes=1)))
    port = free_port_pair()
    log = root / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "--log-format", "json", "serve",
                                   "--project", str(root), "--profile", "test", "--profiles", str(profiles),
                                   "--port", str(port), "--grpc-port", str(port + 1)],
                                  env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=sink,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # /healthz is 503 (the Redis is down): wait for any answer
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{port + 1}", "table": table,
               "collector": collector, "log": log, "server": server}
    finally:
        server.terminate()
        server.wait(10)
        collector.server.shutdown()


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line serve wrote to stderr; each must be one JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_protocol_is_a_span_that_continues_the_callers_trace(traced: dict[str, Any]) -> None:
    url, table, collector = traced["url"], traced["table"], traced["collector"]
    # REST
    header, rest_id = traceparent()
    answer = httpx.get(f"{url}/v1/views/{table}", headers={**auth(token()), "traceparent": header}, timeout=10)
    assert answer.status_code == 200 and len(answer.json()["rows"]) == 5
    assert answer.headers["x-trace-id"] == rest_id
    # GraphQL
    header, graphql_id = traceparent()
    answer = httpx.post(f"{url}/graphql", json={"query": f"{{ {table}(limit: 2) {{ rows {{ page }} }} }}"},
                        headers={**auth(token()), "traceparent": header}, timeout=10)
    assert answer.status_code == 200 and "errors" not in answer.json() and answer.headers["x-trace-id"] == graphql_id
    # gRPC
    header, grpc_id = traceparent()
    messages, services = generated()
    with grpc.insecure_channel(traced["grpc"]) as channel:
        reply, call = services.ViewsStub(channel).Query.with_call(
            messages.QueryRequest(view=table, limit=3),
            metadata=[("authorization", f"Bearer {token()}"), ("traceparent", header)], timeout=10)
    assert len(reply.rows) == 3 and dict(call.trailing_metadata())["x-trace-id"] == grpc_id
    # a GraphQL subscription: its WebSocket connection
    header, ws_id = traceparent()

    async def subscribe() -> None:
        import websockets

        async with websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"],
                                      additional_headers={"traceparent": header}) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token()}"}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"

    asyncio.run(subscribe())
    expected = {rest_id: ("GET /v1/views/{view}", "http.response.status_code", 200),
                graphql_id: ("POST /graphql", "http.response.status_code", 200),
                grpc_id: ("grpc headrace.Views/Query", "rpc.grpc.status_code", None),
                ws_id: ("WEBSOCKET /graphql", None, None)}
    for trace_id, (name, key, value) in expected.items():
        spans = collector.of(trace_id)
        assert [s["name"] for s in spans] == [name], (name, spans)
        span = spans[0]
        assert span["service"] == "headrace-serve" and span["kind"] == 2  # SERVER
        assert span["parent"], "the caller's span is its parent"
        if value is not None:
            assert span["attributes"][key].int_value == value


def test_a_failure_names_its_trace_in_the_body_and_in_every_log_line(traced: dict[str, Any]) -> None:
    url, table, collector = traced["url"], traced["table"], traced["collector"]
    # the view in the Redis that is down: 503 on every protocol, each with the trace id
    header, rest_id = traceparent()
    answer = httpx.get(f"{url}/v1/views/{table}_r", headers={**auth(token()), "traceparent": header}, timeout=10)
    assert answer.status_code == 503 and answer.json()["trace_id"] == rest_id, answer.text
    assert "Traceback" not in answer.text
    header, graphql_id = traceparent()
    answer = httpx.post(f"{url}/graphql", json={"query": f"{{ {table}_r {{ rows {{ page }} }} }}"},
                        headers={**auth(token()), "traceparent": header}, timeout=10)
    assert answer.json()["errors"][0]["extensions"]["trace_id"] == graphql_id, answer.text
    header, grpc_id = traceparent()
    messages, services = generated()
    with grpc.insecure_channel(traced["grpc"]) as channel, pytest.raises(grpc.RpcError) as failed:
        services.ViewsStub(channel).Query(messages.QueryRequest(view=f"{table}_r"), timeout=10,
                                          metadata=[("authorization", f"Bearer {token()}"), ("traceparent", header)])
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and f"trace_id {grpc_id}" in failed.value.details()
    # a refused token: logged (info) with its request's trace id
    header, refused_id = traceparent()
    assert httpx.get(f"{url}/v1/views/{table}", headers={"traceparent": header}, timeout=10).status_code == 401
    for trace_id in (rest_id, grpc_id):
        assert collector.of(trace_id)[0]["status"] == 2  # ERROR
    deadline = time.monotonic() + 10
    while refused_id not in traced["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = log_lines(traced["log"])  # every line JSON
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_trace.setdefault(line.get("trace_id", ""), []).append(line)
    assert [line["message"][:3] for line in by_trace[rest_id]] == ["503"], by_trace.get(rest_id)
    assert [line["message"][:3] for line in by_trace[refused_id]] == ["401"]
    assert all(line["level"] in ("info", "warning") and line["logger"].startswith("headrace")
               for t in (rest_id, refused_id) for line in by_trace[t])
    # a line written during a request always carries its trace id
    request_lines = [line for line in lines if line["message"][:3] in ("401", "403", "503", "500")]
    assert request_lines and all(line.get("trace_id") for line in request_lines)
    assert "Traceback" not in traced["log"].read_text()


def test_every_serve_panel_of_the_dashboard_reads_a_metric_serve_has(traced: dict[str, Any]) -> None:
    from headrace.jobs.dashboard import METRICS, PANELS, metrics_of

    url, table = traced["url"], traced["table"]
    assert httpx.get(f"{url}/v1/views/{table}", headers=auth(token()), timeout=10).status_code == 200
    assert httpx.get(f"{url}/v1/views/{table}", timeout=10).status_code == 401
    text = httpx.get(f"{url}/metrics", timeout=10).text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    wanted = {m.name for m in METRICS if m.source == "serve"}
    assert wanted == {n for _, _, targets in PANELS for expr, _ in targets for n in metrics_of(expr)
                      if n.startswith("headrace_serve_")}
    assert wanted <= names, f"no such metric in serve's /metrics: {sorted(wanted - names)}"
