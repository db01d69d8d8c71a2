"""A job's entry point when the Flink cluster runs the Python program itself.

The Flink Kubernetes Operator submits a ``FlinkSessionJob`` by uploading its ``jarURI`` (here
flink-python's jar) to the session cluster and running ``entryClass`` (``PythonDriver``) with
``args``; PythonDriver starts this module in the JobManager::

    PythonDriver -pyclientexec /opt/headrace/venv/bin/python -pym headrace.jobs.entry \\
        --job /opt/headrace/project/jobs/page_activity.yaml --profile prod

It checks the services (the same preflight as ``headrace submit``), compiles the job and starts
it on that cluster; parallelism and the savepoint to start from are the run's own settings
(``FlinkSessionJob.spec.job.parallelism`` / ``initialSavepointPath``, or a savepoint upgrade).
A bad spec or an unreachable service is one line on stderr and a non-zero exit, which the
operator reports in the resource's status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile
    from headrace.jobs.runner import submit_in_cluster
    from headrace.schemas.errors import HeadraceError

    parser = argparse.ArgumentParser(prog="headrace.jobs.entry", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="the job spec (a path inside the image)")
    parser.add_argument("--profile", required=True, help="the profile naming the services")
    parser.add_argument("--profiles", help="profiles file (default: $HEADRACE_PROFILES, else jobs/profiles.yaml)")
    args = parser.parse_args(argv)
    try:
        plan = build_plan(parse_job(Path(args.job)))
        profile = load_profile(args.profile, Path(args.profiles) if args.profiles else None)
        job_id = submit_in_cluster(compile_job(plan, profile), lambda line: print(line, file=sys.stderr))
    except HeadraceError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    print(f"job '{plan.name}' started: {job_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
