"""The three jobs the benchmark compares, each run in its own process:

    python -m tests.bench.jobs framework|sql|datastream '<json settings>'

``framework`` is jobs/page_activity.yaml through Headrace (``framework-python``: the same with
``validate: {engine: python}``); ``sql`` is the hand-written
sql/page_activity_baseline.sql; ``datastream`` is a hand-written PyFlink DataStream job with the
same validation (orjson + jsonschema-rs), a Python window aggregate and the same upsert sink.
All read the same topic to the same stopping offsets and write the same PostgreSQL columns.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def common_config(s: dict[str, Any]) -> dict[str, str]:
    """Settings every job gets, plus experiments from $HEADRACE_BENCH_FLINK (a JSON object)."""
    # every job keeps durable state the same way Headrace does (RocksDB, incremental checkpoints)
    checkpoints = (Path(s["workdir"]) / "checkpoints").resolve().as_uri()
    return {"parallelism.default": str(s.get("parallelism", 2)), "rest.port": str(s["rest_port"]),
            "rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1",
            "execution.checkpointing.interval": f"{s.get('checkpoint_s', 10)} s",
            "web.refresh-interval": "200", "web.checkpoints.history": "1000",
            "table.local-time-zone": "UTC", "state.backend.type": "rocksdb",
            "execution.checkpointing.incremental": "true", "execution.checkpointing.dir": checkpoints,
            # last, so that an experiment can change any of the above (the state backend, the interval)
            **json.loads(os.environ.get("HEADRACE_BENCH_FLINK", "{}"))}


class Meter:
    """The memory and CPU of this process's tree (it, its JVM and any Python workers), sampled ten
    times a second from a thread of its own, from before the job is submitted (so that the CPU
    samples cover the whole running window: Flink may deploy the tasks before the submitting call
    returns) to the end of the process.

    Python's cyclic garbage collector is held off from now until ``submitted``: a collection on
    this thread could finalize py4j proxies, which opens another gateway connection, and a planning
    call that then lands on that connection's Java thread fails in Calcite (NullPointerException:
    metadataHandlerProvider, a thread-local of the thread that made the planner)."""

    def __init__(self) -> None:
        import gc
        import threading

        gc.disable()
        self.tree = Tree(os.getpid())
        self.peak_rss = 0  # bytes: this process, its JVM and the Python workers, together
        self.cpu_samples: list[tuple[float, float]] = []  # (wall clock s, CPU-s of the tree)
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def submitted(self) -> None:
        import gc

        gc.enable()

    def stop(self) -> None:
        """No more samples (a job's process just exits; a test stops it)."""
        self._stop.set()

    def _sample(self) -> None:
        while True:
            rss, cpu = self.tree.sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.cpu_samples.append((time.time(), cpu))
            if self._stop.wait(0.1):
                return


class Clock:
    """Flink's own clock for the job this process runs. While it runs, its REST API is asked for
    the job's ``timestamps`` and its vertices' ``start-time`` (exact values, however stale the
    cached answer), and for the size of its completed checkpoints; its ``Meter`` samples this
    process's tree for memory and CPU. When the job ends, the JobMaster's net runtime (INITIALIZING →
    FINISHED) gives the end, and the CPU of the running window is read off the meter's samples.
    ``report`` prints it all on one ``BENCH_CLOCK {json}`` line."""

    def __init__(self, port: int, meter: Meter) -> None:
        import threading

        self.port, self.seen = port, {}  # type: ignore[var-annotated]
        self.state_bytes = 0  # the largest full state size of a completed checkpoint
        self.checkpoints: dict[int, tuple[int, int]] = {}  # completed: id -> (triggered, last ack) in ms
        self.meter, self.tree = meter, meter.tree
        meter.submitted()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self.threads: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, tid) -> (name, CPU-s)
        if os.environ.get("HEADRACE_BENCH_THREADS"):
            threading.Thread(target=self._sample_threads, daemon=True).start()

    def _poll(self) -> None:
        import time
        import urllib.request

        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return json.loads(response.read())

        running = False
        while True:
            try:
                for job in get("/jobs/overview")["jobs"]:
                    if not running:
                        detail = get(f"/jobs/{job['jid']}")
                        starts = [v.get("start-time", -1) for v in detail["vertices"]]
                        self.seen = {"timestamps": detail["timestamps"], "vertex_starts": starts}
                        running = bool(detail["timestamps"].get("RUNNING")) and all(t > 0 for t in starts)
                    checkpoints = get(f"/jobs/{job['jid']}/checkpoints")
                    completed = (checkpoints.get("latest") or {}).get("completed")
                    if completed:
                        self.state_bytes = max(self.state_bytes, int(completed.get("state_size") or 0))
                    for c in checkpoints.get("history") or []:
                        if c.get("status") == "COMPLETED":  # when each ran, on the JobManager's clock
                            self.checkpoints[int(c["id"])] = (int(c["trigger_timestamp"]),
                                                              int(c["latest_ack_timestamp"]))
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5 if running else 0.2)

    def _sample_threads(self) -> None:
        """Each thread's CPU seconds, every 0.2 s (a thread's last sample stands for it after it
        ends): where a job's CPU goes, by thread (``HEADRACE_BENCH_THREADS=1``)."""
        import time

        tick = os.sysconf("SC_CLK_TCK")
        while True:
            for pid in self.tree.pids():
                try:
                    tasks = list(Path(f"/proc/{pid}/task").iterdir())
                except OSError:
                    continue
                for task in tasks:
                    try:
                        text = (task / "stat").read_text()
                    except OSError:
                        continue
                    name = text[text.index("(") + 1:text.rindex(")")]
                    fields = text.rsplit(")", 1)[1].split()
                    self.threads[(pid, int(task.name))] = (name, (int(fields[11]) + int(fields[12])) / tick)
            time.sleep(0.2)

    def thread_groups(self) -> dict[str, float]:
        groups: dict[str, float] = {}
        for (pid, _), (name, cpu) in self.threads.items():
            group = "python " + str(pid) if name.startswith("python") else re.sub(r"[#\d]+$", "", name).strip()
            groups[group] = groups.get(group, 0.0) + cpu
        return dict(sorted(groups.items(), key=lambda kv: -kv[1]))

    def report(self, net_runtime_ms: int) -> None:
        # the whole run's CPU, now that the job has finished, is also the meter's last sample: the
        # sampler's own last one may be older than the end of the running window
        cpu_s = tree_cpu_seconds(os.getpid())
        self.meter.cpu_samples.append((time.time(), cpu_s))
        window = running_window(self.seen, net_runtime_ms)
        samples = sorted(self.meter.cpu_samples)
        running_cpu = cpu_between(samples, window[0] / 1000, window[1] / 1000) if window else math.nan
        print("BENCH_CLOCK " + json.dumps({**self.seen, "net_runtime_ms": net_runtime_ms, "cpu_s": cpu_s,
                                           "running_cpu_s": None if math.isnan(running_cpu) else running_cpu,
                                           "state_bytes": self.state_bytes, "peak_rss": self.meter.peak_rss,
                                           "checkpoints": sorted(self.checkpoints.values())}), flush=True)
        if self.threads:
            print("BENCH_THREADS " + json.dumps({k: round(v, 2) for k, v in self.thread_groups().items()}),
                  file=sys.stderr, flush=True)


