"""The kind contract: a step, sink or format is one module (a store one folder) and one registry
line; the framework (``jobs/``) knows roles, never a kind's name.

The last test adds a sink kind the project does not have — a CSV sink with its own profile
section — from a module outside the project, with one line of registration, and plans, explains
and compiles a job that uses it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from headrace.jobs.registry import FORMATS, SINKS, STEPS
from headrace.jobs.spec import JobSpec
from headrace.schemas.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
KIND_NAMES = {*STEPS, *SINKS, *FORMATS}
#: the modules (or, for a store, folders) each registered kind lives in
KIND_MODULES = ("headrace.operators.validate", "headrace.operators.aggregate", "headrace.operators.mask",
                "headrace.operators.enrich", "headrace.operators.avro", "headrace.operators.protobuf",
                "headrace.schemas.jsonschema", "headrace.connectors.postgres", "headrace.connectors.redis",
                "headrace.connectors.influx")


def _framework_modules() -> list[Path]:
    return [p for p in sorted((ROOT / "jobs").glob("*.py")) if p.name != "registry.py"]


def test_every_kind_is_listed_and_lives_in_its_own_module() -> None:
    modules = {type(k).__module__ for k in (*STEPS.values(), *SINKS.values(), *FORMATS.values())}
    assert all(m.startswith(KIND_MODULES) for m in modules), modules
    for name in SINKS:  # a store is one folder: its profile section, its sink, its reader
        folder = ROOT / "connectors" / name
        assert sorted(p.name for p in folder.glob("*.py")) == ["__init__.py", "connection.py", "reader.py", "sink.py"]


def test_the_framework_imports_no_kind_and_compares_with_no_kind_name() -> None:
    found = []
    for path in _framework_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.name}:{node.lineno}: imports {n}" for n in names if n.startswith(KIND_MODULES)]
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in KIND_NAMES and path.name != "cli.py":
                        found.append(f"{path.name}:{node.lineno}: compares with {side.value!r}")
    assert not found, "\n".join(found)


def test_each_store_section_is_its_kinds_and_reads_back_typed() -> None:
    for kind in SINKS.values():
        assert [m.key for m in kind.sections] == [kind.name]
    model = SINKS["postgres"].sections[0]
    profile = Profile(name="p", kafka={"bootstrap_servers": "b:9"},
                      sections={"postgres": model(database="d", user="u")})
    assert profile.section(model).database == "d"
    assert SINKS["redis"].reader(profile, 1000) is None  # a store the profile does not reach: no reader


CSV_KIND = '''
from dataclasses import dataclass
from typing import Any

from headrace.schemas.kinds import SinkKind, SinkNode
from headrace.schemas.options import SinkOptions
from headrace.schemas.profile import Profile, Section


class CsvFolder(Section):
    key = "csv"
    folder: str


class CsvOptions(SinkOptions):
    file: str


@dataclass(kw_only=True)
class CsvNode(SinkNode):
    file: str

    def explain(self) -> str:
        return f"csv file {self.file}"

    def table_ddl(self, profile: Profile) -> str:
        folder = profile.section(CsvFolder).folder
        return (f"CREATE TEMPORARY TABLE `{self.flink_table}` ({self.view.flink_columns()}) "
                f"WITH ('connector' = 'filesystem', 'path' = '{folder}/{self.file}', 'format' = 'csv')")


class Csv(SinkKind):
    name, options, sections = "csv", CsvOptions, (CsvFolder,)

    def place(self, options: Any, upstream: Any) -> str:
        return options.file.removesuffix(".csv")

    def plan(self, options: Any, ctx: Any, upstream: Any, node_id: str, uid: str) -> CsvNode:
        view = self.named_view(upstream, self.place(options, upstream))
        return CsvNode(id=node_id, kind=self.name, uid=uid, view=view, file=options.file)
'''

CSV_RUN = '''
import sys
from pathlib import Path

import headrace.jobs.registry as registry
from csvkind import Csv

registry.SINKS["csv"] = Csv()  # the one line

from headrace.jobs.cli import explain_tree
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import explain_sql
from rich.console import Console

plan = build_plan(parse_job(Path(sys.argv[1])))
Console(width=200).print(explain_tree(plan))
print(explain_sql(compile_job(plan, load_profile("svc", Path(sys.argv[2])))))
'''


def test_a_new_sink_kind_is_its_module_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "csvkind.py").write_text(CSV_KIND, encoding="utf-8")
    (tmp_path / "run.py").write_text(CSV_RUN, encoding="utf-8")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "click.schema.json").write_bytes((ROOT / "schemas" / "click.schema.json").read_bytes())
    job = tmp_path / "job.yaml"
    job.write_text("""job: csv-out
source:
  kafka: {topic: clicks}
  format: {json: schemas/click.schema.json}
  event_time: {field: ts}
steps:
  - validate: {}
  - aggregate: {group_by: [page], window: {tumbling: 1m}, measures: {events: count()}}
sinks:
  - csv: {file: pages.csv}
dead_letter: {kafka: {topic: clicks.dlq}}
""", encoding="utf-8")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles:\n  svc:\n    kafka: {bootstrap_servers: '127.0.0.1:9'}\n"
                        "    csv: {folder: /tmp/out}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "run.py", str(job), str(profiles)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sink csv: csv file pages.csv  csv-out.sink.csv.pages.*" in done.stdout
    assert "'path' = '/tmp/out/pages.csv', 'format' = 'csv'" in done.stdout
    assert "INSERT INTO `hr_sink_csv_pages` SELECT * FROM `hr_aggregate_windows`" in done.stdout
    assert "csv" not in JobSpec.model_json_schema()["$defs"]  # this process's registry is as it was
