"""Log lines as text or as JSON (``headrace --log-format json``), with the trace id of the request
being handled in each.

Text::

    2026-12-05T18:02:11.482Z INFO headrace.serve 503 /v1/views/pa_1m: … trace_id=4bf92f3577b34da6a3ce929d0e0e4736

JSON (one object a line, for a log collector)::

    {"ts": "2026-12-05T18:02:11.482Z", "level": "info", "logger": "headrace.serve",
     "message": "503 /v1/views/page_activity_1m: …", "trace_id": "4bf92f35…", "span_id": "00f067aa0ba902b7"}

The trace id is the current OpenTelemetry span's (``headrace serve`` opens one per request, see
``connectors/serving/tracing.py``); outside a request there is none and the key is left out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")


def current_trace() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, as 32 and 16 hex digits; None outside one."""
    try:
        from opentelemetry import trace
    except ImportError:  # tracing comes with the serve extra
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TraceFilter(logging.Filter):
    """Puts ``trace_id`` and ``span_id`` on every record (empty outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_trace()
        record.trace_id, record.span_id = ids if ids else ("", "")
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line += f" trace_id={trace_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        if getattr(record, "trace_id", ""):
            entry["trace_id"], entry["span_id"] = record.__dict__["trace_id"], record.__dict__["span_id"]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Headrace's loggers (``headrace.*``) to ``stream`` (stderr) in ``fmt``; others' warnings too."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(TraceFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_headrace", False)]:
        root.removeHandler(old)
    handler._headrace = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("headrace").setLevel(level)


class JsonConsole:
    """What the CLI says on stderr (progress, results, errors), as JSON lines: a stand-in for its
    rich console under ``--log-format json``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def print(self, *objects: Any, **_: Any) -> None:
        from rich.console import Console

        parts = []
        for one in objects:
            if isinstance(one, str):
                parts.append(one)
            else:  # a table or tree: its plain text
                console = Console(width=160, no_color=True)
                with console.capture() as captured:
                    console.print(one)
                parts.append(captured.get().rstrip())
        message = " ".join(parts)
        level = "error" if message.startswith("error:") else "warning" if message.startswith("warning:") else "info"
        entry = {"ts": _timestamp(time.time()), "level": level, "logger": "headrace.cli",
                 "message": message.removeprefix("error: ").removeprefix("warning: ")}
        stream = self.stream or sys.stderr
        stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
        stream.flush()
