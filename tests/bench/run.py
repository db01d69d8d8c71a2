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
PostgreSQL is polled every 10 ms. Per event: produced → its window's row visible (this includes
waiting for the window to close); per window: watermark could close it (end + 1 s) → row visible;
then, alone, records produced the same way and read by a plain consumer with the fetch settings
of Flink's Kafka source, produced → received: the broker's share of both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
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
         "framework-jdk-jit": "Headrace, with Java's own JIT thresholds",
         "framework-kept": "Headrace, the same job started again (its plan kept)",
         "sql": "(a) hand-written Flink SQL", "sql-tvf": "(a′) hand-written Flink SQL, window TVF, two-phase",
         "sql-tvf-jit": "(a′) with Headrace's JIT thresholds",
         "datastream": "(b) hand-written PyFlink DataStream",
         "framework-enrich": "Headrace + enrich (Zipf users, PostgreSQL via L1/L2; JVM engine)",
         "framework-enrich-python": "Headrace + enrich, the Python engine",
         "framework-state": "Headrace, state of many keys", "framework-l0": "Headrace, allowed_lateness 0",
         "sql-state": "(a) SQL, state of many keys",
         "framework-sketch": "Headrace + p95 (DDSketch) + approx. distinct users (HLL)",
         "framework-distinct": "Headrace + exact distinct users"}
#: the table's job column: a few words each, so that the table fits a terminal; its legend gives KINDS
SHORT = {"framework": "Headrace", "framework-python": "Headrace, Python", "framework-avro": "Headrace, Avro",
         "framework-proto": "Headrace, Protobuf", "framework-jdk-jit": "Headrace, Java's JIT",
         "framework-kept": "Headrace, kept plan", "sql": "(a)", "sql-tvf": "(a′)", "sql-tvf-jit": "(a′)-JIT",
         "datastream": "(b)", "framework-enrich": "+ enrich, JVM", "framework-enrich-python": "+ enrich, Python",
         "framework-state": "Headrace, keys", "framework-l0": "Headrace, lateness 0", "sql-state": "(a), keys",
         "framework-sketch": "+ p95, HLL", "framework-distinct": "+ distinct"}
#: the JVM threads PyFlink's gateway runs (``Thread-N``): they plan the job, the same work in every run
#: of a kind, so the spread of their CPU between runs of one kind is the machine's, not the job's
GATEWAY = "Thread-"
#: kinds whose runs are one job started again and again (same table, group and plan), each from the
#: topic's start: Headrace plans it on its first start and loads the plan it kept after that
RESTARTED = ("framework-kept",)
#: the topic each kind reads: the same events, as JSON or in a binary format
TOPICS = {"framework-avro": "bench-avro", "framework-proto": "bench-proto"}


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.loads(response.read())


@dataclass
class Run:
    """One job's run: seconds from RUNNING (its last vertex started) to FINISHED on Flink's own
    clock, the CPU seconds and the peak resident memory of all its processes, the largest full
    state size of its completed checkpoints, the exit code, and what it printed."""

    seconds: float
    cpu_s: float
    code: int
    peak_rss: int = 0
    state_bytes: int = 0
    output: tuple[str, ...] = ()
    checkpoints: tuple[tuple[int, int], ...] = ()  # completed ones: (triggered, last ack), ms of the wall clock
    running_cpu_s: float = math.nan  # CPU-s of all its processes while it ran (the same window as ``seconds``)


def flink_seconds(output: list[str]) -> float:
    """Running time from the job process's ``BENCH_CLOCK`` line: FINISHED (INITIALIZING + the
    JobMaster's net runtime) minus the later of RUNNING and the last vertex's start."""
    from tests.bench.jobs import running_window

    line = next((x for x in reversed(output) if x.startswith("BENCH_CLOCK ")), None)
    if line is None:
        return math.nan
    clock = json.loads(line.split(" ", 1)[1])
    window = running_window(clock, clock["net_runtime_ms"])
    return (window[1] - window[0]) / 1000 if window else math.nan


def run_job(kind: str, settings: dict[str, Any], on_running: Any = None) -> Run:
    """Run one job to completion, in its own process."""
    for _ in range(3):  # a planning failure before the job starts is not a measurement: run again
        run = _run_job_once(kind, settings, on_running)
        if run.code == 0 or not any("metadataHandlerProvider" in line for line in run.output):
            return run
        console.print("  (Flink's planner failed before the job started: NullPointerException "
                      "metadataHandlerProvider; running it again)")
    return run


def _run_job_once(kind: str, settings: dict[str, Any], on_running: Any = None) -> Run:
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
    if proc.returncode != 0:  # the causes first (a Java trace's top lines scroll out of its tail)
        causes = [x for x in output if not x.lstrip().startswith("at ") and ("Exception" in x or "Error" in x)]
        console.print("".join(causes[:8] + ["...\n"] + output[-15:]), markup=False)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in reversed(output) if x.startswith("BENCH_CLOCK ")), None)
    clock = json.loads(line.split(" ", 1)[1]) if line is not None else {}
    # the job's process tree, JVM and Python workers included
    return Run(flink_seconds(output), float(clock.get("cpu_s", cpu)), proc.returncode,
               int(clock.get("peak_rss", 0)), int(clock.get("state_bytes", 0)), tuple(output),
               tuple((int(a), int(b)) for a, b in clock.get("checkpoints", [])),
               math.nan if clock.get("running_cpu_s") is None else float(clock["running_cpu_s"]))


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


