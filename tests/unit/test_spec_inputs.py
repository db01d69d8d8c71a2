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


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(BOMB.encode())
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "headrace.jobs.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 10
    assert done.stderr.strip().startswith(f"error: {path}:1: the file holds more than 20,000 values")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("content", [
    b"profiles:\n  p:\n    embedded: {}\n  p:\n    embedded: {}\n",
    b"profiles:\n  p:\n    embedded: {data_dir: \xff}\n",
    BOMB.encode() + b"profiles: {p: {embedded: {}}}\n",
])
def test_a_broken_profiles_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        load_profile("p", path)
    assert str(caught.value).startswith(f"{path}:") and "\n" not in str(caught.value)