def running_window(seen: dict[str, Any], net_runtime_ms: int) -> tuple[int, int] | None:
    """The job's running time on Flink's clock, in ms of the wall clock: from the later of its
    RUNNING timestamp and its last vertex's start to FINISHED (INITIALIZING + the JobMaster's net
    runtime); None when the job was not seen running."""
    stamps = seen.get("timestamps") or {}
    start = max([stamps.get("RUNNING", 0), *seen.get("vertex_starts", [])])
    begun = stamps.get("INITIALIZING") or stamps.get("CREATED")
    if not begun or not start:
        return None
    return int(start), int(begun + net_runtime_ms)


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """The CPU-s the samples (wall clock s, cumulative CPU-s; in time order) add from ``start`` to
    ``end``, each end interpolated between the samples around it; NaN when the samples do not
    cover both. The start-up before (JVM, planning, deployment) and the shutdown after are left out."""

    def at(t: float) -> float:
        for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
            if t0 <= t <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
        return math.nan

    return at(end) - at(start) if start <= end else math.nan


def _process_tree() -> tuple[dict[int, list[str]], dict[int, list[int]]]:
    """Every process's stat fields (after the name) and each process's children."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return stats, children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live descendant, with the children they
    have reaped: this process, its JVM (alive until this process exits) and the Python workers."""
    tick = os.sysconf("SC_CLK_TCK")
    stats, children = _process_tree()
    total = 0.0
    for current in _descendants(pid, children):
        fields = stats.get(current)
        if fields is not None:  # utime, stime, cutime, cstime: fields 14-17 of stat (11-14 here)
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


