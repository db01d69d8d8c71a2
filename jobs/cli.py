"""The ``headrace`` command line.

    headrace validate JOB            check a job spec (and its schema) without running it
    headrace explain JOB [--sql]     the plan: source, steps with Flink uids, sinks, outputs
    headrace run JOB [--profile P]   run it (profile 'local' = embedded, no servers)
    headrace generate --events N     sample click events for the example job
    headrace produce TOPIC --from F  records onto a Kafka topic (or --generate N), keyed by tenant
    headrace query VIEW              print a view's rows (the profile's store, or --url a running serve)
    headrace views                   the views of a project's jobs
    headrace serve                   the views over REST, GraphQL, gRPC and a web page, authenticated
    headrace grpc-stubs --out DIR    Python client code for the gRPC service
    headrace k8s render --out DIR    Kubernetes manifests (Flink Kubernetes Operator) and the image
    headrace dashboard --out FILE    the Grafana dashboard of Headrace's metrics (JSON)
    headrace jars [--maven-repo URL] fetch and verify the connector jars, build the JVM functions
    headrace schema [spec]           JSON Schema of the job spec, for editors
    headrace schema check|publish|diff TARGET, list, show SUBJECT: schemas as registry subjects

Errors a user can cause print one line (what, where, how to fix) and exit 2; a failing Flink
job prints its root cause and exits 1; ``--verbose`` adds the Python and Java traces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headrace.jobs import classarchive
from headrace.schemas.errors import HeadraceError
from headrace.schemas.profile import Profile
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

# piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # a top_k measure, most frequent first
        return ", ".join(f"{v.get('value')} ×{v.get('count')}" if isinstance(v, dict) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, str) and value[:4].isdigit() and value.endswith("Z") and "T" in value:
        value = value.replace("T", " ").removesuffix("Z")  # a window bound as served (ISO-8601, UTC)
    if isinstance(value, str) and value.endswith(".000") and value[:4].isdigit():
        return value[:-4]
    text = str(value)
    return text if len(text) <= 48 else f"{text[:40]}… ({len(text):,} chars)"  # a kept sketch, say


def _plan(args: argparse.Namespace) -> Any:
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan

    return build_plan(parse_job(Path(args.job)))


def _profile(args: argparse.Namespace) -> Profile:
    from headrace.jobs.profiles import load_profile

    return load_profile(args.profile, Path(args.profiles) if args.profiles else None)


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.profile:
        from headrace.jobs.schema_cmds import check_job_reads_subject

        unreadable = check_job_reads_subject(plan, _profile(args))
        for line in unreadable:
            out.print(f"error: {line}", markup=False)
        if unreadable:
            return 1
    out.print(f"ok: job '{plan.name}' — source '{plan.spec.source.kafka.topic}', "
              f"{len(plan.spec.steps)} steps, {len(plan.sinks)} sink(s); schema {plan.schema.path.name}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write the example jobs, the users table and the schema into a project folder (from the
    installed package)."""
    import importlib.resources

    target = Path(args.dir)
    jobs = importlib.resources.files("headrace.jobs")
    files = {Path("jobs") / "page_activity.yaml": jobs / "page_activity.yaml",
             Path("jobs") / "site_activity.yaml": jobs / "site_activity.yaml",
             Path("jobs") / "data" / "users.csv": jobs / "data" / "users.csv",
             Path("schemas") / "click.schema.json":
                 importlib.resources.files("headrace.schemas") / "click.schema.json"}
    existing = [str(target / rel) for rel in files if (target / rel).exists()]
    if existing:
        raise HeadraceError(f"{existing[0]} already exists", hint="choose an empty folder, or remove the file")
    for rel, resource in files.items():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(resource.read_bytes())
        out.print(f"wrote {target / rel}")
    out.print(f"next: cd {target} && headrace generate --out .headrace/local/clicks.jsonl "
              "&& headrace run jobs/page_activity.yaml", markup=False)
    return 0


def explain_tree(plan: Any) -> Tree:
    """The job graph: source → steps → sinks, each with its Flink uids and outputs."""
    from headrace.schemas.durations import format_duration_ms as d

    spec = plan.spec
    et = spec.source.event_time

    def uid(text: str) -> str:
        return f"  [cyan]{escape(text)}.*[/cyan]"

    tree = Tree(f"[bold]job {plan.name}[/bold] — parallelism {spec.parallelism}, "
                f"checkpoint every {d(spec.checkpoint.interval)}")
    source = tree.add(escape(
        f"source: kafka topic '{spec.source.kafka.topic}' (group '{spec.source.kafka.group or spec.job}'), "
        f"{spec.source.format.kind} {plan.schema.path.name}; event time '{et.field}', "
        f"watermark -{d(et.max_out_of_orderness)} per partition"
        + (f", idle after {d(et.idle_timeout)}" if et.idle_timeout else ""))
        + uid(plan.source_uid))
    branches: dict[str | None, Any] = {None: source}
    for node in plan.steps:
        label = f"step {node.id} ({node.kind}): {node.explain()}"
        branches[node.id] = branches[plan.inputs[node.id]].add(escape(label) + uid(node.uid))
    for sink in plan.sinks:
        branches[plan.inputs[sink.id]].add(escape(f"sink {sink.kind}: {sink.explain()}") + uid(sink.uid))
    aggregates = ", ".join(a.id for a in plan.view_steps if a.judged_by == a.id)
    tree.add(escape(f"dead letter → kafka topic '{plan.dead_letter_topic}' ← every step and sink")
             + uid(plan.dead_letter_uid))
    tree.add(escape(f"late output → kafka topic '{plan.late_topic}' ← {aggregates} (records behind the watermark "
                    "by more than their step's allowed lateness)") + uid(plan.late_uid))
    return tree


