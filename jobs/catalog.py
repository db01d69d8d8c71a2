"""The views of a project: every sink of every job spec under ``jobs/`` is a view, declared once.

A view's name is what its sink writes (a PostgreSQL table, a Redis prefix, an InfluxDB
measurement); its keys, window bounds and measures with their types come from the aggregate the
sink stores. ``headrace views`` lists them; ``headrace serve`` serves them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.registry import SINKS
from headrace.schemas.errors import SpecError
from headrace.schemas.views import ServedView


@dataclass(frozen=True)
class Catalog:
    views: tuple[ServedView, ...]

    def get(self, name: str) -> ServedView | None:
        return next((v for v in self.views if v.name == name), None)


def job_files(project: Path) -> list[Path]:
    folder = project / "jobs" if (project / "jobs").is_dir() else project
    return sorted(p for p in folder.glob("*.yaml") if p.name != "profiles.yaml")


def load_catalog(project: Path) -> Catalog:
    """Every view of every job spec in ``project`` (its ``jobs/`` folder when it has one).

    Two jobs declaring the same view name in the same store is a spec error (one line, naming both).
    """
    views: list[ServedView] = []
    for path in job_files(project):
        plan = build_plan(parse_job(path))
        for sink in plan.sinks:
            served = ServedView(view=sink.view, store=sink.kind, job=plan.name, step=plan.inputs[sink.id] or "",
                                spec=str(path), top=sink.ranks_by)
            clash = next((v for v in views if v.name == served.name and v.store == served.store), None)
            if clash is not None and clash.job != served.job:
                raise SpecError(f"view '{served.name}' ({served.store}) is written by job '{clash.job}' "
                                f"({clash.spec}) and by job '{served.job}'", where=str(path),
                                hint="give one of the sinks another table, prefix or measurement")
            if clash is None:
                views.append(served)
    # a name held by several stores: the first registered sink kind's keeps it, the others are name@store
    order = list(SINKS)
    named: list[ServedView] = []
    for served in sorted(views, key=lambda v: (v.name, order.index(v.store) if v.store in order else len(order),
                                               v.store)):
        taken = any(v.view.name == served.view.name for v in named)
        named.append(replace(served, alias=f"{served.view.name}@{served.store}") if taken else served)
    return Catalog(tuple(named))