class Tree:
    """``pid`` and its descendants, for the samplers of a running job. Listing them means reading
    every process's stat file (4 ms of CPU with 66 processes on this machine, more beside the
    benchmark's services): ten times a second, that was 4% of a core, taken from the job it
    measured and counted in its CPU. So the list is made again only every ``refresh_s``; in
    between, only the known processes are read. (A process that starts in between is found at
    the next refresh: the JVM and the Python workers live for the whole job.)"""

    def __init__(self, pid: int, refresh_s: float = 2.0) -> None:
        self.pid, self.refresh_s = pid, refresh_s
        self._pids: list[int] = []
        self._listed = -math.inf

    def pids(self) -> list[int]:
        now = time.monotonic()
        if now - self._listed >= self.refresh_s:
            _, children = _process_tree()
            self._pids, self._listed = _descendants(self.pid, children), now
        return self._pids

    def rss_bytes(self) -> int:
        """Resident memory of the processes, added up (field 24 of stat: pages)."""
        return self.sample()[0]

    def sample(self) -> tuple[int, float]:
        """Resident memory (bytes) and CPU seconds of the processes, added up, from one read of
        each one's stat file: field 24 (pages), and fields 14-17 (user and system time, its own
        and its reaped children's). A process found at a refresh brings all the CPU it has had."""
        page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
        rss, cpu = 0, 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended since the list was made
                continue
            rss += int(fields[21]) * page
            cpu += sum(int(x) for x in fields[11:15]) / tick
        return rss, cpu


#: the example job of each source format
EXAMPLES = {"json": "page_activity.yaml", "avro": "page_activity_avro.yaml", "protobuf": "page_activity_proto.yaml"}


#: the enrich step of the benchmark's enrichment row (tests/bench/run.py loads the users table)
ENRICH_STEP = """  - enrich:
      key: user_id
      fields: {country: string, plan: string}
      source: {postgres: {table: bench_users, key_column: id}}
      cache: {l1: {size: 300000, ttl: 1h}, l2: {ttl: 1h, prefix: "bench:users:"}}
"""


