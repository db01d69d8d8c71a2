"""Compiled plans kept between runs, so a job planned once starts without planning again.

Before a service-profile job starts, Flink's planner turns its SQL into a plan: Calcite parses,
validates and optimizes twenty-odd nodes, and the planner serializes them to the JSON plan that
carries Headrace's uids. On the example job that is 3.7–4.0 s and about 6 CPU-seconds of a cold
JVM (its planning code runs interpreted, and the JIT compiles it) on every start, restarts and
resumes included. Loading the same JSON plan takes 0.5 s and 1 CPU-second. So the plan, uids
assigned, is kept under a key of everything it was made from, and the next start with the same key
loads it (``CompiledPlan``, what Flink's ``COMPILE PLAN`` / ``EXECUTE PLAN`` keep for upgrades).

The key: the job's statements (functions, tables, inserts) with secret option values masked,
every setting of the table environment but those that change from run to run (ports,
directories, the restore path), the jars (name, size, time), the Python and Flink versions and
Headrace's own sources. A plan holds no secret: the job's tables are temporary, and Flink writes
only a temporary table's name into a plan, never its options (they come from the session's
tables when the plan is loaded, so a changed password or broker address needs no new plan).

A plan that does not load (Flink changed, the file is damaged) is planned again and replaced.
``HEADRACE_PLAN_CACHE=off`` plans every time; ``HEADRACE_PLAN_DIR`` moves the plans (default
``~/.cache/headrace/plans``; the newest :data:`KEEP` are kept, ~60 kB each).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from headrace.connectors.jars import remove_orphaned_parts
from headrace.connectors.sqltext import SECRET_KEYS, masked

#: plans kept (the least recently used go first)
KEEP = 50

#: settings that differ between runs of one job without changing its plan
VOLATILE = ("rest.", "web.", "metrics.", "execution.state-recovery.", "execution.target", "execution.attached",
            "execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "python.executable",
            "python.client.executable", "state.backend.rocksdb.log.dir", "pipeline.jars", "pipeline.classpaths",
            "$internal.")

_PACKAGE_DIRS = ("connectors", "jobs", "operators", "schemas")


def enabled() -> bool:
    return os.environ.get("HEADRACE_PLAN_CACHE", "").lower() != "off"


def directory() -> Path:
    return Path(os.environ.get("HEADRACE_PLAN_DIR", Path.home() / ".cache" / "headrace" / "plans"))


def key(statements: Iterable[str], settings: Mapping[str, str], jar_paths: Iterable[Path]) -> str:
    """What a plan is made from, as 20 hex digits."""
    digest = hashlib.sha256()
    for statement in statements:
        digest.update(masked(statement).encode() + b"\0")
    for name in sorted(settings):
        if name.startswith(VOLATILE):
            continue
        value = "******" if any(s in name.lower() for s in SECRET_KEYS) else settings[name]
        digest.update(f"{name}={value}\0".encode())
    for path in jar_paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    digest.update(f"{sys.version_info[:3]}\0{_sources_digest()}".encode())
    return digest.hexdigest()[:20]


_sources: str | None = None


def _sources_digest() -> str:
    """Headrace's Python sources and its Flink (their Python functions' types shape the plan)."""
    global _sources
    if _sources is None:
        import pyflink

        digest = hashlib.sha256(getattr(pyflink, "__version__", "").encode())
        root = Path(__file__).resolve().parent.parent
        for folder in _PACKAGE_DIRS:
            for path in sorted((root / folder).rglob("*.py")):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        for path in sorted(Path(pyflink.__file__).resolve().parent.glob("lib/*.jar")):
            digest.update(path.name.encode())
        _sources = digest.hexdigest()
    return _sources


def path(job: str, plan_key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in job)[:60]
    return directory() / f"{safe}-{plan_key}.json"


def load(job: str, plan_key: str) -> str | None:
    """The plan kept under ``plan_key``, or None."""
    if not enabled():
        return None
    file = path(job, plan_key)
    try:
        text = file.read_text(encoding="utf-8")
        os.utime(file)  # recently used: kept longest
    except OSError:
        return None
    return text


def save(job: str, plan_key: str, plan_json: str) -> None:
    """Keep ``plan_json``; a directory that cannot be written (a read-only image) keeps nothing."""
    if not enabled():
        return
    file = path(job, plan_key)
    partial = file.with_name(f"{file.name}.part-{os.getpid()}")  # two runs may save at once
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(plan_json, encoding="utf-8")
        partial.replace(file)
        plans = sorted(file.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in plans[KEEP:]:
            stale.unlink(missing_ok=True)
        remove_orphaned_parts(file.parent.glob("*.json.part-*"))
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()


def forget(job: str, plan_key: str) -> None:
    path(job, plan_key).unlink(missing_ok=True)