def cmd_explain(args: argparse.Namespace) -> int:
    plan = _plan(args)
    out.print(explain_tree(plan))
    for note in plan.notes:
        out.print(f"note: {note}")
    if args.sql:
        from headrace.jobs.compiler import compile_job
        from headrace.jobs.runner import explain_sql

        out.print(explain_sql(compile_job(plan, _profile(args))), markup=False)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from headrace.jobs.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def cmd_jars(args: argparse.Namespace) -> int:
    from headrace.connectors import jars
    from headrace.operators import jvm

    jars.fetch(args.maven_repo, say=lambda s: out.print(s, markup=False))
    path = jvm.build(say=lambda s: out.print(s, markup=False))
    out.print(f"Headrace's JVM functions: {path}", markup=False)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from headrace.jobs.sample import click_events, encoder_for, write_encoded, write_jsonl

    if args.job is None:
        path = Path(args.out or ".headrace/local/clicks.jsonl")
        n = write_jsonl(path, click_events(args.events, seed=args.seed))
        out.print(f"wrote {n:,} sample click events to {path}")
        return 0
    # the job's topic under the embedded profile, in the job's format; its schema registered
    from headrace.connectors import embedded
    from headrace.connectors.registry import register

    args.job = str(args.job)
    plan = _plan(args)
    profile = _profile(args)
    if profile.embedded is None:
        raise HeadraceError(f"profile '{profile.name}' is not embedded: generate writes the embedded topic files",
                            hint="use the local profile, or produce to the broker yourself")
    fmt, topic = plan.spec.source.format, plan.spec.source.kafka.topic
    schema_id = None
    if fmt.wire == "confluent":
        subject = fmt.subject or f"{topic}-value"
        schema_id = register(profile, subject, plan.schema.path.read_text(encoding="utf-8"), fmt.format)
        out.print(f"registered {plan.schema.path.name} as subject '{subject}' (id {schema_id}) "
                  "in the embedded registry")
    path = Path(args.out) if args.out else embedded.topic_file(Path(profile.embedded.data_dir), topic, fmt.binary)
    events = click_events(args.events, seed=args.seed, emails=True)
    if fmt.binary:
        n = write_encoded(path, events, encoder_for(plan, schema_id))
    else:
        n = write_jsonl(path, events)
    out.print(f"wrote {n:,} sample click events ({fmt.kind}{', Confluent wire format' if schema_id else ''}) "
              f"to {path}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Records onto a topic: a JSON-lines file or the sample, in the job's format, keyed by tenant."""
    from headrace.connectors import kafka, producer
    from headrace.connectors.registry import register
    from headrace.jobs.sample import click_events, encoded_sample, encoder_for
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    profile = _profile(args)
    if profile.kafka is None:
        raise HeadraceError(f"profile '{profile.name}' has no broker: produce writes to Kafka",
                            hint="use a profile with 'kafka:', or 'headrace generate' for the embedded topic files")
    if (args.source is None) == (args.generate is None):
        raise HeadraceError("give the records: --from FILE (JSON lines; - for stdin) or --generate N (the sample)")
    plan = _plan(args) if args.job else None
    topic = args.topic or (plan.spec.source.kafka.topic if plan else None)
    if topic is None:
        raise HeadraceError("name the topic, or --job JOB to produce to the job's source topic")
    encode: Any = None
    kind = plan.spec.source.format.kind if plan is not None else "json"
    if plan is not None and plan.spec.source.format.binary:
        fmt = plan.spec.source.format
        schema_id = None
        if fmt.wire == "confluent":
            subject = fmt.subject or f"{topic}-value"
            schema_id = register(profile, subject, plan.schema.path.read_text(encoding="utf-8"), fmt.format)
            err.print(f"registered {plan.schema.path.name} as subject '{subject}' (id {schema_id})")
        encode = encoder_for(plan, schema_id)
    if args.partitions:
        kafka.ensure_topics(profile.kafka, {topic}, partitions=args.partitions)

    def items() -> Any:
        if args.generate is not None:
            for event in click_events(args.generate, seed=args.seed, emails=True):
                payload = event.payload if encode is None else encoded_sample(event.payload, encode)
                yield producer.json_object(event.payload), payload, event.timestamp_ms
            return
        stream = sys.stdin.buffer if args.source == "-" else Path(args.source).open("rb")  # noqa: SIM115
        with stream:
            for number, record, line in producer.json_lines(stream):
                payload = line
                if encode is not None:
                    try:
                        payload = encode(record)
                    except (ValueError, TypeError, AttributeError) as exc:
                        raise HeadraceError(f"record {number} cannot be written as {kind}: "
                                            f"{exc}", where=f"{args.source}:{number}",
                                            hint="fix the record, or produce JSON to a JSON job's topic") from None
                ts = record.get(plan.spec.source.event_time.field) if plan and record else None
                yield record, payload, ts if isinstance(ts, int) else None

    total = args.generate
    with Progress(TextColumn("producing to {task.fields[topic]}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("produce", total=total, topic=topic)
        result = producer.produce(profile.kafka, topic, items(), rate=args.rate,
                                  on_progress=lambda n: progress.update(task, completed=n))
    table = Table(title=f"{result.records:,} records to '{topic}' in {result.seconds:.1f}s "
                        f"({result.records / max(result.seconds, 1e-9):,.0f}/s)")
    table.add_column("partition", justify="right")
    table.add_column("records", justify="right")
    for partition, count in sorted(result.per_partition.items()):
        table.add_row(str(partition), f"{count:,}")
    out.print(table)
    return 0


def view_table(name: str, columns: list[str], rows: list[tuple[Any, ...]], limit: int) -> Table:
    shown = [i for i, c in enumerate(columns) if not c.startswith("_")]  # _records: bookkeeping
    columns = [columns[i] for i in shown]
    rows = [tuple(row[i] for i in shown) for row in rows]
    count = f"newest {limit:,} rows" if len(rows) >= limit else f"{len(rows):,} rows"
    table = Table(title=f"{name} ({count})", title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if c not in ("window_start", "window_end") else "left")
    for row in rows[:limit]:
        table.add_row(*[_cell(v) for v in row])
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.runner import run_embedded, submit_local, watch

    plan = _plan(args)
    profile = _profile(args)
    say = (lambda s: err.print(s, markup=False))
    started = time.time()
    if profile.embedded is not None:
        compiled = compile_job(plan, profile)
        summary = run_embedded(compiled, say)
        print_views(plan, profile, args.limit)
        if len(plan.view_steps) == 1:
            aggregated = (summary.records_in or 0) - summary.dead_lettered - summary.late
            out.print(f"{summary.records_in:,} records in → {aggregated:,} aggregated, "
                      f"{summary.dead_lettered:,} dead-lettered ({plan.dead_letter_topic}), "
                      f"{summary.late:,} late ({plan.late_topic}); {summary.seconds:.1f}s")
        else:  # each aggregate judges lateness with its own allowance
            def late(step: Any) -> int:  # a roll-up's records were judged by the step it rolls up
                return summary.late_by_step[step.judged_by]

            per_step = "; ".join(
                f"{a.id}: {(summary.records_in or 0) - summary.dead_lettered - late(a):,} "
                f"aggregated, {late(a):,} late" for a in plan.view_steps)
            out.print(f"{summary.records_in:,} records in, {summary.dead_lettered:,} dead-lettered "
                      f"({plan.dead_letter_topic}) → {per_step} ({plan.late_topic}); {summary.seconds:.1f}s")
        print_reports(plan, started)
        classarchive.save(say)
        return 0
    store, restore = _resume_point(profile, plan.name, args.fresh, say)
    compiled = compile_job(plan, profile, bounded_offsets=_offsets(args.stop_at_offsets), from_earliest=args.fresh)
    result, summary = submit_local(compiled, say, restore=restore)
    if not args.stop_at_offsets:
        say("running until interrupted (Ctrl-C cancels the job; running it again resumes where it stopped)")
    try:
        watch(result, compiled, summary, say, stop_at=_offsets(args.stop_at_offsets),
              restored=restore is not None)
    except KeyboardInterrupt:
        say("cancelling the job (its last checkpoint is kept: run the same command to resume) …")
        client = result.get_job_client()
        if client is not None:
            client.cancel().result()
        return 130
    if store is not None:
        store.forget()  # a finished job has nothing left to resume
    say("job finished")
    print_views(plan, profile, args.limit)
    print_reports(plan, started)
    return 0


def print_reports(plan: Any, since: float) -> None:
    """What the job's steps and sinks have to say of this run (the enrich steps: their lookups)."""
    kinds: dict[str, list[Any]] = {}
    for node in (*plan.steps, *plan.sinks):
        kinds.setdefault(node.kind, []).append(node)
    for nodes in kinds.values():
        report = nodes[0].run_report(nodes, plan.name, since)
        if report is not None:
            out.print(report)


def _resume_point(profile: Profile, job: str, fresh: bool, say: Any) -> tuple[Any, Any]:
    """The job's checkpoint store and the checkpoint to resume from (None: start anew)."""
    from headrace.jobs.checkpoints import CheckpointStore

    local = profile.state.checkpoints_local
    if local is None:
        say(f"note: checkpoints go to {profile.state.checkpoints}; this command cannot list them there, "
            "so it starts anew (use 'headrace resume --from PATH' on a cluster)")
        return None, None
    store = CheckpointStore(local, job)
    if fresh:
        store.forget()
        say(f"starting fresh: checkpoints of '{job}' removed, reading the topic from its earliest offsets")
        return store, None
    restore = store.latest()
    if restore is None:
        return store, None
    store.keep_only(restore)
    say(f"resuming '{job}' from {restore.describe()} in {restore.path}; --fresh starts over")
    return store, restore


def _cluster_dirs(args: argparse.Namespace) -> Any:
    from headrace.jobs.cluster import ClusterDirs

    return ClusterDirs(Path(args.dir))


def cmd_cluster(args: argparse.Namespace) -> int:
    from headrace.jobs import cluster

    dirs = _cluster_dirs(args)
    say = (lambda s: out.print(s, markup=False))
    if args.action == "up":
        profile = _profile(args)
        from headrace.jobs.runner import free_port

        cluster.up(dirs, rest_port=args.port, rpc_port=free_port(),
                   checkpoints=profile.state.uri(profile.state.checkpoints),
                   savepoints=profile.state.uri(profile.state.savepoints), prometheus_port=args.metrics_port, say=say,
                   taskmanagers=args.taskmanagers or profile.cluster.taskmanagers,
                   slots=args.slots or profile.cluster.slots)
        return 0
    if args.action == "down":
        cluster.down(dirs, say)
        return 0
    client = cluster.ClusterClient(f"http://127.0.0.1:{args.port}")
    overview = client.overview()
    if overview is None:
        out.print(f"no cluster answers on 127.0.0.1:{args.port} (start one with 'headrace cluster up')")
        return 1
    out.print(f"cluster {client.rest_url}: Flink {overview.get('flink-version')}, {overview['taskmanagers']} "
              f"TaskManager(s), {overview['slots-available']} of {overview['slots-total']} slots free, "
              f"{overview['jobs-running']} job(s) running")
    table = Table(title="TaskManagers", title_justify="left")
    for column in ("id", "slots", "free", "last heartbeat"):
        table.add_column(column)
    for tm in client.get("/taskmanagers")["taskmanagers"]:
        table.add_row(tm["id"], str(tm["slotsNumber"]), str(tm["freeSlots"]),
                      f"{tm['timeSinceLastHeartbeat'] / 1000:.1f}s ago")
    out.print(table)
    _print_jobs(client)
    _print_placement(client)
    return 0


def _print_placement(client: Any) -> None:
    """Which TaskManager runs how many subtasks of each running job's tasks."""
    for job in client.jobs():
        if job["state"] != "RUNNING":
            continue
        table = Table(title=f"subtasks of '{job['name']}' ({job['jid'][:8]}) by TaskManager", title_justify="left")
        for column in ("task", "TaskManager", "subtasks"):
            table.add_column(column, justify="right" if column == "subtasks" else "left")
        try:
            rows = client.placement(job["jid"])
        except HeadraceError:
            continue
        for name, tm, count in rows:
            table.add_row(name[:70] + ("…" if len(name) > 70 else ""), tm, str(count))
        out.print(table)


def _client(args: argparse.Namespace) -> Any:
    from headrace.jobs.cluster import ClusterClient

    return ClusterClient(args.cluster or _profile(args).cluster.rest)


def _print_jobs(client: Any) -> None:
    from datetime import UTC, datetime

    table = Table(title=f"jobs on {client.rest_url}", title_justify="left")
    for column in ("name", "job id", "state", "uptime", "last checkpoint", "records in", "dead-lettered",
                   "late", "watermark lag"):
        table.add_column(column, justify="right" if column in ("records in", "dead-lettered", "late") else "left")
    now_ms = time.time() * 1000
    for job in sorted(client.jobs(), key=lambda j: -j["start-time"]):
        running = job["state"] in ("RUNNING", "RESTARTING")
        uptime = (now_ms - job["start-time"]) / 1000 if running else job.get("duration", 0) / 1000
        checkpoint, counts, lag = "", ["", "", ""], ""
        try:
            last = client.last_checkpoint(job["jid"])
            if last:
                age = (now_ms - last["latest_ack_timestamp"]) / 1000
                checkpoint = f"#{last['id']}, {age:,.0f}s ago"
            if running:
                counts = [_count(n) for n in client.counts(job["jid"])]
                mark = client.low_watermark(job["jid"])
                if mark is not None and mark > 0:
                    at = datetime.fromtimestamp(mark / 1000, UTC)
                    lag = f"{(now_ms - mark) / 1000:,.1f}s (at {at:%Y-%m-%d %H:%M:%S})"
        except HeadraceError:
            pass
        table.add_row(job["name"], job["jid"], job["state"], f"{uptime:,.0f}s", checkpoint, *counts, lag)
    out.print(table)


def _count(value: float | None) -> str:
    return "" if value is None else f"{int(value):,}"


def cmd_jobs(args: argparse.Namespace) -> int:
    _print_jobs(_client(args))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.runner import submit_to_cluster

    plan = _plan(args)
    profile = _profile(args)
    if profile.embedded is not None:
        raise HeadraceError(f"profile '{profile.name}' is embedded: it has no cluster",
                            hint="submit with a service profile (kafka, the stores its sinks use, cluster)")
    rest = args.cluster or profile.cluster.rest
    restore = getattr(args, "from_path", None)
    compiled = compile_job(plan, profile, bounded_offsets=_offsets(getattr(args, "stop_at_offsets", None)))
    say = (lambda s: err.print(s, markup=False))
    job_id = submit_to_cluster(compiled, rest, say, restore_from=_state_uri(restore),
                               parallelism=getattr(args, "parallelism", None),
                               allow_removed_state=getattr(args, "allow_removed_state", False))
    verb = f"resumed from {restore}" if restore else "submitted"
    say(f"job '{plan.name}' {verb} to {rest}")
    out.print(job_id)
    return 0


def _state_uri(path: str | None) -> str | None:
    """A savepoint or checkpoint location for Flink: URIs as given (Flink prints ``file:/...``),
    local paths checked and made absolute."""
    import re

    if path is None:
        return None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", path) and not path.startswith("file:"):
        return path
    local = Path(re.sub(r"^file:(//)?", "", path))
    if not local.exists():
        raise HeadraceError(f"no savepoint or checkpoint at {path}", hint="pass the path 'headrace stop' printed")
    return local.resolve().as_uri()


def cmd_savepoint(args: argparse.Namespace) -> int:
    client = _client(args)
    job_id = client.find(args.job_ref)
    profile = _profile(args)
    location = client.savepoint(job_id, profile.state.uri(profile.state.savepoints))
    err.print(f"savepoint of job {job_id} written", markup=False)
    out.print(location)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if not args.savepoint and not args.drain:
        return cmd_cancel(args)
    client = _client(args)
    job_id = client.find(args.job_ref)
    profile = _profile(args)
    location = client.stop(job_id, profile.state.uri(profile.state.savepoints), drain=args.drain)
    err.print(f"job {job_id} stopped{' (drained: every window fired)' if args.drain else ''}; "
              f"resume with 'headrace resume JOB --from {location}'", markup=False)
    out.print(location)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = _client(args)
    job_id = client.find(args.job_ref)
    client.cancel(job_id)
    err.print(f"job {job_id} cancelled (its last checkpoint is kept)", markup=False)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    dirs = _cluster_dirs(args)
    files = sorted(dirs.log.glob("*.log"))
    if not files:
        raise HeadraceError(f"no cluster logs in {dirs.log}", hint="start the cluster with 'headrace cluster up'")
    for path in files:
        if args.taskmanager and "taskexecutor" not in path.name:
            continue
        lines = path.read_text(errors="replace").splitlines()
        out.print(f"== {path} (last {min(args.lines, len(lines))} of {len(lines)} lines)", markup=False)
        for line in lines[-args.lines:]:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def _offsets(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        pairs = [part.split(":") for part in text.split(",")]
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise HeadraceError(f"--stop-at-offsets '{text}' is not PARTITION:OFFSET[,...]",
                            hint="write e.g. --stop-at-offsets 0:50000,1:49872") from None


def cmd_views(args: argparse.Namespace) -> int:
    from headrace.jobs.catalog import load_catalog

    catalog = load_catalog(Path(args.project))
    table = Table(title=f"views of {Path(args.project).resolve()} ({len(catalog.views)})", title_justify="left")
    for column in ("view", "store", "keys", "measures", "job / step"):
        table.add_column(column)
    notes: dict[str, str] = {}
    for view in catalog.views:
        estimated = dict(view.view.approximate)
        for accuracy in estimated.values():
            notes.setdefault(accuracy, "*" * (len(notes) + 1))
        table.add_row(view.name, view.store, ", ".join(view.view.key_names),
                      ", ".join(f"{n} {t.value}{' ≈' + notes[estimated[n]] if n in estimated else ''}"
                                for n, t in view.view.measures), f"{view.job} / {view.step}")
    out.print(table)
    for accuracy, mark in notes.items():
        out.print(f"≈{mark} estimated: {accuracy}", markup=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from headrace.jobs.serve import serve

    return serve(Path(args.project), _profile(args), args.host, args.port,
                 say=lambda s: err.print(s, markup=False), grpc_port=args.grpc_port)


def cmd_k8s(args: argparse.Namespace) -> int:
    from headrace.jobs import k8s
    from headrace.jobs.profiles import DEFAULT_PROFILES, load_profile

    project = Path(args.project).resolve()
    profiles = Path(args.profiles or os.environ.get("HEADRACE_PROFILES", DEFAULT_PROFILES))
    profile = load_profile(args.profile, profiles, keep_env=True)
    paths = [Path(j) for j in args.jobs] or sorted((project / "jobs").glob("*.yaml"))
    jobs = []
    for path in paths:
        if path.name == "profiles.yaml":
            continue
        plan = _plan(argparse.Namespace(job=str(path)))
        try:
            relative = path.resolve().relative_to(project)
        except ValueError:
            raise HeadraceError(f"job spec {path} is outside the project {project}",
                                hint="keep the job specs under the project's jobs/ (or pass --project)") from None
        environment = sorted({n for node in (*plan.steps, *plan.sinks) for n in node.environment(profile)})
        jobs.append((k8s.JobFile(plan.name, relative, tuple(environment)), args.parallelism or plan.spec.parallelism))
    out_dir = Path(args.out)
    written = k8s.render(profile, profiles, jobs, project, out_dir)
    manifests = [p for p in written if p.suffix == ".yaml" and "image" not in p.relative_to(out_dir).parts]
    err.print(f"rendered {len(manifests)} manifest file(s) for {len(jobs)} job(s) into {out_dir} "
              f"(Flink Kubernetes Operator {k8s.OPERATOR_VERSION}, Flink {k8s.flink_version()}); "
              f"secrets to create: {out_dir / 'SECRETS.md'}; the image: {out_dir / 'image' / 'Dockerfile'}",
              markup=False, soft_wrap=True)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from headrace.jobs.dashboard import PANELS, dashboard_json

    Path(args.out).write_text(dashboard_json(), encoding="utf-8")
    err.print(f"wrote the Grafana dashboard ({len(PANELS)} panels, Prometheus data source) to {args.out}; "
              "import it in Grafana (Dashboards → New → Import)", markup=False, soft_wrap=True)
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from headrace.connectors.serving.registry_api import serve_profile
    from headrace.jobs.registry import FORMATS

    profile = _profile(args) if args.profile else None
    serve_profile(profile, args.store, args.host, args.port, FORMATS, say=lambda s: err.print(s, markup=False))
    return 0


def cmd_grpc_stubs(args: argparse.Namespace) -> int:
    from headrace.connectors.serving.grpcapi import build_stubs

    out = build_stubs(Path(args.out))
    err.print(f"wrote headrace_views_pb2.py and headrace_views_pb2_grpc.py to {out}", markup=False)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """A view's rows, filtered: from a running ``headrace serve`` (``--url``, with a token) or
    straight from the profile's store (the project's view definitions, all tenants)."""
    params: list[tuple[str, str]] = []
    for condition in args.where or []:
        name, sep, value = condition.partition("=")
        if not sep:
            raise HeadraceError(f"--where '{condition}' is not KEY=VALUE", hint="write e.g. --where tenant_id=t1")
        params.append((name, value))
    if args.since:
        params.append(("since", args.since))
    params.append(("limit", str(args.limit)))
    if args.url:
        body = _query_url(args.url, args.view, params)
    else:
        from headrace.connectors.serving.query import BadRequest, parse_query
        from headrace.connectors.serving.stores import StoreUnavailable
        from headrace.jobs.catalog import load_catalog
        from headrace.jobs.serve import readers

        profile = _profile(args)
        view = load_catalog(Path(args.project)).get(args.view)
        if view is None:
            raise HeadraceError(f"no view '{args.view}' in the jobs of {Path(args.project).resolve()}",
                                hint="'headrace views' lists them; --project names another folder")
        reader = readers(profile, profile.serve.timeout).get(view.store)
        if reader is None:
            raise HeadraceError(f"view '{view.name}' is in {view.store}, which this command cannot read yet")
        try:
            body = reader.read(parse_query(view, params, max_rows=max(args.limit, 1)))
        except (BadRequest, StoreUnavailable) as exc:
            raise HeadraceError(str(exc)) from None
        finally:
            reader.close()
    rows = body["rows"]
    if args.format == "json":
        print(json.dumps(body, indent=2))
    elif args.format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    else:
        columns = list(rows[0]) if rows else []
        out.print(view_table(args.view, columns, [tuple(r.values()) for r in rows], args.limit))
        if body.get("note"):
            out.print(f"note: {body['note']}")
    return 0


def _query_url(url: str, view: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    """GET a view from a running ``headrace serve``; the token comes from $HEADRACE_TOKEN."""
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    token = os.environ.get("HEADRACE_TOKEN")
    if not token:
        raise HeadraceError("--url needs a bearer token in $HEADRACE_TOKEN", hint="export HEADRACE_TOKEN=<jwt>")
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/views/{urllib.parse.quote(view)}?"
                                     f"{urllib.parse.urlencode(params)}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", "")
        except ValueError:
            reason = ""
        raise HeadraceError(f"{url} answered {exc.code}: {reason or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise HeadraceError(f"cannot reach {url}: {exc.reason}", hint="start 'headrace serve' or fix --url") from None


def print_views(plan: Any, profile: Profile, limit: int) -> None:
    """The newest windows of each view the job wrote, read back through its store's reader (the
    embedded profile's SQLite, PostgreSQL, Redis, InfluxDB: whatever the sink kind serves from)."""
    from headrace.connectors.serving.query import ViewQuery
    from headrace.connectors.serving.stores import StoreUnavailable
    from headrace.jobs.serve import readers
    from headrace.schemas.views import RECORDS_COLUMN, ServedView

    stores = readers(profile, profile.serve.timeout)
    shown: set[tuple[int, str]] = set()
    try:
        for sink in plan.sinks:
            reader = stores.get(sink.kind)
            if reader is None or (id(reader), sink.view.name) in shown:
                continue
            shown.add((id(reader), sink.view.name))
            served = ServedView(view=sink.view, store=sink.kind, job=plan.name, step=plan.inputs[sink.id] or "",
                                spec=str(plan.path))
            fields = tuple(n for n, _ in sink.view.columns if n != RECORDS_COLUMN)
            try:
                body = reader.read(ViewQuery(view=served, fields=fields, limit=max(limit, 1)))
            except StoreUnavailable as exc:
                err.print(f"note: cannot show view '{sink.view.name}' ({sink.kind}): {exc}", markup=False)
                continue
            except Exception as exc:  # the job ran; a store that cannot be read back is only a note
                err.print(f"note: cannot show view '{sink.view.name}' ({sink.kind}): {type(exc).__name__}: "
                          f"{str(exc)[:200]}", markup=False)
                continue
            rows = body["rows"]
            title = sink.view.name if profile.embedded is not None else f"{sink.view.name} in {sink.kind}"
            out.print(view_table(title, list(fields), [tuple(r[f] for f in fields) for r in rows], limit))
            if body.get("note"):
                out.print(f"note: {body['note']}", markup=False)
    finally:
        for reader in {id(r): r for r in stores.values()}.values():
            reader.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrace", description="Declarative stream pipelines on Flink.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Python and Java traces on errors")
    parser.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("HEADRACE_LOG_FORMAT", "text"),
                        help="what goes to stderr: text (default), or one JSON object a line "
                             "(default from $HEADRACE_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="local", help="connection profile (default: local, embedded)")
        p.add_argument("--profiles", help="profiles file (default: $HEADRACE_PROFILES or jobs/profiles.yaml)")

    p = sub.add_parser("init", help="write the example job and its schema into a project folder")
    p.add_argument("dir", nargs="?", default=".")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("validate", help="check a job spec")
    p.add_argument("job")
    p.add_argument("--profile", help="also check that the job reads every version its registry holds of its subject")
    p.add_argument("--profiles", help="profiles file (default: $HEADRACE_PROFILES or jobs/profiles.yaml)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("explain", help="print the plan of a job")
    p.add_argument("job")
    p.add_argument("--sql", action="store_true", help="also print the Flink SQL (secrets masked)")
    with_profile(p)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("run", help="run a job")
    p.add_argument("job")
    p.add_argument("--limit", type=int, default=40, help="rows of each view to print")
    p.add_argument("--stop-at-offsets", metavar="P:O,...",
                   help="finish once every source partition P reaches offset O (backfills, tests)")
    p.add_argument("--fresh", action="store_true",
                   help="forget the job's checkpoints and read the topic from its earliest offsets")
    with_profile(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("generate", help="write sample click events (JSON lines, or a job's topic in its format)")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", help="the file (default: .headrace/local/clicks.jsonl, or the job's topic file)")
    p.add_argument("--job", help="write the job's topic under the embedded profile, in its source format "
                                 "(Avro, Protobuf, the Confluent wire format: the schema is registered too)")
    with_profile(p)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("produce", help="write records to a Kafka topic, keyed by tenant (Kafka's default partitioner)")
    p.add_argument("topic", nargs="?", help="the topic (default: the --job's source topic)")
    p.add_argument("--from", dest="source", metavar="FILE", help="JSON lines to produce (- reads stdin)")
    p.add_argument("--generate", type=int, metavar="N", help="produce N sample click events instead")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--job", help="write in this job's source format (Avro, Protobuf, Confluent wire) to its topic")
    p.add_argument("--rate", type=float, metavar="R", help="at most R records per second")
    p.add_argument("--partitions", type=int, metavar="N", help="create the topic with N partitions if it is missing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    with_profile(p)
    p.set_defaults(func=cmd_produce)
    p = sub.add_parser("query", help="print a view's rows (filtered), locally or from a running serve")
    p.add_argument("view")
    p.add_argument("--where", action="append", metavar="KEY=VALUE", help="a group key equals (repeat)")
    p.add_argument("--since", help="window start at or after: ISO-8601, epoch ms or a duration back (1h)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--url", help="a running 'headrace serve' (token in $HEADRACE_TOKEN)")
    p.add_argument("--project", default=".", help="the folder holding jobs/ (default: here)")
    with_profile(p)
    p.set_defaults(func=cmd_query)
    p = sub.add_parser("views", help="the views of a project's jobs: columns and where they live")
    p.add_argument("--project", default=".", help="the folder holding jobs/ (default: here)")
    p.set_defaults(func=cmd_views)
    p = sub.add_parser("serve", help="serve the views to analysts: REST, GraphQL, gRPC, a web page (authenticated)")
    p.add_argument("--project", default=".", help="the folder holding jobs/ (default: here)")
    p.add_argument("--host", help="address to bind (default: the profile's serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default: the profile's serve.port, 8700)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default: serve.grpc_port, else the HTTP port + 1; 0: off)")
    with_profile(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("grpc-stubs", help="generate Python gRPC client code for the views service")
    p.add_argument("--out", required=True, help="folder to write headrace_views_pb2*.py into")
    p.set_defaults(func=cmd_grpc_stubs)
    p = sub.add_parser("k8s", help="Kubernetes: render manifests for the Flink Kubernetes Operator, and the image")
    p.add_argument("action", choices=["render"])
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job specs (default: every jobs/*.yaml of the project)")
    p.add_argument("--out", required=True, help="folder to write the manifests and the image's build context to")
    p.add_argument("--project", default=".", help="the folder holding jobs/ and schemas/ (default: here)")
    p.add_argument("--parallelism", type=int, help="every job's parallelism (default: each spec's own)")
    with_profile(p)
    p.set_defaults(func=cmd_k8s)
    p = sub.add_parser("dashboard", help="write the Grafana dashboard of Headrace's metrics (JSON)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.set_defaults(func=cmd_dashboard)
    p = sub.add_parser("cluster", help="a local Flink session cluster: up | down | status")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--port", type=int, default=8081, help="REST port on 127.0.0.1 (default 8081)")
    p.add_argument("--metrics-port", type=int, default=9249,
                   help="first Prometheus port on 127.0.0.1 (default 9249; 10 ports are tried)")
    p.add_argument("--dir", default=".headrace/cluster", help="configuration, logs and PID files")
    p.add_argument("--taskmanagers", type=int, metavar="N",
                   help="TaskManager processes to start (default: the profile's cluster.taskmanagers, 1)")
    p.add_argument("--slots", type=int, metavar="S", help="slots per TaskManager (default: cluster.slots, 4)")
    with_profile(p)
    p.set_defaults(func=cmd_cluster)

    def with_cluster(p: argparse.ArgumentParser) -> None:
        with_profile(p)
        p.add_argument("--cluster", help="REST address of the cluster (default: the profile's cluster.rest)")

    p = sub.add_parser("submit", help="submit a job to the session cluster (detached); prints its job id")
    p.add_argument("job")
    p.add_argument("--parallelism", type=int)
    p.add_argument("--stop-at-offsets", metavar="P:O,...", help="a bounded job (backfills)")
    with_cluster(p)
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("resume", help="submit a job restoring a savepoint or retained checkpoint")
    p.add_argument("job")
    p.add_argument("--from", dest="from_path", required=True, metavar="PATH")
    p.add_argument("--parallelism", type=int)
    p.add_argument("--allow-removed-state", action="store_true",
                   help="drop the state of operators the changed job no longer has (refused otherwise)")
    with_cluster(p)
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("jobs", help="jobs on the cluster: state, uptime, checkpoint, counts, watermark lag")
    with_cluster(p)
    p.set_defaults(func=cmd_jobs)
    for name, func, text in (
            ("savepoint", cmd_savepoint, "write a savepoint of a running job (by name or id)"),
            ("stop", cmd_stop, "stop a job: cancel, or with --savepoint / --drain a savepoint first"),
            ("cancel", cmd_cancel, "cancel a job (its last checkpoint is kept)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_ref", metavar="JOB", help="a job name (its newest running job) or a job id")
        with_cluster(p)
        p.set_defaults(func=func)
        if name == "stop":
            p.add_argument("--savepoint", action="store_true", help="write a savepoint, then stop")
            p.add_argument("--drain", action="store_true", help="fire every window first, as a bounded job ends")
    p = sub.add_parser("logs", help="the cluster's JobManager and TaskManager logs")
    p.add_argument("--lines", type=int, default=60)
    p.add_argument("--taskmanager", action="store_true", help="TaskManager logs only")
    p.add_argument("--dir", default=".headrace/cluster")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("registry", help="a schema registry speaking the Confluent REST API: serve")
    p.add_argument("action", choices=["serve"])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8085)
    p.add_argument("--store", help="an SQLite file (default: the profile's PostgreSQL under a service profile, "
                                    "else .headrace/registry.sqlite)")
    p.add_argument("--profile", help="keep the registry in this profile's PostgreSQL")
    p.add_argument("--profiles", help="profiles file (default: $HEADRACE_PROFILES or jobs/profiles.yaml)")
    p.set_defaults(func=cmd_registry)
    p = sub.add_parser("jars", help="fetch and verify the connector jars, build the JVM functions")
    p.add_argument("--maven-repo", help="take the jars from this Maven repository instead of PyPI")
    p.set_defaults(func=cmd_jars)
    from headrace.jobs.schema_cmds import add_parsers

    add_parsers(sub, with_profile, cmd_schema)
    return parser


def python_error(message: str) -> str | None:
    """The exception a Python worker's traceback ends with, quoted in a Java message.

    >>> python_error("Error received from SDK harness: Traceback (most recent call last):\\n  File x\\n"
    ...              "ZeroDivisionError: division by zero\\n\\nDuring handling...\\nRuntimeError: udaf x failed")
    'RuntimeError: udaf x failed'
    """
    if "Traceback (most recent call last)" not in message:
        return None
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", message, re.M)
    return f"{found[-1][0]}: {found[-1][1]}"[:300] if found else None


def java_root_cause(exc: BaseException) -> str | None:
    """``Class: message`` of the innermost Java cause of a Py4J or PyFlink error, if there is one."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        trace = getattr(exc, "stack_trace", None)  # pyflink.util.exceptions.JavaException
        if isinstance(trace, str) and trace.strip():
            from headrace.jobs.monitor import root_cause

            return root_cause(trace)
        return None
    # the innermost cause outside the JDK explains most (PSQLException over its ConnectException)
    chain = [java]
    while chain[-1].getCause() is not None and chain[-1].getCause() is not chain[-1]:
        chain.append(chain[-1].getCause())
    for link in reversed(chain):  # a Python worker's error (a udf raised): its own last line
        raised = python_error(str(link.getMessage() or ""))
        if raised:
            return raised
    outside = [c for c in chain if not str(c.getClass().getName()).startswith(("java.", "javax.", "sun.", "jdk."))]
    cause = (outside or chain)[-1]
    message = (cause.getMessage() or "").strip()
    first = message.splitlines()[0].split(". ")[0] if message else ""
    return f"{cause.getClass().getSimpleName()}: {first}"


def main(argv: Sequence[str] | None = None) -> int:
    global err
    args = build_parser().parse_args(argv)
    if argv is None:  # the headrace command itself, not a caller in its own interpreter
        classarchive.allow_writing()
    console = err
    if args.log_format == "json" or args.command == "serve":
        from headrace.connectors import logs

        logs.configure(args.log_format)
        if args.log_format == "json":
            err = logs.JsonConsole()  # type: ignore[assignment]
    try:
        return _run(args)
    finally:
        err = console


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except HeadraceError as exc:
        if args.verbose:
            traceback.print_exc()
        err.print(f"error: {exc.line()}", markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # a Flink/Java failure: cause first, trace only when asked
        cause = java_root_cause(exc)
        if cause is None:
            raise
        if args.verbose:
            traceback.print_exc()
        err.print(f"error: the Flink job failed: {cause}"
                  + ("" if args.verbose else " (run with --verbose for the Java trace)"),
                  markup=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
