"""Benchmark: the example job through Headrace vs (a) hand-written Flink SQL vs (b) hand-written PyFlink.

    .venv/bin/python -m tests.bench.run [--events 1000000] [--repeat 3] [--rate 2000] [--seconds 30]
        [--only framework,framework-python,framework-avro,framework-proto,sql,datastream]

Throughput: ``--events`` click events (out of order, ~1% invalid, a few late) are pre-loaded into a
tansu broker (2 partitions); each job reads them to the known end offsets at parallelism 2 with
checkpoints every 10 s, writing the per-minute view to PostgreSQL. events/s = events / the time
from the job's RUNNING (the later of its RUNNING timestamp and its last vertex's start time) to its
FINISHED, both on Flink's own clock (the JobMaster's net runtime gives the end; see
``jobs.Clock``), so JVM start, submission and the mini-cluster's shutdown are excluded; Python worker
start-up is included. CPU-s per million events counts every process of the job (JVM and Python
workers, start-up included). Each job runs ``--repeat`` times, interleaved with the others so that a
slow spell of the machine hits them all alike; the table shows the median and the ratios of medians.

``framework`` validates in the JVM (the default for the example's schema); ``framework-python``
is the same spec with ``validate: {engine: python}``, the path for schemas outside the JVM subset.
``framework-avro`` and ``framework-proto`` are jobs/page_activity_avro.yaml and
page_activity_proto.yaml over the same events written by Confluent's Avro and Protobuf serializers
(schemas in ``headrace registry serve``); a record that is not a valid click is written as one
naming an unknown schema id, so each topic has the JSON topic's dead-letter share.

Latency: each job then reads a fresh topic while events are produced live at ``--rate`` per second
for ``--seconds`` with event time = wall clock, in 5 s tumbling windows (1 s out-of-orderness).
PostgreSQL is polled every 50 ms. Per event: produced → its window's row visible (this includes
waiting for the window to close); per window: watermark could close it (end + 1 s) → row visible.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer
from headrace.jobs.sample import click_events
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tests.services import Broker, Postgres, free_port

console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
KINDS = {"framework": "Headrace (jobs/page_activity.yaml)",
         "framework-python": "Headrace, validate: {engine: python}",
         "framework-avro": "Headrace, Avro (Confluent wire format)",
         "framework-proto": "Headrace, Protobuf (Confluent wire format)",
         "sql": "(a) hand-written Flink SQL", "datastream": "(b) hand-written PyFlink DataStream"}
#: the topic each kind reads: the same events, as JSON or in a binary format
TOPICS = {"framework-avro": "bench-avro", "framework-proto": "bench-proto"}


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.loads(response.read())


@dataclass
class Run:
    """One job's run: seconds from RUNNING (its last vertex started) to FINISHED on Flink's own
    clock, the CPU seconds of all its processes, the exit code."""

    seconds: float
    cpu_s: float
    code: int


def flink_seconds(output: list[str]) -> float:
    """Running time from the job process's ``BENCH_CLOCK`` line: FINISHED (INITIALIZING + the
    JobMaster's net runtime) minus the later of RUNNING and the last vertex's start."""
    line = next((x for x in reversed(output) if x.startswith("BENCH_CLOCK ")), None)
    if line is None:
        return math.nan
    clock = json.loads(line.split(" ", 1)[1])
    stamps = clock.get("timestamps") or {}
    start = max([stamps.get("RUNNING", 0), *clock.get("vertex_starts", [])])
    begun = stamps.get("INITIALIZING") or stamps.get("CREATED")
    if not begun or not start:
        return math.nan
    return (begun + clock["net_runtime_ms"] - start) / 1000


def run_job(kind: str, settings: dict[str, Any], on_running: Any = None) -> Run:
    """Run one job to completion, in its own process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.jobs", kind, json.dumps(settings)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    port, t_running = settings["rest_port"], math.nan
    while proc.poll() is None and math.isnan(t_running):
        try:
            for job in _get(port, "/jobs/overview")["jobs"]:
                detail = _get(port, f"/jobs/{job['jid']}")
                if detail["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in detail["vertices"]):
                    t_running = time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)
    if on_running is not None and proc.poll() is None:
        on_running()
    proc.wait()
    reader.join(5)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        console.print("".join(output[-40:]), markup=False)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    clock = next((x for x in reversed(output) if x.startswith("BENCH_CLOCK ")), None)
    if clock is not None:  # the job's process tree, JVM and Python workers included
        cpu = float(json.loads(clock.split(" ", 1)[1]).get("cpu_s", cpu))
    return Run(flink_seconds(output), cpu, proc.returncode)


