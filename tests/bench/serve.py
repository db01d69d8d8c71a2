"""Benchmark of ``headrace serve`` (not a timed test): a view of 1,000,000 rows in PostgreSQL,
read with a typical filtered, paged REST query at fixed offered rates; prints requests/s served,
p50/p99 latency as the client sees it, and the server's own time per request.

    .venv/bin/python -m tests.bench.serve [--rows 1000000] [--rates 200,500] [--seconds 20]

The load generator is open-loop (requests are sent on schedule whether or not earlier ones have
answered, so queueing shows up as latency) and runs on the same 2-core machine as the server and
PostgreSQL; its clock is ``time.perf_counter`` around each request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import psycopg
from headrace.connectors.postgres import ensure_table
from headrace.jobs.catalog import load_catalog
from rich.console import Console
from rich.table import Table

from tests.jobfiles import ROOT
from tests.services import Postgres, free_port

SECRET = "bench-secret-0123456789abcdef0123456789"
console = Console(highlight=False)


def fill(pg: Postgres, table: str, rows: int) -> None:
    tenants, pages = 50, 20
    start = datetime(2026, 1, 1)
    windows = rows // (tenants * pages)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn, conn.cursor().copy(
            f'COPY "{table}" (tenant_id, page, window_start, window_end, events, total_bytes, avg_ms, min_ms, '
            "max_ms, _records) FROM STDIN") as copy:
        for w in range(windows):
            ws = start + timedelta(minutes=w)
            we = ws + timedelta(minutes=1)
            for t in range(tenants):
                for p in range(pages):
                    n = 1 + (w + t + p) % 97
                    copy.write_row((f"t{t}", f"/p{p}", ws, we, n, n * 100, n / 3, 0, n, n))
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'ANALYZE "{table}"')  # type: ignore[arg-type]


async def offered(url: str, rate: int, seconds: float, tokens: list[str]) -> tuple[list[float], int, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def one(i: int) -> None:
            nonlocal errors
            tenant = i % 50
            params = {"page": [f"/p{i % 20}", f"/p{(i + 7) % 20}"], "since": "2026-01-01T10:00:00Z", "limit": 50}
            began = time.perf_counter()
            try:
                answer = await client.get("/v1/views/bench_view", params=params,
                                          headers={"Authorization": f"Bearer {tokens[tenant]}"})
                if answer.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        tasks = []
        total = int(rate * seconds)
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def server_seconds(url: str) -> tuple[float, int]:
    """Sum and count of the server's own request-time histogram."""
    import httpx

    text = httpx.get(f"{url}/metrics").text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("headrace_serve_request_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("headrace_serve_request_seconds_count"):
            count += float(line.split()[-1])
    return total, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rates", default="200,500")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="headrace-bench-serve-"))
    (project / "jobs").mkdir()
    (project / "jobs" / "bench.yaml").write_text(
        (ROOT / "jobs" / "page_activity.yaml").read_text().replace("page_activity_1m", "bench_view")
        .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    pg = Postgres.start()
    server = None
    try:
        view = load_catalog(project).get("bench_view")
        assert view is not None
        ensure_table(pg.conninfo(), view.view)
        console.print(f"loading {args.rows:,} rows …")
        began = time.perf_counter()
        fill(pg, "bench_view", args.rows)
        console.print(f"  {time.perf_counter() - began:.1f}s")
        profiles = project / "profiles.yaml"
        profiles.write_text(
            "profiles:\n  bench:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
            f"    postgres: {{host: 127.0.0.1, port: {pg.port}, database: postgres, user: postgres}}\n"
            f"    serve:\n      auth: {{hs256_secret: '{SECRET}'}}\n")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(project),
                                   "--profile", "bench", "--profiles", str(profiles), "--port", str(port)],
                                  env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        from tests.integration.test_serve import wait_until_serving

        wait_until_serving(port)
        tokens = [jwt.encode({"sub": f"u{t}", "tenant": f"t{t}", "exp": int(time.time()) + 3600}, SECRET,
                             algorithm="HS256") for t in range(50)]
        asyncio.run(offered(url, 50, 3, tokens))  # warm up the pool and the server
        table = Table(title=f"headrace serve: {args.rows:,}-row PostgreSQL view, filtered + paged REST reads "
                            f"({args.seconds:.0f}s each, load generator on the same machine)", title_justify="left")
        for column in ("offered req/s", "served req/s", "errors", "p50 ms", "p99 ms", "server ms/req (mean)"):
            table.add_column(column, justify="right")
        for rate in (int(r) for r in args.rates.split(",")):
            before = server_seconds(url)
            latencies, errors, elapsed = asyncio.run(offered(url, rate, args.seconds, tokens))
            after = server_seconds(url)
            ordered = sorted(latencies)
            server_ms = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1000
            table.add_row(str(rate), f"{len(latencies) / elapsed:,.0f}", str(errors),
                          f"{statistics.median(ordered) * 1000:.1f}", f"{ordered[int(len(ordered) * 0.99)] * 1000:.1f}",
                          f"{server_ms:.1f}")
        console.print(table)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        pg.stop()


if __name__ == "__main__":
    main()
