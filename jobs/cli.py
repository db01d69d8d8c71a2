"""The ``headrace`` command line.

    headrace validate JOB            check a job spec (and its schema) without running it
    headrace explain JOB [--sql]     the plan: source, steps with Flink uids, sinks, outputs
    headrace run JOB [--profile P]   run it (profile 'local' = embedded, no servers)
    headrace generate --events N     sample click events for the example job
    headrace query VIEW              print a materialized view (embedded profile)
    headrace jars [--maven-repo URL] fetch and verify the connector jars, build the JVM functions
    headrace schema                  JSON Schema of the job spec, for editors

Errors a user can cause print one line (what, where, how to fix) and exit 2; a failing Flink
job prints its root cause and exits 1; ``--verbose`` adds the Python and Java traces.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from jobs.errors import HeadraceError

# piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, str) and value.endswith(".000") and value[:4].isdigit():
        return value[:-4]
    return str(value)


def _plan(args: argparse.Namespace) -> Any:
    from jobs.loader import parse_job
    from jobs.plan import build_plan

    return build_plan(parse_job(Path(args.job)))


def _profile(args: argparse.Namespace) -> Any:
    from jobs.profiles import load_profile

    return load_profile(args.profile, Path(args.profiles) if args.profiles else None)


def cmd_validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    out.print(f"ok: job '{plan.name}' — source '{plan.spec.source.kafka.topic}', "
              f"{len(plan.spec.steps)} steps, {len(plan.sinks)} sink(s); schema {plan.schema.path.name}")
    return 0


def explain_table(plan: Any) -> Table:
    spec = plan.spec
    agg = plan.aggregate
    et = spec.source.event_time
    from operators.durations import format_duration_ms as d

    table = Table(title=f"job {plan.name} — parallelism {spec.parallelism}, "
                        f"checkpoint every {d(spec.checkpoint.interval)}", title_justify="left")
    table.add_column("part")
    table.add_column("what")
    table.add_column("Flink uids", style="cyan")
    table.add_row("source", f"kafka topic '{spec.source.kafka.topic}' (group "
                  f"'{spec.source.kafka.group or spec.job}'), json {plan.schema.path.name}; event time "
                  f"'{et.field}', watermark -{d(et.max_out_of_orderness)} per partition"
                  + (f", idle after {d(et.idle_timeout)}" if et.idle_timeout else ""), plan.source_uid + '.*')
    engine = ("in the JVM" if plan.validate.engine == "jvm"
              else f"in Python, jsonschema-rs ({plan.validate.engine_note})")
    table.add_row(f"step {plan.validate.step_id}", "decode + check each record against "
                  f"{plan.schema.path.name} {engine}; failures → dead letter", plan.validate.uid + '.*')
    window = agg.window
    wtext = (f"tumbling {d(window.tumbling)}" if window.kind == "tumbling" else
             f"sliding {d(window.sliding.size)} every {d(window.sliding.slide)}" if window.kind == "sliding"
             else f"session gap {d(window.session.gap)}")
    measures = ", ".join(f"{m.name}={m.function}({m.field or ''})" for m in agg.measures)
    table.add_row(f"step {agg.step_id}", f"{wtext} by ({', '.join(n for n, _ in agg.group_by)}), "
                  f"allowed lateness {d(agg.allowed_lateness_ms)}: {measures}", agg.uid + '.*')
    for sink in plan.sinks:
        table.add_row("sink", f"postgres table '{sink.table}', upsert on "
                      f"({', '.join(agg.key_columns)})", sink.uid + '.*')
    table.add_row("dead letter", f"kafka topic '{plan.dead_letter_topic}' ← step {plan.validate.step_id}",
                  plan.dead_letter_uid + ".*")
    table.add_row("late output", f"kafka topic '{plan.late_topic}' ← step {agg.step_id} (records more "
                  f"than {d(agg.allowed_lateness_ms)} behind the watermark)", plan.late_uid + '.*')
    return table


def cmd_explain(args: argparse.Namespace) -> int:
    plan = _plan(args)
    out.print(explain_table(plan))
    for note in plan.notes:
        out.print(f"note: {note}")
    if args.sql:
        from jobs.compiler import compile_job
        from jobs.runner import explain_sql

        out.print(explain_sql(compile_job(plan, _profile(args))), markup=False)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from jobs.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def cmd_jars(args: argparse.Namespace) -> int:
    from connectors import jars
    from operators import jvm

    jars.fetch(args.maven_repo, say=lambda s: out.print(s, markup=False))
    path = jvm.build(say=lambda s: out.print(s, markup=False))
    out.print(f"Headrace's JVM functions: {path}", markup=False)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from jobs.sample import click_events, write_jsonl

    path = Path(args.out)
    n = write_jsonl(path, click_events(args.events, seed=args.seed))
    out.print(f"wrote {n:,} sample click events to {path}")
    return 0


def view_table(name: str, columns: list[str], rows: list[tuple[Any, ...]], limit: int) -> Table:
    shown = [i for i, c in enumerate(columns) if not c.startswith("_")]  # _records: bookkeeping
    columns = [columns[i] for i in shown]
    rows = [tuple(row[i] for i in shown) for row in rows]
    table = Table(title=f"{name} ({len(rows):,} rows{', latest ' + str(limit) if len(rows) > limit else ''})",
                  title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if c not in ("window_start", "window_end") else "left")
    for row in rows[:limit]:
        table.add_row(*[_cell(v) for v in row])
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.compiler import compile_job
    from jobs.runner import run_embedded, submit_local, watch

    plan = _plan(args)
    profile = _profile(args)
    say = (lambda s: err.print(s, markup=False))
    if profile.embedded is not None:
        compiled = compile_job(plan, profile)
        summary = run_embedded(compiled, say)
        for view in summary.views:
            print_view(profile, view, args.limit)
        aggregated = (summary.records_in or 0) - summary.dead_lettered - summary.late
        out.print(f"{summary.records_in:,} records in → {aggregated:,} aggregated, "
                  f"{summary.dead_lettered:,} dead-lettered ({plan.dead_letter_topic}), "
                  f"{summary.late:,} late ({plan.late_topic}); {summary.seconds:.1f}s")
        return 0
    store, restore = _resume_point(profile, plan.name, args.fresh, say)
    compiled = compile_job(plan, profile, bounded_offsets=_offsets(args.stop_at_offsets), from_earliest=args.fresh)
    result, summary = submit_local(compiled, say, restore=restore)
    if not args.stop_at_offsets:
        say("running until interrupted (Ctrl-C cancels the job; running it again resumes where it stopped)")
    try:
        watch(result, compiled, summary, say, stop_at=_offsets(args.stop_at_offsets))
    except KeyboardInterrupt:
        say("cancelling the job (its last checkpoint is kept: run the same command to resume) …")
        client = result.get_job_client()
        if client is not None:
            client.cancel().result()
        return 130
    if store is not None:
        store.forget()  # a finished job has nothing left to resume
    say("job finished")
    for view in summary.views:
        print_view(profile, view, args.limit)
    return 0


def _resume_point(profile: Any, job: str, fresh: bool, say: Any) -> tuple[Any, Any]:
    """The job's checkpoint store and the checkpoint to resume from (None: start anew)."""
    from jobs.checkpoints import CheckpointStore

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


