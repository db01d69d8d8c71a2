"""Headrace's modules live under one namespace, ``headrace.*``, and import only down the layers:
jobs → operators / connectors → schemas. Checked on the source with ``ast``; ruff and mypy run on
the same tree, so the code CI tests is lint- and type-clean."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: folder -> (package, layer); a module may import its own layer and the ones below
LAYERS = {"jobs": ("headrace.jobs", 2), "operators": ("headrace.operators", 1),
          "connectors": ("headrace.connectors", 1), "schemas": ("headrace.schemas", 0)}
TOP_LEVEL = set(LAYERS) | {"flink_conf"}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def modules(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def test_nothing_imports_a_bare_top_level_folder() -> None:
    bare = [f"{p.relative_to(ROOT)}:{line}: import {name}"
            for p in modules(*LAYERS, "tests") for line, name in imports(p)
            if name.split(".")[0] in TOP_LEVEL]
    assert not bare, "\n".join(bare)


def test_imports_point_down_the_layers() -> None:
    upward = []
    for folder, (_, layer) in LAYERS.items():
        for path in modules(folder):
            for line, name in imports(path):
                parts = name.split(".")
                if parts[0] != "headrace" or len(parts) < 2 or parts[1] not in LAYERS:
                    continue
                if LAYERS[parts[1]][1] > layer:
                    upward.append(f"{path.relative_to(ROOT)}:{line}: {folder} imports {name}")
    assert not upward, "\n".join(upward)


def test_ruff_and_mypy_are_clean(tmp_path: Path) -> None:
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", *LAYERS, "tests"], cwd=ROOT,
                          capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    # mypy resolves headrace.* through a tree of links shaped like the installed package
    tree = tmp_path / "headrace"
    tree.mkdir()
    for folder, (package, _) in LAYERS.items():
        (tree / package.split(".")[1]).symlink_to(ROOT / folder)
    (tree / "flink_conf").symlink_to(ROOT / "flink-conf")
    packages = [arg for package, _ in LAYERS.values() for arg in ("-p", package)]
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "cache"), *packages],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(tmp_path)})
    if "No module named mypy" in mypy.stderr:
        pytest.fail("mypy is not installed: pip install -e '.[test]'")
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