def run_framework(s: dict[str, Any], engine: str = "auto", fmt: str = "json", variant: str = "") -> None:
    import re

    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile
    from headrace.jobs.runner import submit_local

    text = (ROOT / "jobs" / EXAMPLES[fmt]).read_text()
    text = re.sub(r"topic: [\w-]+, group: [\w-]+", f"topic: {s['topic']}, group: {s['group']}", text)
    text = re.sub(r"page_activity\w*_1m", s["table"], text)
    text = re.sub(r"clicks[\w-]*\.(dlq|late)", lambda m: f"{s['topic']}.{m.group(1)}", text)
    text = (text.replace("window: {tumbling: 1m}", f"window: {{tumbling: {s['window_s']}s}}")
            .replace("max_out_of_orderness: 5s", f"max_out_of_orderness: {s['ooo_s']}s")
            .replace("schemas/", f"{ROOT}/schemas/")
            .replace("validate: {}", f"validate: {{engine: {engine}}}"))
    if variant == "l0":
        text = text.replace("allowed_lateness: 30s", "allowed_lateness: 0s")
    if variant == "sketch":  # issue 15's measure of cost: a percentile and an approximate distinct count
        text = text.replace("        max_ms: max(latency_ms)\n", "        max_ms: max(latency_ms)\n"
                            "        p95_ms: percentile(latency_ms, 0.95)\n"
                            "        users: approx_count_distinct(user_id)\n")
    if variant == "distinct":  # the exact distinct count beside it
        text = text.replace("        max_ms: max(latency_ms)\n", "        max_ms: max(latency_ms)\n"
                            "        users: count_distinct(user_id)\n")
    if variant.startswith("enrich"):  # the lookup's field is counted, so that the planner keeps the lookup
        step = ENRICH_STEP + "      engine: jvm\n"
        if variant == "enrich-python":  # the Python engine, with its own L2 (each engine's first run is cold)
            step = ENRICH_STEP.replace('prefix: "bench:users:"', 'prefix: "bench:users-py:"') + "      engine: python\n"
        text = (text.replace("  - aggregate:\n", step + "  - aggregate:\n")
                .replace("        events: count()\n", "        events: count()\n        enriched: count(country)\n"))
    job = Path(s["workdir"]) / f"framework-{engine}-{fmt}{variant}.yaml"
    job.write_text(text)
    profiles = Path(s["workdir"]) / "profiles.yaml"
    flink = ", ".join(f"{k}: '{v}'" for k, v in common_config(s).items() if k != "table.local-time-zone")
    profiles.write_text(f"profiles:\n  bench:\n    kafka: {{bootstrap_servers: '{s['bootstrap']}'}}\n"
                        f"    postgres: {{port: {s['pg_port']}, database: postgres, user: postgres}}\n"
                        f"    state: {{checkpoints: {Path(s['workdir']) / 'checkpoints'}}}\n"
                        + (f"    registry: {{url: '{s['registry']}'}}\n" if s.get("registry") else "")
                        + (f"    redis: {{port: {s['redis_port']}}}\n" if s.get("redis_port") else "")
                        +
                        f"    flink: {{{flink}}}\n")
    offsets = {int(k): v for k, v in s["offsets"].items()}
    compiled = compile_job(build_plan(parse_job(job)), load_profile("bench", profiles), bounded_offsets=offsets,
                           from_earliest=variant == "kept")  # its group has read the topic before
    started = time.time()
    meter = Meter()
    result, _ = submit_local(compiled, say=lambda m: print(m, file=sys.stderr))
    clock = Clock(s["rest_port"], meter)  # after submission, as in run_sql
    result.wait()
    clock.report(result.get_job_client().get_job_execution_result().result().get_net_runtime())
    if variant.startswith("enrich"):
        lookups(compiled.plan.name, started)


def lookups(job: str, since: float) -> None:
    """``BENCH_LOOKUPS``: what the enrich step's workers answered from each cache level (their
    files in .headrace/stats written since ``since``: earlier runs leave theirs), for the harness."""
    from headrace.operators.enrich import STATS_DIR
    from headrace.operators.lookup import LookupStats

    total = LookupStats()
    for path in STATS_DIR.glob(f"{job}.enrich.*.json"):
        if path.stat().st_mtime >= since:
            total = total.merged(LookupStats.from_json(path.read_text()))
    keys = max(total.keys, 1)
    print(f"BENCH_LOOKUPS L1 {total.l1_hits / keys:.1%}, L2 {total.l2_hits / keys:.1%}, "
          f"L3 {total.l3_hits / keys:.1%}, misses {total.misses / keys:.1%} of {total.keys:,} keys"
          + (f"; {total.read_ahead:,} read ahead, {total.waited:,} waited" if total.read_ahead else ""), flush=True)