def drop_table(pg: Postgres, table: str) -> None:
    with psycopg.connect(**pg.conninfo()) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def view_totals(pg: Postgres, table: str) -> tuple[int, int]:
    with psycopg.connect(**pg.conninfo()) as conn:
        rows, events = conn.execute(f'SELECT count(*), coalesce(sum(events), 0) FROM "{table}"').fetchone()
    return int(rows), int(events)


def preload(broker: Broker, topic: str, events: int, encode: Any = None, source: Any = None) -> dict[int, int]:
    """The sample click events (or ``source``'s) into ``topic`` (2 partitions), each payload
    through ``encode`` (default: as it is, JSON); returns each partition's end offset."""
    broker.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random"})
    ends = {0: 0, 1: 0}

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"pre-loading {events:,} events into '{topic}'", total=events)
        for i, e in enumerate(source if source is not None else click_events(events, seed=1)):
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


#: the live producers' linger: librdkafka's default (and the Java client's since Kafka 4.0). With 0,
#: every record was a batch of its own, and tansu lists every batch of a partition on each fetch,
#: so its fetches slowed as the run went on (at a 50 ms fetch wait the job fell seconds behind in
#: 30 s): a load no batching producer puts on a broker.
LIVE_LINGER_MS = 5


def latency_run(kind: str, broker: Broker, pg: Postgres, base: dict[str, Any],
                rate: int, seconds: int, read_probe: bool = False) -> dict[str, Any]:
    """Events produced live at ``rate`` per second with event time = the wall clock, into 5 s
    windows with 1 s of out-of-orderness, two partitions written alternately; PostgreSQL polled
    every 10 ms. Per event: produced → its window's row visible. Per window: the moment the
    watermark passes its end (the later partition's first event at or past end + 1 s was
    produced: from then on the source's per-partition watermarks allow the window to fire)
    → its row visible; with ``read_probe``, also the same from when a plain consumer beside the
    job, with the source's fetch settings, received that event (the broker's trip taken out, as
    near as one reader can tell when another one read it: measured, it can be off by 100 ms either
    way, and the second reader doubles tansu's fetch load, which slows its delivery to the job).
    All times are this process's clock."""
    topic = table = f"lat_{kind.replace('-', '_')}"
    broker.create_topic(topic, partitions=2)
    if not kind.startswith("framework"):
        create_view_table(pg, table)
    total = rate * seconds
    offsets = {0: (total + 1) // 2, 1: total // 2}
    settings = {**base, "topic": topic, "table": table, "group": f"{kind}-lat", "offsets": offsets,
                "window_s": 5, "ooo_s": 1, "rest_port": free_port(), "parallelism": 2}
    produced: list[tuple[float, tuple[str, str, int]]] = []
    passing: dict[tuple[int, int], float] = {}  # (partition, window end) -> first event at or past end + ooo
    passing_offset: dict[tuple[int, int], int] = {}  # … and that event's offset in its partition
    received: dict[tuple[int, int], float] = {}  # (partition, offset) -> received by the probe
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
                time.sleep(0.01)

    def produce_live() -> None:
        time.sleep(2.0)  # let the Python workers finish starting
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": LIVE_LINGER_MS})
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
            while True:
                try:
                    producer.produce(topic, body, key=tenant.encode(), partition=i % 2, timestamp=ts)
                    break
                except BufferError:  # the broker is 100,000 records behind: wait for it, do not die
                    producer.poll(0.05)  # (a producer thread that died left the job waiting for ever)
            producer.poll(0)
            produced.append((now, (tenant, page, ts - ts % 5000)))
            end = (ts - 1000) - (ts - 1000) % 5000  # the latest window end this event's partition passes
            passing.setdefault((i % 2, end), now)
            passing_offset.setdefault((i % 2, end), i // 2)
        producer.flush(30)

    def probe() -> None:
        consumer = source_like_reader(broker, topic)
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                received[(message.partition(), message.offset())] = time.time()
        consumer.close()

    poller = threading.Thread(target=poll_pg, daemon=True)
    poller.start()
    reader = threading.Thread(target=probe, daemon=True) if read_probe else None
    if reader is not None:
        reader.start()
    producer_thread = threading.Thread(target=produce_live, daemon=True)
    traces = Path(tempfile.mkdtemp(prefix="headrace-watermarks-"))
    os.environ["HEADRACE_TRACE_WATERMARKS"] = str(traces)  # Headrace's source notes its watermarks
    try:
        run = run_job(kind, settings, on_running=producer_thread.start)
        code = run.code
    finally:
        os.environ.pop("HEADRACE_TRACE_WATERMARKS", None)
    if producer_thread.ident is not None:
        producer_thread.join()
    time.sleep(1.0)
    stop.set()
    poller.join()
    if reader is not None:
        reader.join(10)
    nothing = {"p50": math.nan, "p99": math.nan, "close_p50": math.nan, "close_p99": math.nan,
               "read_p50": math.nan, "read_p99": math.nan, "wm_p50": math.nan, "wm_p99": math.nan,
               "event_to_row": [], "close_to_row": [], "read_to_row": [], "watermark_to_row": [], "windows": []}
    passed = watermark_passes(traces)
    shutil.rmtree(traces, ignore_errors=True)
    if code != 0 or not produced:
        return nothing
    # windows still open when input ended are closed by end-of-input, not by the watermark: skip them
    last_ts = max(w for _, (_, _, w) in produced)
    lat = [seen[w] - t for t, w in produced if w[2] < last_ts - 5000 and w in seen]
    close, read, after_watermark = [], [], []
    slowest: dict[int, float] = {}  # window end -> its last row's watermark -> row
    for w in {w for _, w in produced if w[2] < last_ts - 5000 and w in seen}:
        end = w[2] + 5000
        if end in passed:
            after_watermark.append(seen[w] - passed[end])
            slowest[end] = max(slowest.get(end, 0.0), seen[w] - passed[end])
        moments = [passing.get((p, end)) for p in (0, 1)]
        if all(m is not None for m in moments):
            close.append(seen[w] - max(m for m in moments if m is not None))
        reads = [received.get((p, passing_offset.get((p, end), -1))) for p in (0, 1)]
        if all(r is not None for r in reads):
            read.append(seen[w] - max(r for r in reads if r is not None))
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else math.nan  # noqa: E731
    return {"p50": q(lat, 50), "p99": q(lat, 99), "close_p50": q(close, 50), "close_p99": q(close, 99),
            "read_p50": q(read, 50), "read_p99": q(read, 99),
            "wm_p50": q(after_watermark, 50), "wm_p99": q(after_watermark, 99),
            "event_to_row": lat, "close_to_row": close, "read_to_row": read, "watermark_to_row": after_watermark,
            "windows": window_checkpoints(slowest, passed, run.checkpoints)}


def window_checkpoints(slowest: dict[int, float], passed: dict[int, float],
                       checkpoints: tuple[tuple[int, int], ...]) -> list[tuple[int, float, bool, float]]:
    """Per window (end ms): its slowest row's watermark → row (s), whether a checkpoint was
    running (triggered before the row was visible, last acknowledged after the watermark passed),
    and when the watermark passed (wall clock, s)."""
    windows = []
    for end, took in sorted(slowest.items()):
        start, visible = passed[end] * 1000, (passed[end] + took) * 1000
        windows.append((end, took, any(t <= visible and a >= start for t, a in checkpoints), passed[end]))
    return windows


def checkpoint_line(windows: list[tuple[int, float, bool, float]], limit: float = 0.2) -> str:
    """How many windows took longer than ``limit`` and how many of those met a checkpoint."""
    slow = [w for w in windows if w[1] > limit]
    met = [w[1] for w in windows if w[2]]
    others = [w[1] for w in windows if not w[2]]
    first = windows[0][1] * 1000 if windows else math.nan
    return (f"{len(slow)} of {len(windows)} windows over {limit * 1000:.0f} ms (watermark→last row; the first "
            f"{first:,.0f} ms), "
            f"{sum(1 for w in slow if w[2])} of them during a checkpoint; "
            f"{len(met)} windows met a checkpoint: slowest {max(met, default=math.nan) * 1000:,.0f} ms, "
            f"the others' slowest {max(others, default=math.nan) * 1000:,.0f} ms")


def watermark_passes(traces: Path, window_ms: int = 5000) -> dict[int, float]:
    """Window end (ms) → the wall-clock moment (s) the job's watermark passed it: when the last of
    the source's subtasks passed on a watermark ≥ end − 1 (a window [start, end) fires at
    end − 1), from the traces ``HEADRACE_TRACE_WATERMARKS`` has Headrace's source write (the
    hand-written jobs write none). Flink's clock and this process's are the same system clock."""
    firsts: dict[int, list[tuple[int, float]]] = {}  # subtask -> [(watermark, wall s)], ascending
    for file in traces.glob("watermarks-*.tsv"):
        for line in file.read_text().splitlines():
            subtask, watermark, wall = (int(x) for x in line.split("\t"))
            firsts.setdefault(subtask, []).append((watermark, wall / 1000))
    if not firsts:
        return {}
    ends = sorted({(w + 1) - (w + 1) % window_ms for marks in firsts.values() for w, _ in marks if w >= window_ms - 1})
    passes: dict[int, float] = {}
    ordered = [sorted(marks) for marks in firsts.values()]
    for end in ends:
        moments = [next((t for w, t in marks if w >= end - 1), None) for marks in ordered]
        if all(m is not None for m in moments):
            passes[end] = max(m for m in moments if m is not None)
    return passes


def source_like_reader(broker: Broker, topic: str) -> Any:
    """A plain consumer of ``topic``'s partitions 0 and 1 from offset 0, with the fetch settings of
    Headrace's Kafka source (fetch.max.wait.ms 50, fetch.min.bytes 1) and its partitions assigned
    as Flink's source assigns them (no consumer group to join first)."""
    from confluent_kafka import Consumer, TopicPartition
    from headrace.connectors.kafka import FETCH_MAX_WAIT_MS

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-probe",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.wait.max.ms": FETCH_MAX_WAIT_MS, "fetch.min.bytes": 1})
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    return consumer


