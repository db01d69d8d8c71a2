"""The views of a project come from its job specs: every sink is a view, declared once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from headrace.jobs.catalog import load_catalog
from headrace.schemas.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "jobs" / "page_activity.yaml").read_text().replace(
    "schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))


def project(tmp_path: Path, **jobs: str) -> Path:
    (tmp_path / "jobs").mkdir()
    for name, text in jobs.items():
        (tmp_path / "jobs" / f"{name}.yaml").write_text(text)
    return tmp_path


def test_every_sink_is_a_view_and_a_name_in_two_stores_is_told_apart(tmp_path: Path) -> None:
    text = EXAMPLE.replace("  - postgres: {table: page_activity_1m}",
                           "  - postgres: {table: page_activity_1m}\n  - redis: {view: page_activity_1m}\n"
                           "  - influx: {measurement: activity}")
    catalog = load_catalog(project(tmp_path, a=text))
    assert [(v.name, v.store, v.job) for v in catalog.views] == [
        ("activity", "influx", "page-activity"), ("page_activity_1m", "postgres", "page-activity"),
        ("page_activity_1m@redis", "redis", "page-activity")]
    view = catalog.get("page_activity_1m")
    assert view is not None and view.view.key_names == ("tenant_id", "page", "window_start", "window_end")


def test_two_jobs_writing_one_view_are_refused(tmp_path: Path) -> None:
    other = EXAMPLE.replace("job: page-activity", "job: other")
    with pytest.raises(SpecError, match="view 'page_activity_1m' .postgres. is written by job 'page-activity'"):
        load_catalog(project(tmp_path, a=EXAMPLE, b=other))


def test_headrace_views_prints_them(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "views", "--project",
                           str(project(tmp_path, a=EXAMPLE))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "page_activity_1m" in done.stdout and "events integer" in done.stdout