def _jars() -> list[str]:
    from headrace.connectors.jars import required_jars

    return [p.resolve().as_uri() for p in required_jars({"kafka", "postgres"})]


def run_sql(s: dict[str, Any], tvf: bool = False) -> None:
    """(a) sql/page_activity_baseline.sql, a group window with late firing; or (``tvf``) (a′)
    sql/page_activity_baseline_tvf.sql, a window TVF aggregated in two phases over mini-batches."""
    os.environ.setdefault("_python_worker_execution_mode", "process")
    from headrace.connectors.kafka import FETCH_MAX_WAIT_MS
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    for k, v in common_config(s).items():
        config.set(k, v)
    config.set("pipeline.jars", ";".join(_jars()))
    if tvf:
        config.set("table.exec.mini-batch.enabled", "true")
        config.set("table.exec.mini-batch.allow-latency", "100 ms")
        config.set("table.exec.mini-batch.size", "5000")
        config.set("table.optimizer.agg-phase-strategy", "TWO_PHASE")
        # a window TVF's rows are inserts without an upsert key: Flink 2.3 asks how to reconcile
        # them with the sink's primary key unless told the rows are unique (they are, by window)
        config.set("table.exec.sink.upsert-materialize", "NONE")
    else:
        config.set("table.exec.emit.late-fire.enabled", "true")
        config.set("table.exec.emit.late-fire.delay", "0 s")
        config.set("table.exec.emit.allow-lateness", "30 s")
    sql = (ROOT / "sql" / ("page_activity_baseline_tvf.sql" if tvf else "page_activity_baseline.sql")).read_text()
    values = {"TOPIC": s["topic"], "BOOTSTRAP": s["bootstrap"], "GROUP": s["group"], "TABLE": s["table"],
              "JDBC_URL": f"jdbc:postgresql://127.0.0.1:{s['pg_port']}/postgres", "WINDOW_S": str(s["window_s"]),
              "OOO_S": str(s["ooo_s"]), "FETCH_WAIT_MS": str(FETCH_MAX_WAIT_MS),
              "OFFSETS": ";".join(f"partition:{p},offset:{o}" for p, o in s["offsets"].items())}
    for key, value in values.items():
        sql = sql.replace("${" + key + "}", value)
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    *ddl, insert = [st.strip() for st in body.split(";\n") if st.strip()]
    for statement in ddl:
        t_env.execute_sql(statement)
    # the clock's threads start once the job is planned and submitted: a Python thread that
    # collects py4j proxies opens another gateway connection, and a planning call that lands on
    # that connection's Java thread fails in Calcite (NullPointerException: metadataHandlerProvider,
    # a thread-local set up on the thread that made the planner). The timestamps it reads are
    # Flink's own, so starting it after submission loses nothing. (The meter samples from before:
    # see ``Meter`` for how it keeps out of the planner's way.)
    meter = Meter()
    result = t_env.execute_sql(insert)
    clock = Clock(s["rest_port"], meter)
    result.wait()
    clock.report(result.get_job_client().get_job_execution_result().result().get_net_runtime())


def stopping_offsets(bootstrap: str, topic: str, group: str, offsets: dict[str, int]) -> Any:
    """Stop at ``offsets`` by committing them for ``group`` and bounding at committed offsets.

    PyFlink's ``KafkaOffsetsInitializer.offsets`` names the shaded TopicPartition of the fat
    sql-connector jar (we ship the thin connector + kafka-clients), and py4j turns any
    java.lang.Long back into an int, so the Java map cannot be built from Python either;
    ``committed_offsets()`` names a shaded class too, hence the direct Java call.
    """
    from confluent_kafka import Consumer, TopicPartition
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, int(p), int(o)) for p, o in offsets.items()],
                    asynchronous=False)
    consumer.close()
    from pyflink.java_gateway import get_gateway

    initializer = get_gateway().jvm.org.apache.flink.connector.kafka.source.enumerator.initializer
    return KafkaOffsetsInitializer(initializer.OffsetsInitializer.committedOffsets())


