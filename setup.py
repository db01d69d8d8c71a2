"""The packages are found, not listed: every folder with an ``__init__.py`` below the project's
top-level folders installs as ``headrace.<folder>.<…>`` (``pyproject.toml`` maps the folders and
holds everything else), so a kind in a folder of its own needs no packaging line."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
FOLDERS = {"jobs": "headrace.jobs", "operators": "headrace.operators", "connectors": "headrace.connectors",
           "schemas": "headrace.schemas", "flink-conf": "headrace.flink_conf"}


def packages() -> list[str]:
    found = []
    for folder, package in FOLDERS.items():
        for init in sorted((HERE / folder).rglob("__init__.py")):
            found.append(".".join((package, *init.parent.relative_to(HERE / folder).parts)))
    return found


setup(packages=packages())