def broker_delivery(broker: Broker, rate: int, seconds: int) -> dict[str, float]:
    """The broker's share of the latency, alone: records produced live at ``rate`` (as the
    latency run produces them) and read by :func:`source_like_reader`; produced → received.
    Producing starts once the consumer has fetched."""
    topic = "lat_broker_probe"
    broker.create_topic(topic, partitions=2)
    delivered: list[float] = []
    stop, reading = threading.Event(), threading.Event()

    def consume() -> None:
        consumer = source_like_reader(broker, topic)
        consumer.poll(1.0)
        reading.set()
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                delivered.append(time.time() - json.loads(message.value())["sent"])
        consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reading.wait(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": LIVE_LINGER_MS})
    t0 = time.time()
    for i in range(rate * seconds):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, json.dumps({"sent": time.time(), "i": i}).encode(), partition=i % 2)
        producer.poll(0)
    producer.flush(30)
    time.sleep(2.0)
    stop.set()
    reader.join(10)
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else math.nan  # noqa: E731
    return {"p50": q(delivered, 50), "p99": q(delivered, 99), "received": len(delivered)}


def zipf_users(events: int, users: int = 1_000_000, s: float = 1.1, seed: int = 3) -> Iterator[Any]:
    """The sample click events with user ids drawn from a Zipf distribution (exponent ``s``) over
    ``users`` ids: a few users make most of the clicks, as on a real site."""
    import numpy as np
    from headrace.jobs.sample import SampleEvent

    weights = np.arange(1, users + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(weights) / weights.sum()
    ranks = np.searchsorted(cdf, np.random.default_rng(seed).random(events))
    for event, rank in zip(click_events(events, seed=1), ranks, strict=True):
        if event.kind == "invalid":
            yield event
            continue
        record = json.loads(event.payload)
        record["user_id"] = f"u{int(rank)}"
        yield SampleEvent(key=event.key, payload=json.dumps(record).encode(), timestamp_ms=event.timestamp_ms,
                          kind=event.kind)


def distinct_pairs(events: int) -> int:
    """The most distinct (tenant, page, user) of any hour of :func:`zipf_users` (valid records)."""
    hours: dict[int, set[tuple[str, str, str]]] = {}
    for event in zipf_users(events):
        if event.kind == "valid":
            r = json.loads(event.payload)
            hours.setdefault(r["ts"] // 3_600_000, set()).add((r["tenant_id"], r["page"], r["user_id"]))
    return max((len(v) for v in hours.values()), default=0)


def load_users(pg: Postgres, table: str, users: int = 1_000_000) -> None:
    """The enrich step's PostgreSQL table: ``users`` rows (id, country, plan), with its key indexed."""
    countries, plans = ["DE", "FR", "US", "BR", "JP", "IN", "NG", "SE"], ["free", "team", "enterprise"]
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (id text PRIMARY KEY, country text, plan text)')
        with conn.cursor().copy(f'COPY "{table}" (id, country, plan) FROM STDIN') as copy:
            for k in range(users):
                copy.write_row((f"u{k}", countries[k % len(countries)], plans[k % len(plans)]))


@dataclass
class Cell:
    """One job at one parallelism: every run's events/s and CPU-s per million events."""

    kind: str
    parallelism: int
    events: int
    rates: list[float]
    cpu: list[float]
    rows: int = 0
    aggregated: int = 0
    peak_rss: int = 0
    state_bytes: int = 0
    note: str = ""
    gateway: list[float] = field(default_factory=list)  # each run's gateway-thread CPU-s (HEADRACE_BENCH_THREADS=1)
    running: list[float] = field(default_factory=list)  # each run's CPU-s per M events while it ran

    @property
    def running_per_m(self) -> float:
        return _median(self.running)

    @property
    def rate(self) -> float:
        return _median(self.rates)

    @property
    def cpu_per_m(self) -> float:
        return _median(self.cpu)

    def spread(self, values: list[float]) -> str:
        good = [v for v in values if not math.isnan(v)]
        if len(good) < 2:
            return "–"
        return f"±{(max(good) - min(good)) / 2 / statistics.median(good) * 100:.0f}%"


def _median(values: list[float]) -> float:
    """The median of the runs that finished (a failed run's figure is NaN)."""
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def throughput(cells: dict[tuple[str, int], Cell], kinds: list[str], parallelisms: list[int], repeat: int,
               ends_of: dict[str, dict[int, int]], base: dict[str, Any], pg: Postgres, events: int,
               topic_of: dict[str, str], label: str = "tp", overrides: dict[str, Any] | None = None) -> None:
    """``repeat`` rounds; in each, every job at every parallelism, interleaved, so that a slow
    spell of the machine hits them all alike."""
    for attempt in range(1, repeat + 1):
        for parallelism in parallelisms:
            for kind in kinds:
                again = kind in RESTARTED  # one job, started again: its table, its group and its kept plan
                table = f"{label}_{kind.replace('-', '_')}_p{parallelism}" + ("" if again else f"_{attempt}")
                group = f"{kind}-{label}{parallelism}" + ("" if again else f"-{attempt}")
                if again:
                    drop_table(pg, table)
                topic = topic_of.get(kind, "bench")
                settings = {**base, "topic": topic, "table": table, "group": group,
                            "offsets": ends_of[topic], "window_s": 60, "ooo_s": 5, "rest_port": free_port(),
                            "parallelism": parallelism, **(overrides or {})}
                if not kind.startswith("framework"):
                    create_view_table(pg, table)
                console.print(f"{label} {attempt}/{repeat}, parallelism {parallelism}: {KINDS[kind]} …")
                run = run_job(kind, settings)
                rows, aggregated = view_totals(pg, table) if run.code == 0 else (0, 0)
                cell = cells.setdefault((kind, parallelism), Cell(kind, parallelism, events, [], []))
                cell.rates.append(events / run.seconds if run.code == 0 else math.nan)
                cell.cpu.append(run.cpu_s / events * 1e6 if run.code == 0 else math.nan)
                cell.running.append(run.running_cpu_s / events * 1e6 if run.code == 0 else math.nan)
                cell.rows, cell.aggregated = rows, aggregated
                cell.peak_rss = max(cell.peak_rss, run.peak_rss)
                cell.state_bytes = max(cell.state_bytes, run.state_bytes)
                stats = next((x for x in reversed(run.output) if x.startswith("BENCH_LOOKUPS ")), None)
                if stats is not None:
                    cell.note = stats.split(" ", 1)[1].strip()
                console.print(f"  {cell.rates[-1]:,.0f} events/s ({run.seconds:.1f}s running on Flink's clock, "
                              f"{run.cpu_s:.0f} CPU-s, {run.running_cpu_s:.0f} of them while it ran, "
                              f"peak RSS {run.peak_rss / 2**20:,.0f} MiB; {rows:,} rows, "
                              f"{aggregated:,} events aggregated){' ' + cell.note if cell.note else ''}")
                threads = next((x for x in reversed(run.output) if x.startswith("BENCH_THREADS ")), None)
                if threads is not None:  # HEADRACE_BENCH_THREADS=1: CPU-s by thread, the largest
                    groups = json.loads(threads.split(" ", 1)[1])
                    if GATEWAY in groups:
                        cell.gateway.append(groups[GATEWAY])
                    top = list(groups.items())[:14]
                    console.print("  CPU-s by thread: " + ", ".join(f"{k} {v:.1f}" for k, v in top), markup=False)


def baselines(cells: dict[tuple[str, int], Cell], parallelism: int) -> list[Cell]:
    """The hand-written SQL baselines measured at ``parallelism``: (a), (a′), and (a′) in a JVM with
    the JIT thresholds Headrace's JVMs have, which a hand-written job can set too."""
    found = [cells[(k, parallelism)] for k in ("sql", "sql-tvf", "sql-tvf-jit") if (k, parallelism) in cells]
    return [c for c in found if not math.isnan(c.rate)]


def stronger(cells: dict[tuple[str, int], Cell], parallelism: int) -> Cell | None:
    """The fastest baseline at ``parallelism``, by median events/s: the one the issue's ratios are to."""
    found = baselines(cells, parallelism)
    return max(found, key=lambda c: c.rate) if found else None


def leanest(cells: dict[tuple[str, int], Cell], parallelism: int, running: bool = False) -> Cell | None:
    """The baseline with the least CPU per event at ``parallelism`` (``running``: while it ran). It
    need not be the fastest: on 2026-12-07 (a′) was fastest at p1 by events/s and (a′)-JIT took
    14% less CPU, so a CPU ratio to the fastest alone (1.13) flattered Headrace (1.31 to the leanest)."""
    per_m = (lambda c: c.running_per_m) if running else (lambda c: c.cpu_per_m)  # noqa: E731
    found = [c for c in baselines(cells, parallelism) if not math.isnan(per_m(c))]
    return min(found, key=per_m) if found else None


def throughput_table(title: str, cells: dict[tuple[str, int], Cell], latency: dict[str, dict[str, Any]]) -> Table:
    """One row per job and parallelism; the latency columns only when there were latency runs, the
    gateway threads' CPU (the machine-speed control) only when threads were sampled."""
    lat_cols = ("event→row p50 / p99", "close→row p50 / p99", "close (read)→row p50 / p99",
                "watermark→row p50 / p99") if latency else ()
    gateway = any(c.gateway for c in cells.values())
    table = Table(title=title, title_justify="left", caption=legend(cells, gateway), caption_justify="left")
    for col in ("job", "p", "events/s", "runs", "spread", "CPU-s/M events", "spread", "× stronger SQL",
                "CPU × stronger", "CPU × leanest", "CPU-s/M running", "running × leanest", "rows",
                *(("gateway CPU-s",) if gateway else ()), *lat_cols):
        table.add_column(col, justify="left" if col == "job" else "right")
    ms = lambda x: "–" if math.isnan(x) else f"{x * 1000:,.0f} ms"  # noqa: E731
    for (kind, parallelism), cell in sorted(cells.items(), key=lambda kv: (kv[0][1], list(KINDS).index(kv[0][0]))):
        best, lean = stronger(cells, parallelism), leanest(cells, parallelism)
        lean_running = leanest(cells, parallelism, running=True)
        ratio = cell.rate / best.rate if best else math.nan
        cpu_ratio = cell.cpu_per_m / best.cpu_per_m if best else math.nan
        lean_ratio = cell.cpu_per_m / lean.cpu_per_m if lean else math.nan
        running_ratio = cell.running_per_m / lean_running.running_per_m if lean_running else math.nan
        lat = latency.get(kind, {}) if parallelism == 2 else {}
        row = [SHORT.get(kind, kind) + (f" [{cell.note}]" if cell.note else ""), str(parallelism), f"{cell.rate:,.0f}",
               " ".join(f"{x / 1000:.0f}k" for x in cell.rates), cell.spread(cell.rates),
               f"{cell.cpu_per_m:.1f}", cell.spread(cell.cpu), f"{ratio:.2f}", f"{cpu_ratio:.2f}", f"{lean_ratio:.2f}",
               f"{cell.running_per_m:.1f}", f"{running_ratio:.2f}", f"{cell.rows:,}"]
        if gateway:
            row.append(" ".join(f"{g:.1f}" for g in cell.gateway))
        if lat_cols:
            row += [f"{ms(lat.get('p50', math.nan))} / {ms(lat.get('p99', math.nan))}" if lat else "",
                    f"{ms(lat.get('close_p50', math.nan))} / {ms(lat.get('close_p99', math.nan))}" if lat else "",
                    f"{ms(lat.get('read_p50', math.nan))} / {ms(lat.get('read_p99', math.nan))}" if lat else "",
                    f"{ms(lat.get('wm_p50', math.nan))} / {ms(lat.get('wm_p99', math.nan))}" if lat else ""]
        table.add_row(*row)
    return table


def legend(cells: dict[tuple[str, int], Cell], gateway: bool) -> str:
    """What each short job name stands for, and what the ratio and gateway columns are."""
    kinds = sorted({k for k, _ in cells}, key=list(KINDS).index)
    return ("; ".join(f"{SHORT.get(k, k)}: {KINDS[k]}" for k in kinds)
            + ". × stronger SQL and CPU × stronger: to the baseline with the most events/s at that parallelism; "
            "CPU × leanest: to the baseline with the least CPU per event. CPU-s/M running: the CPU of the job's "
            "processes while it ran (the events/s clock's window: without JVM start, planning, deployment and "
            "shutdown), and its ratio to the baseline with the least of it."
            + (" gateway CPU-s: each run's PyFlink gateway threads (planning, the same work in every run of a job): "
               "when they took more, the machine was slower." if gateway else ""))


def latency_table(title: str, latency: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("job", "windows", "event→row p50 / p99", "close→row p50 / p99", "close (read)→row p50 / p99",
                "watermark→row p50 / p99"):
        table.add_column(col, justify="left" if col == "job" else "right")
    ms = lambda x: "–" if math.isnan(x) else f"{x * 1000:,.0f} ms"  # noqa: E731
    for kind, lat in latency.items():
        if kind in KINDS:
            table.add_row(KINDS[kind], f"{len(lat.get('close_to_row', [])):,}",
                          f"{ms(lat['p50'])} / {ms(lat['p99'])}", f"{ms(lat['close_p50'])} / {ms(lat['close_p99'])}",
                          f"{ms(lat.get('read_p50', math.nan))} / {ms(lat.get('read_p99', math.nan))}",
                          f"{ms(lat.get('wm_p50', math.nan))} / {ms(lat.get('wm_p99', math.nan))}")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--rate", type=int, default=2000, help="events/s in the latency run")
    parser.add_argument("--seconds", type=int, default=30, help="length of the latency run (0: none)")
    parser.add_argument("--read-probe", action="store_true",
                        help="in the latency runs, also close→row from when a second reader got the closing event")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per job (median shown; 0: none, "
                                                              "latency only)")
    parser.add_argument("--parallelism", default="1,2", help="parallelisms of the throughput runs")
    parser.add_argument("--only", default="framework,sql,sql-tvf,sql-tvf-jit",
                        help=f"jobs of the throughput runs, of: {','.join(KINDS)}")
    parser.add_argument("--enrich", type=int, default=0, metavar="EVENTS",
                        help="also the enrichment comparison over EVENTS Zipf-keyed events (e.g. 3000000)")
    parser.add_argument("--enrich-users", type=int, default=1_000_000, metavar="USERS",
                        help="the enrichment comparison's Zipf over this many users (default 1,000,000)")
    parser.add_argument("--scale", default="", metavar="N,N", help="also the example job at these event counts "
                                                                    "(e.g. 1000000,10000000), each parallelism")
    parser.add_argument("--state-keys", type=int, default=0, metavar="KEYS",
                        help="also the state size of KEYS distinct group keys in one open window (e.g. 1000000)")
    parser.add_argument("--distinct", type=int, default=0, metavar="EVENTS",
                        help="also the sketch and exact-distinct jobs over EVENTS clicks of Zipf users (1M ids) in "
                        "hour-long windows: what their state holds")
    parser.add_argument("--out", default=".headrace/bench", help="where results.json and the plot go")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    parallelisms = [int(p) for p in args.parallelism.split(",") if p]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, int], Cell] = {}
    extra: dict[str, dict[tuple[str, int], Cell]] = {}
    latency: dict[str, dict[str, Any]] = {}
    broker, pg = Broker.start(), Postgres.start()
    redis = None
    workdir = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    os.environ["HEADRACE_PLAN_DIR"] = str(workdir / "plans")  # every kind's first start plans
    registry_port = free_port()
    registry = subprocess.Popen([sys.executable, "-m", "headrace.jobs.cli", "registry", "serve", "--port",
                                 str(registry_port), "--store", str(workdir / "registry.sqlite")])
    started = time.time()
    try:
        from tests.services import RedisServer, _wait_port

        _wait_port(registry_port, registry, "headrace registry serve")  # type: ignore[arg-type]
        url = f"http://127.0.0.1:{registry_port}"
        base = {"bootstrap": broker.bootstrap, "pg_port": pg.port, "workdir": str(workdir), "registry": url}
        ends_of: dict[str, dict[int, int]] = {}
        if args.repeat > 0:
            ends_of["bench"] = preload(broker, "bench", args.events)
            for kind in kinds:
                if kind in TOPICS:
                    ends_of[TOPICS[kind]] = preload(broker, TOPICS[kind], args.events,
                                                    binary_encoder(TOPICS[kind], url))
            console.print(f"pre-loaded {sum(ends_of['bench'].values()):,} events (partitions: {ends_of['bench']})")
            throughput(cells, kinds, parallelisms, args.repeat, ends_of, base, pg, args.events, TOPICS)
        if args.enrich:
            redis = RedisServer.start()
            load_users(pg, "bench_users")
            ends_of["bench-zipf"] = preload(broker, "bench-zipf", args.enrich,
                                            source=zipf_users(args.enrich, users=args.enrich_users))
            extra["enrich"] = {}
            measured = ["framework", "framework-enrich", "framework-enrich-python"]
            throughput(extra["enrich"], measured, [2], args.repeat, ends_of, {**base, "redis_port": redis.port}, pg,
                       args.enrich, dict.fromkeys(measured, "bench-zipf"), label="enrich")
        for count in [int(n) for n in args.scale.split(",") if n]:
            topic = f"bench-{count}"
            ends_of[topic] = preload(broker, topic, count)
            extra[f"scale {count:,}"] = {}
            # with (a′) beside it: the fixed cost of a run (JVM, planning, JIT) weighs less the longer it runs
            throughput(extra[f"scale {count:,}"], ["framework", "sql-tvf"], parallelisms, 1, ends_of, base, pg,
                       count, {"framework": topic, "sql-tvf": topic}, label=f"scale{count}")
        if args.distinct:
            # an hour-long window holds an hour of users: a checkpoint every 2 s catches it nearly full
            if "bench-zipf" not in ends_of:
                ends_of["bench-zipf"] = preload(broker, "bench-zipf", args.distinct, source=zipf_users(args.distinct))
            extra["distinct"] = {}
            measured = ["framework", "framework-sketch", "framework-distinct"]
            throughput(extra["distinct"], measured, [2], max(args.repeat, 1), ends_of, base, pg, args.distinct,
                       dict.fromkeys(measured, "bench-zipf"), label="distinct",
                       overrides={"window_s": 3600, "checkpoint_s": 2})
        if args.state_keys:
            topic = "bench-keys"
            ends_of[topic] = preload(broker, topic, 3 * args.state_keys, source=keyed_events(args.state_keys))
            extra["state"] = {}
            # one hour-long window holds every key; a checkpoint every 2 s catches it full
            throughput(extra["state"], ["framework-state", "sql-state"], [2], 1, ends_of, base, pg,
                       3 * args.state_keys, {"framework-state": topic, "sql-state": topic}, label="state",
                       overrides={"window_s": 3600, "checkpoint_s": 2})
        if args.seconds > 0:
            # on a broker of its own: tansu's memory storage slows as it holds the tens of millions
            # of records loaded above (a produced record took 9 s p50 to reach a plain consumer),
            # which is the test broker's cost, not the job's; every job meets the same fresh broker
            fresh = Broker.start()
            try:
                live = {**base, "bootstrap": fresh.bootstrap}
                for kind in [k for k in kinds if k not in TOPICS]:
                    console.print(f"latency: {KINDS[kind]} at {args.rate:,} events/s for {args.seconds}s …")
                    latency[kind] = latency_run(kind, fresh, pg, live, args.rate, args.seconds, args.read_probe)
                    if latency[kind]["windows"]:
                        console.print("  " + checkpoint_line(latency[kind]["windows"]))
                console.print(f"latency: the broker alone at {args.rate:,} events/s for {args.seconds}s …")
                latency["broker"] = broker_delivery(fresh, args.rate, args.seconds)
            finally:
                fresh.stop()
    finally:
        registry.terminate()
        if redis is not None:
            redis.stop()
        pg.stop()
        broker.stop()

    console.print(throughput_table(f"page-activity: {args.events:,} events; events/s is the median of {args.repeat} "
                                   "runs on Flink's clock; CPU-s of every process of the job", cells, latency))
    if not cells and latency:
        console.print(latency_table(f"latency at {args.rate:,} events/s for {args.seconds} s, parallelism 2", latency))
    if "broker" in latency:
        b = latency["broker"]
        console.print(f"the broker alone (produced → received by a plain consumer, {b['received']:,} records): "
                      f"p50 {b['p50'] * 1000:,.0f} ms, p99 {b['p99'] * 1000:,.0f} ms: part of every latency above")
    for name, group in extra.items():
        console.print(throughput_table(f"{name}", group, {}))
        for cell in group.values():
            if cell.state_bytes and name == "state":
                console.print(f"  {KINDS[cell.kind]}: largest checkpoint {cell.state_bytes / 2**20:,.1f} MiB for "
                              f"{args.state_keys:,} keys: {cell.state_bytes / args.state_keys * 1e6 / 2**20:,.1f} "
                              "MiB per million keys")
    if "distinct" in extra:
        pairs = distinct_pairs(args.distinct)
        base_state = extra["distinct"].get(("framework", 2))
        console.print(f"distinct users: the most (tenant, page, user) triples in one hour-long window: {pairs:,}")
        for cell in extra["distinct"].values():
            more = cell.state_bytes - (base_state.state_bytes if base_state else 0)
            console.print(f"  {KINDS[cell.kind]}: largest checkpoint {cell.state_bytes / 2**20:,.1f} MiB"
                          + (f", {more / 2**20:+,.1f} MiB over the job without it: about {more / pairs:,.0f} bytes "
                             "per distinct value of a window" if cell.kind != "framework" and pairs else ""))
    sized = {f"{KINDS[k]} p{p}": c.state_bytes for (k, p), c in cells.items() if c.state_bytes}
    if sized:  # what the measures keep: the largest completed checkpoint of each job (every state, full size)
        console.print("largest checkpoint of each job (full state size): "
                      + ", ".join(f"{k} {v / 2**20:,.1f} MiB" for k, v in sized.items()))
    memory = {f"{k} p{p}": c.peak_rss for (k, p), c in cells.items()}
    console.print("peak resident memory of each job's processes (JVM and Python): "
                  + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in memory.items()))
    results = {"events": args.events, "rate": args.rate, "date": time.strftime("%Y-%m-%d"),
               "seconds": time.time() - started,
               "cells": [{**c.__dict__, "rate": c.rate, "cpu_per_m": c.cpu_per_m} for c in cells.values()],
               "extra": {n: [{**c.__dict__, "rate": c.rate, "cpu_per_m": c.cpu_per_m} for c in g.values()]
                         for n, g in extra.items()},
               "latency": latency}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    from tests.bench.plot import plot

    png = plot(results, out / "bench.png")
    console.print(f"results written to {out / 'results.json'}; plot: {png}")
    return 0


def keyed_events(keys: int) -> Iterator[Any]:
    """3 × ``keys`` valid events, all in the first hour of 2026, the first ``keys`` of them each a
    new group key (``tenant_id`` × ``page``): once read, every key is in the open window's state."""
    from headrace.jobs.sample import START_MS, SampleEvent

    for i in range(3 * keys):
        k = i % keys
        record = {"tenant_id": f"t{k // 1000}", "user_id": "u1", "page": f"/p{k % 1000}",
                  "ts": START_MS + i * 3_000_000 // (3 * keys), "latency_ms": 5, "bytes": 100}
        yield SampleEvent(key=record["tenant_id"].encode(), payload=json.dumps(record).encode(),
                          timestamp_ms=int(record["ts"]), kind="valid")


if __name__ == "__main__":
    sys.exit(main())