def run_datastream(s: dict[str, Any]) -> None:
    os.environ.setdefault("_python_worker_execution_mode", "process")
    from pyflink.common import Duration, Row, Types, WatermarkStrategy
    from pyflink.common.configuration import Configuration
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream import OutputTag, ProcessFunction, StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )
    from pyflink.datastream.functions import AggregateFunction, ProcessWindowFunction
    from pyflink.datastream.window import TumblingEventTimeWindows
    from pyflink.table import StreamTableEnvironment

    conf = Configuration()
    for k, v in common_config(s).items():
        conf.set_string(k, v)
    conf.set_string("python.executable", sys.executable)
    # its mixed DataStream/Table graph otherwise waits for slots the mini-cluster never offers
    conf.set_string("taskmanager.numberOfTaskSlots", "4")
    conf.set_string("pipeline.jars", ";".join(_jars()))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    schema = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
    topic = s["topic"]
    source = (KafkaSource.builder().set_bootstrap_servers(s["bootstrap"]).set_topics(topic)
              .set_group_id(s["group"]).set_starting_offsets(KafkaOffsetsInitializer.earliest())
              .set_bounded(stopping_offsets(s["bootstrap"], topic, s["group"], s["offsets"]))
              .set_value_only_deserializer(SimpleStringSchema()).build())
    strategy = (WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(s["ooo_s"]))
                .with_idleness(Duration.of_seconds(30)))
    raw = env.from_source(source, strategy, "clicks")
    dead = OutputTag("dead", Types.STRING())
    late = OutputTag("late", Types.ROW([Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG()]))
    row_type = Types.ROW([Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG()])

    class Validate(ProcessFunction):
        def open(self, ctx: Any) -> None:
            import jsonschema_rs
            self.validator = jsonschema_rs.validator_for(schema)

        def process_element(self, value: str, ctx: Any) -> Any:
            import orjson
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                yield dead, value
                return
            if not self.validator.is_valid(record):
                yield dead, value
                return
            yield Row(record["tenant_id"], record["page"], record["latency_ms"], record.get("bytes"))

    class Measures(AggregateFunction):
        def create_accumulator(self) -> list:
            return [0, None, 0, None, None]

        def add(self, value: Row, acc: list) -> list:
            lat, byts = value[2], value[3]
            acc[0] += 1
            if byts is not None:
                acc[1] = byts if acc[1] is None else acc[1] + byts
            acc[2] += lat
            acc[3] = lat if acc[3] is None else min(acc[3], lat)
            acc[4] = lat if acc[4] is None else max(acc[4], lat)
            return acc

        def get_result(self, acc: list) -> list:
            return acc

        def merge(self, a: list, b: list) -> list:
            raise NotImplementedError

    class Emit(ProcessWindowFunction):
        def process(self, key: Any, context: Any, elements: Any) -> Any:
            for acc in elements:
                w = context.window()
                yield Row(key[0], key[1], w.start, w.end, acc[0], acc[1], acc[2] / acc[0], acc[3], acc[4])

    checked = raw.process(Validate(), output_type=row_type)
    out_type = Types.ROW([Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG(),
                          Types.DOUBLE(), Types.LONG(), Types.LONG()])
    windows = (checked.key_by(lambda r: (r[0], r[1]), key_type=Types.TUPLE([Types.STRING(), Types.STRING()]))
               .window(TumblingEventTimeWindows(s["window_s"] * 1000, 0))
               .allowed_lateness(30_000).side_output_late_data(late)
               .aggregate(Measures(), Emit(), accumulator_type=Types.PICKLED_BYTE_ARRAY(), output_type=out_type))
    dlq = (KafkaSink.builder().set_bootstrap_servers(s["bootstrap"])
           .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(f"{topic}.dlq")
                                  .set_value_serialization_schema(SimpleStringSchema()).build()).build())
    checked.get_side_output(dead).sink_to(dlq)
    windows.get_side_output(late).map(lambda r: json.dumps(list(r)), output_type=Types.STRING()).sink_to(
        KafkaSink.builder().set_bootstrap_servers(s["bootstrap"]).set_record_serializer(
            KafkaRecordSerializationSchema.builder().set_topic(f"{topic}.late")
            .set_value_serialization_schema(SimpleStringSchema()).build()).build())
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.get_config().set("table.exec.sink.upsert-materialize", "NONE")
    t_env.create_temporary_view("windows", t_env.from_data_stream(windows))
    t_env.execute_sql(f"""CREATE TEMPORARY TABLE sink (tenant_id STRING NOT NULL, page STRING NOT NULL,
      window_start TIMESTAMP(3) NOT NULL, window_end TIMESTAMP(3) NOT NULL, events BIGINT, total_bytes BIGINT,
      avg_ms DOUBLE, min_ms BIGINT, max_ms BIGINT, PRIMARY KEY (tenant_id, page, window_start, window_end) NOT ENFORCED)
      WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:{s['pg_port']}/postgres',
            'table-name' = '{s['table']}', 'username' = 'postgres', 'password' = '',
            'sink.buffer-flush.max-rows' = '5000', 'sink.buffer-flush.interval' = '1 s')""")
    statements = t_env.create_statement_set()
    statements.add_insert_sql("INSERT INTO sink SELECT f0, f1, CAST(TO_TIMESTAMP_LTZ(f2, 3) AS TIMESTAMP(3)), "
                              "CAST(TO_TIMESTAMP_LTZ(f3, 3) AS TIMESTAMP(3)), f4, f5, f6, f7, f8 FROM windows")
    statements.attach_as_datastream()
    clock = Clock(s["rest_port"], Meter())
    clock.report(env.execute("page-activity-datastream").get_net_runtime())


