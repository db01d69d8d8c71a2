"""The new measures, computed by a real job and served: REST, GraphQL and gRPC return each with
its type (percentiles and averages as numbers, first/last as their field's type, top_k as a list
of value/count pairs), equal to what the store holds, and ``headrace query`` prints them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from headrace.connectors.serving.grpcapi import from_row, generated
from headrace.operators.sketches import distinct_count, quantile

from tests.flink.test_sketch_measures import events
from tests.integration.test_serve import wait_until_serving
from tests.jobfiles import ROOT, embedded_view
from tests.services import free_port_pair

pytestmark = pytest.mark.flink
SECRET = "served-measures-secret-0123456789"
MEASURES = ("        lat: percentiles(latency_ms, [0.5, 0.95, 0.99])\n        users: approx_count_distinct(user_id)\n"
            "        first_user: first(user_id)\n        last_ms: last(latency_ms)\n"
            "        top_pages: top_k(page, 3)\n        top_ms: top_k(latency_ms, 2)\n")


def test_rest_graphql_grpc_and_query_serve_the_new_measures_with_their_types(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_TEST_JWT", SECRET)
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "pa.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                   .replace("        max_ms: max(latency_ms)\n", "        max_ms: max(latency_ms)\n" + MEASURES)
                   .replace("      allowed_lateness: 30s", "      allowed_lateness: 30s\n      keep_sketch: true")
                   .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n"
                        "    serve:\n      auth: {hs256_secret: '${HEADRACE_TEST_JWT}'}\n")
    _, stored = embedded_view(job, profiles, events(20_000, seed=9))
    mine = sorted((r for r in stored if r["tenant_id"] == "t1"), key=lambda r: (r["window_start"], r["page"]))
    assert mine
    env = {**os.environ, "HEADRACE_TEST_JWT": SECRET}
    bearer = jwt.encode({"sub": "ana", "tenant": "t1", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {bearer}"}
    port = free_port_pair()
    server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(tmp_path),
                               "--profile", "local", "--profiles", str(profiles), "--port", str(port),
                               "--grpc-port", str(port + 1)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(port, proc=server)
        fields = ("page,window_start,lat_p50,lat_p95,lat_p99,users,first_user,last_ms,top_pages,top_ms,"
                  "latency_ms_dd_sketch,user_id_hll_sketch")
        rest = httpx.get(f"http://127.0.0.1:{port}/v1/views/page_activity_1m",
                         params={"limit": 1000, "sort": "window_start", "fields": fields}, headers=headers).json()
        rows = sorted(rest["rows"], key=lambda r: (r["window_start"], r["page"]))
        assert len(rows) == len(mine)
        for got, want in zip(rows, mine, strict=True):
            assert got["page"] == want["page"]
            assert all(isinstance(got[n], float) and got[n] == want[n] for n in ("lat_p50", "lat_p95", "lat_p99"))
            assert isinstance(got["users"], int) and got["users"] == want["users"]
            assert isinstance(got["first_user"], str) and got["first_user"] == want["first_user"]
            assert isinstance(got["last_ms"], int) and got["last_ms"] == want["last_ms"]
            assert got["top_pages"] == json.loads(want["top_pages"]) and len(got["top_pages"]) <= 3
            assert got["top_ms"] == json.loads(want["top_ms"])
            assert all(isinstance(v["value"], int) and isinstance(v["count"], int) for v in got["top_ms"])
            # the kept sketches, as base64 text: they read back to the measures
            assert quantile(got["latency_ms_dd_sketch"], 0.95) == got["lat_p95"]
            assert distinct_count(got["user_id_hll_sketch"]) == got["users"]

        query = ("{ page_activity_1m(limit: 1000) { rows { page window_start lat_p95 "
                 "first_user last_ms top_pages top_ms } } }")
        answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, headers=headers).json()
        assert "errors" not in answer, answer
        graph = sorted(answer["data"]["page_activity_1m"]["rows"], key=lambda r: (r["window_start"], r["page"]))
        assert graph == [{k: r[k] for k in ("page", "window_start", "lat_p95", "first_user", "last_ms", "top_pages",
                                            "top_ms")} for r in rows]

        messages, services = generated()
        with grpc.insecure_channel(f"127.0.0.1:{port + 1}") as channel:
            reply = services.ViewsStub(channel).Query(
                messages.QueryRequest(view="page_activity_1m", limit=1000, sort="window_start",
                                      fields=fields.split(",")),
                metadata=[("authorization", f"Bearer {bearer}")], timeout=10)
        assert sorted((from_row(r) for r in reply.rows), key=lambda r: (r["window_start"], r["page"])) == rows

        printed = subprocess.run(
            [sys.executable, "-m", "headrace.jobs.cli", "query", "page_activity_1m", "--project", str(tmp_path),
             "--profile", "local", "--profiles", str(profiles), "--limit", "3"],
            env=env, capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0, printed.stderr
        assert " ×" in printed.stdout and "{'value'" not in printed.stdout, printed.stdout
    finally:
        server.terminate()
        server.wait(10)
        output = server.stdout.read().decode() if server.stdout else ""
        assert "Traceback" not in output, output[-3000:]
