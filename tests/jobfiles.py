"""Copies of the example job with per-test topic and table names."""

from __future__ import annotations

from pathlib import Path

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