#: Java 17's own thresholds for the JIT's optimizing tier (``java -XX:+PrintFlagsFinal``), which
#: Headrace's JVMs raise (jobs/runner.py, ``C2_THRESHOLDS``)
JDK_C2_THRESHOLDS = ("-XX:Tier4InvocationThreshold=5000", "-XX:Tier4CompileThreshold=15000",
                     "-XX:Tier4BackEdgeThreshold=40000")


def with_jvm_args(args: tuple[str, ...], run: Any) -> Any:
    """``run`` in a JVM started with ``args`` too (after the caller's ``JVM_ARGS``, e.g. a profiler's)."""
    def go(s: dict[str, Any]) -> None:
        os.environ["JVM_ARGS"] = " ".join([*os.environ.get("JVM_ARGS", "").split(), *args])
        run(s)
    return go


if __name__ == "__main__":
    from headrace.jobs.runner import C2_THRESHOLDS

    kind, settings = sys.argv[1], json.loads(sys.argv[2])
    {"framework": run_framework, "framework-python": lambda s: run_framework(s, engine="python"),
     "framework-enrich": lambda s: run_framework(s, variant="enrich"),
     "framework-enrich-python": lambda s: run_framework(s, variant="enrich-python"), "framework-state": run_framework,
     "framework-l0": lambda s: run_framework(s, variant="l0"),
     "framework-sketch": lambda s: run_framework(s, variant="sketch"),
     "framework-distinct": lambda s: run_framework(s, variant="distinct"),
     "sql-state": run_sql,
     "framework-avro": lambda s: run_framework(s, fmt="avro"),
     "framework-proto": lambda s: run_framework(s, fmt="protobuf"),
     "framework-jdk-jit": with_jvm_args(JDK_C2_THRESHOLDS, run_framework),
     "framework-kept": lambda s: run_framework(s, variant="kept"),
     "sql": run_sql, "sql-tvf": lambda s: run_sql(s, tvf=True),
     "sql-tvf-jit": with_jvm_args(C2_THRESHOLDS, lambda s: run_sql(s, tvf=True)),
     "datastream": run_datastream}[kind](settings)