def create_view_table(pg: Postgres, table: str) -> None:
    """The hand-written jobs expect their table: Headrace's columns, without its bookkeeping
    (``_records`` and the guard against smaller recounts), which they do not write."""
    from headrace.connectors.postgres import create_sql
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.schemas.views import RECORDS_COLUMN

    view = build_plan(parse_job(Path("jobs/page_activity.yaml"))).sinks[0].view
    plain = type(view)(name=table, keys=view.keys, measures=view.measures)
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(create_sql(plain))  # type: ignore[arg-type]
        conn.execute(f'ALTER TABLE "{table}" DROP COLUMN "{RECORDS_COLUMN}"')  # type: ignore[arg-type]


def view_totals(pg: Postgres, table: str) -> tuple[int, int]:
    with psycopg.connect(**pg.conninfo()) as conn:
        rows, events = conn.execute(f'SELECT count(*), coalesce(sum(events), 0) FROM "{table}"').fetchone()
    return int(rows), int(events)


def preload(broker: Broker, topic: str, events: int, encode: Any = None) -> dict[int, int]:
    """The sample click events into ``topic`` (2 partitions), each payload through ``encode``
    (default: as it is, JSON); returns each partition's end offset."""
    broker.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random"})
    ends = {0: 0, 1: 0}

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"pre-loading {events:,} events into '{topic}'", total=events)
        for i, e in enumerate(click_events(events, seed=1)):
            value = e.payload if encode is None else encode(e.payload)
            while True:
                try:
                    producer.produce(topic, value, key=e.key, timestamp=e.timestamp_ms, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            if i % 20_000 == 0:
                producer.poll(0)
                progress.update(task, completed=i)
        producer.flush(120)
    return ends


def binary_encoder(topic: str, registry: str) -> Any:
    """JSON payload -> the record Confluent's Avro or Protobuf serializer (by the topic's name)
    writes; a payload that is not a valid click (~1%) becomes a record naming an unknown schema
    id, so that the dead-letter path carries the JSON topic's share."""
    import jsonschema_rs
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.serialization import MessageField, SerializationContext

    root = Path(__file__).resolve().parents[2]
    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext(topic, MessageField.VALUE)
    check = jsonschema_rs.validator_for(json.loads((root / "schemas" / "click.schema.json").read_text()))
    if topic == "bench-avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer

        avro = AvroSerializer(client, (root / "schemas" / "click.avsc").read_text())
        write = lambda r: avro({**r, "bytes": r.get("bytes"), "email": r.get("email")}, context)  # noqa: E731
    else:
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

        from tests.bench.decode import click_pb2

        pb2 = click_pb2()
        proto = ProtobufSerializer(pb2.Click, client, {"use.deprecated.format": False})
        write = lambda r: proto(pb2.Click(**r), context)  # noqa: E731

    def encode(payload: bytes) -> bytes:
        try:
            record = json.loads(payload)
            if isinstance(record, dict) and check.is_valid(record):
                return bytes(write(record))
        except (ValueError, TypeError):
            pass
        return b"\x00\x7f\xff\xff\xff" + payload[:100]  # an id no registry has

    return encode


def latency_run(kind: str, broker: Broker, pg: Postgres, base: dict[str, Any],
                rate: int, seconds: int) -> dict[str, float]:
    topic = table = f"lat_{kind.replace('-', '_')}"
    broker.create_topic(topic, partitions=2)
    if not kind.startswith("framework"):
        create_view_table(pg, table)
    total = rate * seconds
    offsets = {0: (total + 1) // 2, 1: total // 2}
    settings = {**base, "topic": topic, "table": table, "group": f"{kind}-lat", "offsets": offsets,
                "window_s": 5, "ooo_s": 1, "rest_port": free_port()}
    produced: list[tuple[float, tuple[str, str, int]]] = []
    seen: dict[tuple[str, str, int], float] = {}
    stop = threading.Event()

    def poll_pg() -> None:
        with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                try:
                    rows = conn.execute(f'SELECT tenant_id, page, (extract(epoch from window_start) * 1000)::bigint '
                                        f'FROM "{table}"').fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = []
                except psycopg.OperationalError:
                    return
                now = time.time()
                for r in rows:
                    seen.setdefault((r[0], r[1], int(r[2])), now)
                time.sleep(0.05)

    def produce_live() -> None:
        time.sleep(2.0)  # let the Python workers finish starting
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})
        pages = ["/", "/pricing", "/docs", "/blog", "/signup", "/checkout"]
        t0 = time.time()
        for i in range(total):
            target = t0 + i / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            ts = int(now * 1000)
            tenant, page = f"tenant-{i % 4}", pages[(i // 4) % len(pages)]
            body = json.dumps({"tenant_id": tenant, "user_id": f"u{i % 300}", "page": page, "ts": ts,
                               "latency_ms": i % 500, "bytes": 1000 + i % 7000}).encode()
            producer.produce(topic, body, key=tenant.encode(), partition=i % 2, timestamp=ts)
            producer.poll(0)
            produced.append((now, (tenant, page, ts - ts % 5000)))
        producer.flush(30)

    poller = threading.Thread(target=poll_pg, daemon=True)
    poller.start()
    producer_thread = threading.Thread(target=produce_live, daemon=True)
    code = run_job(kind, settings, on_running=producer_thread.start).code
    if producer_thread.ident is not None:
        producer_thread.join()
    time.sleep(1.0)
    stop.set()
    poller.join()
    if code != 0 or not produced:
        return {"p50": math.nan, "p99": math.nan, "close_p50": math.nan, "close_p99": math.nan}
    # windows still open when input ended are closed by end-of-input, not by the watermark: skip them
    last_ts = max(w for _, (_, _, w) in produced)
    lat = [seen[w] - t for t, w in produced if w[2] < last_ts - 5000 and w in seen]
    windows = {w for _, w in produced if w[2] < last_ts - 5000 and w in seen}
    close = [seen[w] - (w[2] + 5000 + 1000) / 1000 for w in windows]
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else math.nan  # noqa: E731
    return {"p50": q(lat, 50), "p99": q(lat, 99), "close_p50": q(close, 50), "close_p99": q(close, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=2000, help="events/s in the latency run")
    parser.add_argument("--seconds", type=int, default=30, help="length of the latency run")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per job (median shown)")
    parser.add_argument("--only", default="framework,framework-python,framework-avro,framework-proto,sql,datastream")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    results: dict[str, dict[str, Any]] = {k: {} for k in kinds}
    broker, pg = Broker.start(), Postgres.start()
    workdir = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    registry_port = free_port()
    registry = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port",
                                 str(registry_port), "--store", str(workdir / "registry.sqlite")])
    try:
        from tests.services import _wait_port

        _wait_port(registry_port, registry, "headrace registry serve")  # type: ignore[arg-type]
        url = f"http://127.0.0.1:{registry_port}"
        ends_of = {"bench": preload(broker, "bench", args.events)}
        for kind in kinds:
            if kind in TOPICS:
                ends_of[TOPICS[kind]] = preload(broker, TOPICS[kind], args.events, binary_encoder(TOPICS[kind], url))
        ends = ends_of["bench"]
        console.print(f"pre-loaded {sum(ends.values()):,} events (partitions: {ends})")
        base = {"bootstrap": broker.bootstrap, "pg_port": pg.port, "workdir": str(workdir), "registry": url}
        runs: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        for attempt in range(1, args.repeat + 1):
            for kind in kinds:
                table = f"tp_{kind.replace('-', '_')}_{attempt}"
                topic = TOPICS.get(kind, "bench")
                settings = {**base, "topic": topic, "table": table, "group": f"{kind}-tp{attempt}",
                            "offsets": ends_of[topic], "window_s": 60, "ooo_s": 5, "rest_port": free_port()}
                if not kind.startswith("framework"):
                    create_view_table(pg, table)
                console.print(f"throughput {attempt}/{args.repeat}: {KINDS[kind]} …")
                run = run_job(kind, settings)
                code, seconds = run.code, run.seconds
                rows, aggregated = view_totals(pg, table) if code == 0 else (0, 0)
                runs[kind].append(args.events / seconds if code == 0 else math.nan)
                cpu[kind].append(run.cpu_s / args.events * 1e6 if code == 0 else math.nan)
                results[kind].update(events_per_s=statistics.median(runs[kind]), runs=runs[kind],
                                     cpu_per_m=statistics.median(cpu[kind]), cpu_runs=cpu[kind],
                                     rows=rows, aggregated=aggregated, exit=code)
                console.print(f"  {runs[kind][-1]:,.0f} events/s ({seconds:.1f}s running on Flink's clock, "
                              f"{run.cpu_s:.0f} CPU-s; {rows:,} rows, {aggregated:,} events aggregated)")
        for kind in kinds:
            if kind in TOPICS or args.seconds <= 0:  # the live producer writes JSON
                results[kind].update(p50=math.nan, p99=math.nan, close_p50=math.nan, close_p99=math.nan)
                continue
            console.print(f"latency: {KINDS[kind]} at {args.rate:,} events/s for {args.seconds}s …")
            results[kind].update(latency_run(kind, broker, pg, base, args.rate, args.seconds))
    finally:
        registry.terminate()
        pg.stop()
        broker.stop()

    table = Table(title=f"page-activity: {args.events:,} events, parallelism 2, checkpoints every 10 s; "
                        f"events/s is the median of {args.repeat} runs",
                  title_justify="left")
    for col in ("job", "events/s", "runs", "CPU-s per M events", "× (a) SQL", "× (b) DataStream",
                "× Headrace JSON", "rows", "event→row p50", "p99", "window close→row p50", "p99"):
        table.add_column(col, justify="left" if col == "job" else "right")
    ref_sql = results.get("sql", {}).get("events_per_s", math.nan)
    ref_ds = results.get("datastream", {}).get("events_per_s", math.nan)
    ref_json = results.get("framework", {}).get("events_per_s", math.nan)
    seconds = lambda x: "–" if math.isnan(x) else f"{x:.2f}s"  # noqa: E731
    for kind in kinds:
        r = results[kind]
        eps = r.get("events_per_s", math.nan)
        table.add_row(KINDS[kind], f"{eps:,.0f}", " ".join(f"{x / 1000:.0f}k" for x in r.get("runs", [])),
                      f"{r.get('cpu_per_m', math.nan):.0f}", f"{eps / ref_sql:.2f}", f"{eps / ref_ds:.2f}",
                      f"{eps / ref_json:.2f}", f"{r.get('rows', 0):,}",
                      seconds(r["p50"]), seconds(r["p99"]), seconds(r["close_p50"]), seconds(r["close_p99"]))
    console.print(table)
    out = Path(".headrace/bench/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"events": args.events, "rate": args.rate, "results": results}, indent=2))
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
