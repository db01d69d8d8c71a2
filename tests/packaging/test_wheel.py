"""The built wheel, installed without -e into a fresh virtualenv, works on its own: its data
files (jar lock, Java sources, example job and schema, profiles) come from the package, and
a project with its own ``schemas`` and ``jobs`` packages does not shadow Headrace's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from headrace.connectors.jars import cache_dir, load_lock

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv with the wheel built from this checkout installed. Its
    dependencies (PyFlink and the rest, ~500 MB) are this interpreter's: a ``.pth`` file adds its
    site-packages as a plain path, where neither the editable install's finder nor any other
    ``.pth`` file there is loaded, so Headrace itself can only come from the wheel (installed
    beside the checkout's editable one, which it ignores and never touches)."""
    import sysconfig

    root = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", root / "dist", ROOT, cwd=root)
    wheel = next((root / "dist").glob("headrace-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).strip()
    (Path(purelib) / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(root / "venv" / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--ignore-installed", wheel, cwd=root)
    return root / "venv" / "bin"


def test_the_installed_wheel_runs_jars_init_and_validate(installed: Path, tmp_path: Path) -> None:
    # the connector jars as `headrace jars` leaves them (copied from this machine's cache, so no
    # download): the command checks them against the lock file inside the wheel, and builds the
    # functions jar from the Java sources inside the wheel
    jars = tmp_path / "jars"
    jars.mkdir()
    for pinned in load_lock().jars:
        shutil.copy(cache_dir() / pinned.file, jars / pinned.file)
    project = tmp_path / "project"
    # a user project with packages named like Headrace's old top-level modules
    for package in ("schemas", "jobs", "operators", "connectors"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("raise ImportError('the user project was imported')\n")
    env = {"HEADRACE_JARS_DIR": str(jars), "PYTHONPATH": str(project)}
    out = run(installed / "headrace", "jars", cwd=project, env=env)
    assert "all 5 connector jars present and verified" in out
    assert "Headrace's JVM functions:" in out and list(jars.glob("headrace-functions-*.jar"))
    out = run(installed / "headrace", "init", cwd=project, env=env)
    assert (project / "jobs" / "page_activity.yaml").read_bytes() == (ROOT / "jobs" / "page_activity.yaml").read_bytes()
    assert (project / "schemas" / "click.schema.json").is_file()
    out = run(installed / "headrace", "validate", "jobs/site_activity.yaml", cwd=project, env=env)
    assert out.startswith("ok: job 'site-activity'"), out  # its users table came along
    out = run(installed / "headrace", "validate", "jobs/page_activity.yaml", cwd=project, env=env)
    assert out.startswith("ok: job 'page-activity'"), out
    out = run(installed / "headrace", "explain", "jobs/page_activity.yaml", cwd=project, env=env)
    assert "page-activity" in out
    # nothing of Headrace is imported from this checkout
    where = run(installed / "python", "-c", "import headrace.jobs.cli as c; print(c.__file__)", cwd=project)
    assert str(installed.parent) in where and str(ROOT) not in where
