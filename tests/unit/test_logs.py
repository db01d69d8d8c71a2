"""``--log-format json``: what the CLI says on stderr becomes one JSON object a line, errors
included; log records carry the trace id of the span they are written in."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from headrace.connectors import logs
from headrace.jobs.cli import main


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield None
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_headrace", False)]:
        root.removeHandler(handler)
    logging.getLogger("headrace").setLevel(logging.NOTSET)


def test_a_cli_error_is_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: x\nsource: {kafka: {topic: t}}\nsteps: []\nsinks: []\nnope: 1\n")
    assert main(["--log-format", "json", "validate", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and entry["logger"] == "headrace.cli" and "bad.yaml:" in entry["message"]
    assert set(entry) == {"ts", "level", "logger", "message"}
    # the next command, without the flag, writes text again
    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_log_records_carry_the_trace_id_of_their_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    stream = io.StringIO()
    logs.configure("json", stream=stream)
    log = logging.getLogger("headrace.serve")
    log.info("outside")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        log.warning("503 inside")
        trace_id = format(span.get_span_context().trace_id, "032x")
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside and outside["message"] == "outside"
    assert inside["trace_id"] == trace_id and inside["level"] == "warning" and len(inside["span_id"]) == 16
    logs.configure("text", stream=stream)
    with tracer.start_as_current_span("request") as span:
        log.info("text line")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert stream.getvalue().splitlines()[-1].endswith(f"INFO headrace.serve text line trace_id={trace_id}")
