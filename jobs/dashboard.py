"""The Grafana dashboard of a Headrace deployment, generated from the metrics Headrace documents
(README, "Running on a cluster" and "Operations").

``headrace dashboard --out FILE`` writes it (``headrace k8s render`` too, as a ConfigMap that
Grafana's dashboard sidecar picks up). Every panel is a Prometheus query over the metrics in
:data:`METRICS`; ``tests/integration`` scrapes a real cluster job and a real ``serve`` and fails
if a panel asks for a metric that does not exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: Headrace's counters in a Flink job, as Flink's Prometheus reporter names them (operator scope)
OPERATOR = "flink_taskmanager_job_task_operator_"


@dataclass(frozen=True)
class Metric:
    name: str        # as Prometheus has it
    source: str      # "job" (a Flink job's TaskManagers and JobManager) or "serve"
    meaning: str


METRICS = (
    Metric(f"{OPERATOR}headrace_records_in", "job", "records the source read (the lateness judgement)"),
    Metric(f"{OPERATOR}headrace_dead_lettered", "job", "rows given to the dead-letter output"),
    Metric(f"{OPERATOR}headrace_late", "job", "records given to the late output"),
    Metric(f"{OPERATOR}headrace_rows_upserted", "job", "view rows a PostgreSQL sink wrote"),
    Metric(f"{OPERATOR}headrace_rows_written", "job", "view rows a Redis or InfluxDB sink wrote"),
    Metric(f"{OPERATOR}headrace_enrich_l1_hits", "job", "enrich keys answered by the in-process cache"),
    Metric(f"{OPERATOR}headrace_enrich_l2_hits", "job", "enrich keys answered by Redis (L2)"),
    Metric(f"{OPERATOR}headrace_enrich_l3_hits", "job", "enrich keys answered by the source (L3)"),
    Metric(f"{OPERATOR}headrace_enrich_misses", "job", "enrich keys no level had"),
    Metric(f"{OPERATOR}currentInputWatermark", "job", "an operator's input watermark (epoch ms)"),
    Metric("flink_jobmanager_job_lastCheckpointDuration", "job", "the last checkpoint's duration (ms)"),
    Metric("flink_jobmanager_job_lastCheckpointSize", "job", "the last checkpoint's size (bytes)"),
    Metric("flink_jobmanager_job_numberOfFailedCheckpoints", "job", "checkpoints that failed"),
    Metric("flink_jobmanager_job_numRestarts", "job", "restarts of the job since it was submitted"),
    Metric("headrace_serve_requests_total", "serve", "reads by view and status"),
    Metric("headrace_serve_request_seconds_bucket", "serve", "time to answer a read (histogram)"),
    Metric("headrace_serve_rejections_total", "serve", "requests refused, by reason"),
)

_STEP = "job_name, operator_name"


def _rate(metric: str, by: str = _STEP) -> str:
    return f"sum by ({by}) (rate({metric}[1m]))"


#: (title, unit, [(PromQL, legend)])
PANELS: tuple[tuple[str, str, list[tuple[str, str]]], ...] = (
    ("Records in, per step", "ops", [(_rate(f"{OPERATOR}headrace_records_in"), "{{job_name}} {{operator_name}}")]),
    ("Dead-lettered, per step", "ops", [(_rate(f"{OPERATOR}headrace_dead_lettered"),
                                         "{{job_name}} {{operator_name}}")]),
    ("Late, per step", "ops", [(_rate(f"{OPERATOR}headrace_late"), "{{job_name}} {{operator_name}}")]),
    ("Rows written, per sink", "ops", [
        (_rate(f"{OPERATOR}headrace_rows_upserted"), "{{job_name}} {{operator_name}} (PostgreSQL)"),
        (_rate(f"{OPERATOR}headrace_rows_written"), "{{job_name}} {{operator_name}} (Redis, InfluxDB)")]),
    ("Watermark lag", "s", [(f"(time() * 1000 - min by (job_name) ({OPERATOR}currentInputWatermark > 0)) / 1000",
                             "{{job_name}}")]),
    ("Checkpoint duration", "ms", [("max by (job_name) (flink_jobmanager_job_lastCheckpointDuration)",
                                    "{{job_name}}")]),
    ("Checkpoint size", "bytes", [("max by (job_name) (flink_jobmanager_job_lastCheckpointSize)", "{{job_name}}")]),
    ("Restarts and failed checkpoints (10 min)", "short", [
        ("sum by (job_name) (increase(flink_jobmanager_job_numRestarts[10m]))", "{{job_name}} restarts"),
        ("sum by (job_name) (increase(flink_jobmanager_job_numberOfFailedCheckpoints[10m]))",
         "{{job_name}} failed checkpoints")]),
    ("Enrich: keys answered, per level", "ops", [
        (_rate(f"{OPERATOR}headrace_enrich_{level}", "job_name"), f"{{{{job_name}}}} {label}")
        for level, label in (("l1_hits", "L1"), ("l2_hits", "L2 (Redis)"), ("l3_hits", "L3 (source)"),
                             ("misses", "missing"))]),
    ("Serve: requests", "reqps", [("sum by (view, status) (rate(headrace_serve_requests_total[1m]))",
                                   "{{view}} {{status}}")]),
    ("Serve: latency", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(headrace_serve_request_seconds_bucket[5m])))", f"p{p}")
        for q, p in ((0.5, "50"), (0.95, "95"), (0.99, "99"))]),
    ("Serve: rejections", "reqps", [("sum by (reason) (rate(headrace_serve_rejections_total[1m]))",
                                     "{{reason}}")]),
)

_FUNCTIONS = {"sum", "by", "rate", "min", "max", "time", "increase", "histogram_quantile", "le"}


def metrics_of(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expression)))
    return {n for n in names - _FUNCTIONS if n.startswith(("flink_", "headrace_"))}


def dashboard(datasource: str = "${DS_PROMETHEUS}") -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema 39), two panels a row."""
    ds = {"type": "prometheus", "uid": datasource}
    panels = []
    for index, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": title, "datasource": ds,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(ord("A") + i), "datasource": ds, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)]})
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "uid": "headrace", "title": "Headrace", "tags": ["headrace", "flink"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "panels": panels, "templating": {"list": []}, "annotations": {"list": []},
        "description": "Generated by 'headrace dashboard' from the metrics Headrace documents.",
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"
