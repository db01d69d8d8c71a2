"""Stable Flink uids for a compiled SQL plan, derived from the job name and step path.

Flink SQL names operator state by an internal node counter, so adding a sink to a job could
re-number every operator and orphan a savepoint. Headrace compiles the statement set to Flink's
JSON plan, gives every exec node the uid of the step that owns it, and runs that plan::

    page-activity.source.table-source-scan        page-activity.validate.calc
    page-activity.aggregate.group-window-aggregate page-activity.sink.page_activity_1m.sink

A node's owner is found from the plan's edges: sources belong to ``source``, the calc that
calls the validate function (JVM or Python) to the validate step, window aggregates and their
exchanges to the aggregate step, sinks to their sink or output; a calc belongs to the single
node it feeds (or, if it feeds several, to the node feeding it). A node keeps its uid as long
as its step and its kind stay the same.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from headrace.jobs.compiler import VALIDATE_FUNCTION
from headrace.jobs.plan import Plan

UID_FORMAT_KEY = "table.exec.uid.format"
_SINK_TABLE = re.compile(r"Sink\(table=\[[^\]]*\.([A-Za-z0-9_]+)\]")


def _kind(node: dict[str, Any]) -> str:
    """``stream-exec-group-window-aggregate_1`` -> ``group-window-aggregate``."""
    return re.sub(r"_\d+$", "", str(node["type"])).removeprefix("stream-exec-")


def _fixed_owner(node: dict[str, Any], plan: Plan) -> str | None:
    kind = _kind(node)
    if kind in ("table-source-scan", "watermark-assigner"):
        return "source"
    if kind.startswith("python-") or (kind == "calc" and f"{VALIDATE_FUNCTION}(" in json.dumps(node)):
        return plan.validate.step_id
    if "aggregate" in kind or kind == "exchange":
        return plan.aggregate.step_id
    if kind == "sink":
        match = _SINK_TABLE.search(str(node.get("description", "")))
        table = match.group(1) if match else ""
        if table == "hr_dead_letter":
            return "dead-letter"
        if table == "hr_late_out":
            return "late"
        if table.startswith("hr_sink_"):
            return f"sink.{table.removeprefix('hr_sink_')}"
    return None


def assign_uids(plan_json: str, plan: Plan) -> tuple[str, dict[str, str]]:
    """The plan with a uid format on every node, and ``{uid: node description}`` for display."""
    doc = json.loads(plan_json)
    nodes = {n["id"]: n for n in doc["nodes"]}
    consumers: dict[int, list[int]] = defaultdict(list)
    producers: dict[int, list[int]] = defaultdict(list)
    for edge in doc["edges"]:
        consumers[edge["source"]].append(edge["target"])
        producers[edge["target"]].append(edge["source"])

    owners: dict[int, str] = {}

    def owner(node_id: int, seen: frozenset[int] = frozenset()) -> str:
        if node_id in owners:
            return owners[node_id]
        found = _fixed_owner(nodes[node_id], plan)
        if found is None and node_id not in seen:
            outs = consumers[node_id]
            if len(outs) == 1:
                found = owner(outs[0], seen | {node_id})
            elif producers[node_id]:
                found = owner(producers[node_id][0], seen | {node_id})
        owners[node_id] = found or "job"
        return owners[node_id]

    used: dict[str, int] = defaultdict(int)
    shown: dict[str, str] = {}
    for node_id in sorted(nodes):
        base = f"{plan.name}.{owner(node_id)}.{_kind(nodes[node_id])}"
        used[base] += 1
        uid = base if used[base] == 1 else f"{base}-{used[base]}"
        node = nodes[node_id]
        node.setdefault("configuration", {})[UID_FORMAT_KEY] = f"{uid}_<transformation>"
        shown[uid] = str(node.get("description", ""))[:120]
    return json.dumps(doc), shown
