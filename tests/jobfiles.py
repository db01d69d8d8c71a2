"""Copies of the example job with per-test topic and table names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def example_job(tmp_path: Path, name: str) -> Path:
    text = (ROOT / "jobs" / "page_activity.yaml").read_text()
    text = (text.replace("topic: clicks,", f"topic: {name},").replace("clicks.dlq", f"{name}.dlq")
            .replace("clicks.late", f"{name}.late").replace("page_activity_1m", f"{name}_1m")
            .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def example_job_on(tmp_path: Path, engine: str) -> Path:
    """The example job unchanged but for ``validate: {engine: ...}`` (topic names kept)."""
    path = tmp_path / f"example-{engine}.yaml"
    path.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                    .replace("validate: {}", f"validate: {{engine: {engine}}}")
                    .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json")))
    return path


def with_registry(profiles: Path, url: str) -> None:
    """Name the schema registry at ``url`` in a test profiles file."""
    profiles.write_text(profiles.read_text().replace("    state:", f"    registry: {{url: '{url}'}}\n    state:"))


def embedded_view(job: Path, profiles: Path, events: list[dict], view: str = "page_activity_1m"
                  ) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``job`` under the embedded profile 'local' of ``profiles`` over ``events`` (its source
    topic 'clicks'); the run's summary and the view's rows, as dicts."""
    import json

    from headrace.connectors.embedded import EmbeddedStore, topic_file
    from headrace.jobs.compiler import compile_job
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan
    from headrace.jobs.profiles import load_profile
    from headrace.jobs.runner import run_embedded

    compiled = compile_job(build_plan(parse_job(job)), load_profile("local", profiles))
    assert compiled.profile.embedded is not None
    data_dir = Path(compiled.profile.embedded.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    topic_file(data_dir, "clicks").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = run_embedded(compiled, say=lambda _: None)
    store = EmbeddedStore(data_dir)
    columns, rows = store.rows(view)
    store.close()
    return summary, [dict(zip(columns, row, strict=True)) for row in rows]


def cli_embedded_run(tmp_path: Path, env: dict[str, str], events: int = 5000) -> Any:
    """``headrace run`` of the example, as a new process of the CLI, under an embedded profile with
    its data in ``tmp_path / 'local'`` holding ``events`` sample events; returns a function that
    runs it (again) and gives the finished process."""
    import subprocess
    import sys

    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n")
    cli = [sys.executable, "-m", "headrace.jobs.cli"]
    subprocess.run([*cli, "generate", "--events", str(events), "--out", str(tmp_path / "local" / "clicks.jsonl")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    run = [*cli, "run", "jobs/page_activity.yaml", "--profiles", str(profiles), "--limit", "1"]
    return lambda: subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def planning_counted(monkeypatch: Any) -> list[str]:
    """The names of the jobs the runner plans from now on, one entry per planning (a start that
    loads a kept plan adds none)."""
    from headrace.jobs import runner

    planned: list[str] = []
    plan_json = runner.compiled_plan_json

    def counted(t_env: Any, compiled: Any) -> str:
        planned.append(compiled.plan.name)
        return plan_json(t_env, compiled)

    monkeypatch.setattr(runner, "compiled_plan_json", counted)
    return planned
