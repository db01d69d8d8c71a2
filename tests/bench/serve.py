"""Benchmark of ``headrace serve`` (not a timed test), on one 2-core machine with PostgreSQL and the
load generator beside the server:

1. a view of 1,000,000 rows in PostgreSQL read with a typical filtered, paged query, over REST and
   the equivalent GraphQL query, at fixed offered rates (open loop, ``tests/bench/loadgen.py``):
   requests/s served, p50/p99 latency from each request's scheduled time, and where the time goes
   (CPU seconds per request of the server, PostgreSQL and the load generator, and the server's own
   time per request from its Prometheus histogram);
2. subscription fan-out: 1,000 WebSocket (GraphQL) subscribers on one view; rows upserted the way
   the JDBC sink does; the delay from the row's commit (visible in the store) to its delivery to
   each subscriber.

    .venv/bin/python -m tests.bench.serve [--rows 1000000] [--rates 200,500] [--seconds 20]
                                          [--subscribers 1000] [--updates 20]

Every clock is ``time.perf_counter`` (CLOCK_MONOTONIC, shared by the processes of this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import psycopg
from headrace.connectors.postgres import ensure_table
from headrace.jobs.catalog import load_catalog
from rich.console import Console
from rich.table import Table

from tests.bench.loadgen import get, offer, post
from tests.jobfiles import ROOT
from tests.services import Postgres, free_port

SECRET = "bench-secret-0123456789abcdef0123456789"
TENANTS, PAGES = 50, 20
SINCE = "2026-01-01T10:00:00Z"
console = Console(highlight=False, width=150)
TICK = os.sysconf("SC_CLK_TCK")


def fill(pg: Postgres, table: str, rows: int) -> None:
    start = datetime(2026, 1, 1)
    windows = rows // (TENANTS * PAGES)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn, conn.cursor().copy(
            f'COPY "{table}" (tenant_id, page, window_start, window_end, events, total_bytes, avg_ms, min_ms, '
            "max_ms, _records) FROM STDIN") as copy:
        for w in range(windows):
            ws = start + timedelta(minutes=w)
            we = ws + timedelta(minutes=1)
            for t in range(TENANTS):
                for p in range(PAGES):
                    n = 1 + (w + t + p) % 97
                    copy.write_row((f"t{t}", f"/p{p}", ws, we, n, n * 100, n / 3, 0, n, n))
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{table}"')  # type: ignore[arg-type]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def postgres_pids(pg: Postgres) -> list[int]:
    """The postmaster and its children (backends, background workers)."""
    master = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return pids


def server_seconds(url: str, view: str) -> tuple[float, int]:
    """Sum and count of the server's own request-time histogram for ``view``."""
    import httpx

    total = count = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if f'view="{view}"' not in line:
            continue
        if line.startswith("headrace_serve_request_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("headrace_serve_request_seconds_count"):
            count += float(line.split()[-1])
    return total, int(count)


def workloads(tokens: list[str]) -> dict[str, tuple[str, list[bytes]]]:
    """The same read over REST and GraphQL, for 50 tenants × 20 page pairs."""
    rest, graphql = [], []
    fields = "tenant_id page window_start window_end events total_bytes avg_ms min_ms max_ms"
    for i in range(1000):
        bearer = {"Authorization": f"Bearer {tokens[i % TENANTS]}"}
        pages = [f"/p{i % PAGES}", f"/p{(i + 7) % PAGES}"]
        rest.append(get(f"/v1/views/bench_view?page={pages[0]}&page={pages[1]}&since={SINCE}&limit=50", bearer))
        query = (f'{{ bench_view(where: {{page: {json.dumps(pages)}}}, since: "{SINCE}", limit: 50) '
                 f"{{ rows {{ {fields} }} next_cursor }} }}")
        graphql.append(post("/graphql", {**bearer, "Content-Type": "application/json"},
                            json.dumps({"query": query}).encode()))
    return {"REST": ("bench_view", rest), "GraphQL": ("graphql", graphql)}


def requests_table(url: str, port: int, server_pid: int, pg: Postgres, tokens: list[str], rates: list[int],
                   seconds: float, rows: int) -> Table:
    table = Table(title=f"reads of a {rows:,}-row PostgreSQL view: tenant + 2 pages + since, 50 rows a page "
                        f"({seconds:.0f} s per line; server, PostgreSQL and load generator on the same 2 cores)",
                  title_justify="left")
    for column in ("protocol", "offered/s", "served/s", "not 200", "p50 ms", "p99 ms", "server ms/req",
                   "CPU ms/req: server", "postgres", "load gen"):
        table.add_column(column, justify="right")
    import uvloop

    for protocol, (label, requests) in workloads(tokens).items():
        uvloop.run(offer("127.0.0.1", port, requests, 100, 2))  # warm up
        for rate in rates:
            before = server_seconds(url, label)
            cpu = (cpu_seconds([server_pid]), cpu_seconds(postgres_pids(pg)), resource.getrusage(resource.RUSAGE_SELF))
            result = uvloop.run(offer("127.0.0.1", port, requests, rate, seconds))
            after = server_seconds(url, label)
            me = resource.getrusage(resource.RUSAGE_SELF)
            n = max(len(result.latencies), 1)
            per = lambda s, n=n: f"{s / n * 1000:.2f}"  # noqa: E731
            bad = [f"{c}×{s}" for s, c in sorted(result.statuses.items()) if s != 200]
            bad += [f"{result.errors}×conn"] if result.errors else []
            table.add_row(protocol, str(rate), f"{len(result.latencies) / result.elapsed:,.0f}", " ".join(bad) or "0",
                          f"{result.percentile(0.5) * 1000:.1f}", f"{result.percentile(0.99) * 1000:.1f}",
                          f"{(after[0] - before[0]) / max(after[1] - before[1], 1) * 1000:.2f}",
                          per(cpu_seconds([server_pid]) - cpu[0]), per(cpu_seconds(postgres_pids(pg)) - cpu[1]),
                          per(me.ru_utime + me.ru_stime - cpu[2].ru_utime - cpu[2].ru_stime))
    return table


async def fan_out(url: str, pg: Postgres, bearer: str, subscribers: int, updates: int) -> tuple[list[float], int]:
    """Delays (s) from each upserted row's commit to its arrival at each subscriber."""
    import websockets

    received: list[tuple[str, float]] = []
    query = 'subscription { bench_view(where: {page: ["/p0"]}) { window_start events } }'

    async def subscriber(ready: asyncio.Event, joined: list[int]) -> None:
        async with websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"],
                                      max_queue=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {bearer}"}}))
            await ws.recv()
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            joined.append(1)
            while True:
                message = await ws.recv()
                arrived = time.perf_counter()
                received.append((json.loads(message)["payload"]["data"]["bench_view"]["window_start"], arrived))

    joined: list[int] = []
    ready = asyncio.Event()
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.ensure_future(subscriber(ready, joined)))
        await asyncio.sleep(0.002)
    while len(joined) < subscribers:
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)  # every subscription registered with the hub
    committed: dict[str, float] = {}

    def write() -> None:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            for i in range(updates):
                start = datetime(2027, 1, 1) + timedelta(minutes=i)
                conn.execute(
                    "INSERT INTO bench_view (tenant_id, page, window_start, window_end, events, _records) "
                    "VALUES ('t0', '/p0', %s, %s, %s, %s) ON CONFLICT (tenant_id, page, window_start, window_end) "
                    "DO UPDATE SET events = EXCLUDED.events, _records = EXCLUDED._records",
                    (start, start + timedelta(minutes=1), i, i))
                committed[start.strftime("%Y-%m-%dT%H:%M:%S.000Z")] = time.perf_counter()
                time.sleep(0.5)
    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.perf_counter() + updates * 0.5 + 30
    while (len(received) < subscribers * updates or writer.is_alive()) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    writer.join()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = [arrived - committed[window] for window, arrived in received if window in committed]
    return delays, subscribers * updates - len(delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rates", default="200,500")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
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
            f"    serve:\n      auth: {{hs256_secret: '{SECRET}'}}\n      graphql_max_rows: 100000\n")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "serve", "--project", str(project),
                                   "--profile", "bench", "--profiles", str(profiles), "--port", str(port),
                                   "--grpc-port", "0"],
                                  env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        from tests.integration.test_serve import wait_until_serving

        wait_until_serving(port)
        tokens = [jwt.encode({"sub": f"u{t}", "tenant": f"t{t}", "exp": int(time.time()) + 3600}, SECRET,
                             algorithm="HS256") for t in range(TENANTS)]
        if args.rates:
            console.print(requests_table(url, port, server.pid, pg, tokens, [int(r) for r in args.rates.split(",")],
                                         args.seconds, args.rows))
        if args.subscribers:
            import uvloop

            console.print(f"fan-out: {args.subscribers:,} subscribers, {args.updates} upserts 0.5 s apart …")
            delays, missing = uvloop.run(fan_out(url, pg, tokens[0], args.subscribers, args.updates))
            delays.sort()
            table = Table(title=f"subscription fan-out: {args.subscribers:,} GraphQL WebSocket subscribers on one "
                                "view, delay from the upsert's commit to delivery", title_justify="left")
            for column in ("deliveries", "missing", "p50 ms", "p99 ms", "max ms"):
                table.add_column(column, justify="right")
            pick = lambda q: f"{delays[min(len(delays) - 1, int(len(delays) * q))] * 1000:.0f}"  # noqa: E731
            table.add_row(f"{len(delays):,}", str(missing), pick(0.5), pick(0.99), f"{delays[-1] * 1000:.0f}")
            console.print(table)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        pg.stop()


if __name__ == "__main__":
    main()
