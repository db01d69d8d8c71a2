"""Broken job specs and profiles of every class an independent probe found: each is one line with
file:line and exit 2 within a second, never a traceback, a hang, or a wrong spec accepted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from headrace.jobs.loader import parse_job
from headrace.jobs.profiles import load_profile
from headrace.schemas.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
BASE = (ROOT / "jobs" / "page_activity.yaml").read_text().replace(
    "schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
BOMB = "".join(f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9) if i else 'x, x, x'}]\n"
               for i in range(9))

CASES: dict[str, tuple[bytes, str]] = {
    "duplicate key": ((BASE + "\njob: other\n").encode(), "duplicate key 'job' (first at line 3)"),
    "alias bomb": (BOMB.encode(), "more than 20,000 values once its YAML aliases are expanded"),
    "a NUL": (b"\x00job: x\n", "invalid YAML: character U+0000"),
    "not UTF-8": (BASE.replace("page-activity", "p\xe9ge").encode("latin-1"), "not UTF-8 text: byte 0xe9"),
    "nested 3000 deep": (("job: x\na:\n" + "".join("  " * i + "b:\n" for i in range(1, 3000))).encode(),
                         "nested more than 64 levels deep"),
    "a window of 999999999999 days": (BASE.replace("tumbling: 1m", "tumbling: 999999999999d").encode(),
                                      "a window is at most 99 days"),
    "lateness past Flink's intervals": (BASE.replace("allowed_lateness: 30s", "allowed_lateness: 1000d").encode(),
                                        "allowed_lateness: Input should be less than"),
    "checkpoints every 0 s": (BASE.replace("interval: 10s", "interval: 0s").encode(),
                              "checkpoint.interval: Input should be greater than or equal to 10"),
    # found by a mutation probe of the example (every key deleted, every value replaced by 16 kinds
    # of wrong value: 848 specs, each one line at its line or rightly accepted)
    "true for a number": (BASE.replace("parallelism: 2", "parallelism: true").encode(),
                          "parallelism: a number is wanted here, not true"),
    "an empty consumer group": (BASE.replace("group: page-activity", "group: ''").encode(),
                                "source.kafka.group: String should match pattern"),
    "a NUL in the consumer group": (BASE.replace("group: page-activity", 'group: "a\\0b"').encode(),
                                    "source.kafka.group: String should match pattern"),
    "a table name PostgreSQL would cut": (BASE.replace("page_activity_1m", "t" * 64).encode(),
                                          "sinks[0].postgres.table: String should have at most 63 characters"),
    "an empty enrich file": (BASE.replace("  - validate: {}", "  - validate: {}\n  - enrich: {key: user_id, "
                                          "fields: {plan: string}, source: {file: {path: ''}}}").encode(),
                             "steps[1].enrich.source.file.path: String should have at least 1 character"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_spec_is_one_line_at_its_line(tmp_path: Path, case: str) -> None:
    content, message = CASES[case]
    path = tmp_path / "job.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        parse_job(path)
    assert time.monotonic() - started < 1.0
    assert message in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"{path}:") and "\n" not in str(caught.value)


def test_a_schema_path_too_long_for_the_filesystem_is_not_found(tmp_path: Path) -> None:
    from headrace.jobs.plan import build_plan

    path = tmp_path / "job.yaml"
    path.write_text(BASE.replace(str(ROOT / "schemas" / "click.schema.json"), "x" * 5000))
    with pytest.raises(SpecError) as caught:
        build_plan(parse_job(path))
    assert str(caught.value).startswith(f"{path}:9: schema file 'xxxx") and "not found" in str(caught.value)


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(BOMB.encode())
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 10
    assert done.stderr.strip().startswith(f"error: {path}:1: the file holds more than 20,000 values")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr + done.stdout


SERVICE = "profiles:\n  p:\n    kafka: {bootstrap_servers: '127.0.0.1:9092'}\n"


@pytest.mark.parametrize(("content", "message"), [
    (b"profiles:\n  p:\n    embedded: {}\n  p:\n    embedded: {}\n", "duplicate key"),
    (b"profiles:\n  p:\n    embedded: {data_dir: \xff}\n", "not UTF-8"),
    (BOMB.encode() + b"profiles: {p: {embedded: {}}}\n", "more than 20,000 values"),
    # found by a mutation probe of a profile with every section (799 profiles through validate,
    # explain --sql and k8s render: each one line, no traceback, no secret, or rightly accepted)
    (b"profiles:\n  p:\n    kafka: {bootstrap_servers: ''}\n", "kafka.bootstrap_servers: String should match"),
    (b"profiles:\n  p:\n    kafka: {bootstrap_servers: 'broker one'}\n", "kafka.bootstrap_servers"),
    ((SERVICE + "    postgres: {host: db, port: 0, database: d, user: u}\n").encode(),
     "postgres.port: Input should be greater than or equal to 1"),
    ((SERVICE + "    postgres: {host: \"a\\0b\", database: d, user: u}\n").encode(),
     "postgres.host: String should match"),
    ((SERVICE + "    redis: 0\n").encode(), "'redis' is a mapping of settings, not 0"),
    ((SERVICE + "    state: {checkpoints: \"a\\0b\"}\n").encode(), "state.checkpoints: String should match"),
    ((SERVICE.replace("}", ", java: {linger.ms: ''}}")).encode(), "'linger.ms' is a whole number"),
    ((SERVICE + "    serve: {port: 70000}\n").encode(), "serve.port: Input should be less than or equal to 65535"),
    ((SERVICE + "    serve: {auth: {hs256_secret: short}}\n").encode(), "at least 16 characters"),
    ((SERVICE + "    serve: {timeout: \"pass\\nword\"}\n").encode(), "'pass\\nword' is not a duration"),
    ((SERVICE + "    cluster: {rest: 'not a url'}\n").encode(), "cluster.rest: String should match"),
])
def test_a_broken_profiles_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        load_profile("p", path)
    assert str(caught.value).startswith(f"{path}:") and "\n" not in str(caught.value)
    assert message in str(caught.value), str(caught.value)