def _offsets(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        pairs = [part.split(":") for part in text.split(",")]
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise HeadraceError(f"--stop-at-offsets '{text}' is not PARTITION:OFFSET[,...]",
                            hint="write e.g. --stop-at-offsets 0:50000,1:49872") from None


def cmd_query(args: argparse.Namespace) -> int:
    print_view(_profile(args), args.view, args.limit)
    return 0


def print_view(profile: Any, view: str, limit: int) -> None:
    """A view's rows as a table, newest windows first, from PostgreSQL or the embedded store."""
    if profile.embedded is None:
        import psycopg

        with psycopg.connect(**profile.postgres.conninfo()) as conn:
            cur = conn.execute(psycopg.sql.SQL("SELECT * FROM {} ORDER BY window_start DESC").format(
                psycopg.sql.Identifier(view)))
            columns, rows = [d.name for d in cur.description or ()], cur.fetchall()
    else:
        from connectors.embedded import EmbeddedStore

        store = EmbeddedStore(Path(profile.embedded.data_dir))
        try:
            columns, rows = store.rows(view)
        except Exception:
            raise HeadraceError(f"no view '{view}' in {profile.embedded.data_dir}",
                                hint="run the job that writes it first") from None
        finally:
            store.close()
    out.print(view_table(view, columns, rows, limit))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrace", description="Declarative stream pipelines on Flink.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show Python and Java traces on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", default="local", help="connection profile (default: local, embedded)")
        p.add_argument("--profiles", help="profiles file (default: $HEADRACE_PROFILES or jobs/profiles.yaml)")

    p = sub.add_parser("validate", help="check a job spec")
    p.add_argument("job")
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
    p = sub.add_parser("generate", help="write sample click events as JSON lines")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=".headrace/local/clicks.jsonl")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("query", help="print a materialized view")
    p.add_argument("view")
    p.add_argument("--limit", type=int, default=40)
    with_profile(p)
    p.set_defaults(func=cmd_query)
    p = sub.add_parser("jars", help="fetch and verify the connector jars, build the JVM functions")
    p.add_argument("--maven-repo", help="take the jars from this Maven repository instead of PyPI")
    p.set_defaults(func=cmd_jars)
    p = sub.add_parser("schema", help="print the job spec's JSON Schema")
    p.set_defaults(func=cmd_schema)
    return parser


def java_root_cause(exc: BaseException) -> str | None:
    """``Class: message`` of the innermost Java cause of a Py4J or PyFlink error, if there is one."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        trace = getattr(exc, "stack_trace", None)  # pyflink.util.exceptions.JavaException
        if isinstance(trace, str) and trace.strip():
            from jobs.monitor import root_cause

            return root_cause(trace)
        return None
    cause = java
    while cause.getCause() is not None and cause.getCause() is not cause:
        cause = cause.getCause()
    message = cause.getMessage() or ""
    return f"{cause.getClass().getSimpleName()}: {message.strip().splitlines()[0] if message.strip() else ''}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
