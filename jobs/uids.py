"""Stable Flink uids for a compiled SQL plan, derived from the job name and step path.

Flink SQL names operator state by an internal node counter, so adding a sink to a job could
re-number every operator and orphan a savepoint. Headrace compiles the statement set to Flink's
JSON plan, gives every exec node the uid of the step that owns it, and runs that plan::

    page-activity.source.table-source-scan        page-activity.validate.calc
    page-activity.aggregate.group-window-aggregate page-activity.sink.page_activity_1m.sink

A node's owner: sources belong to ``source`` and the output tables to ``dead-letter`` and
``late``; any other node to the first planned step or sink whose ``owns()`` accepts it (each kind
says which operators are its own: the validate step the calc calling the validator and the late
judgement's per-partition maximum, an aggregate its window aggregate, a sink its sink); failing
that, to the owner of the single node it feeds (or, if it feeds several, of the node feeding it).
A node keeps its uid as long as its step and its kind stay the same.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

from headrace.jobs.plan import Plan
from headrace.schemas.kinds import ExecNode

UID_FORMAT_KEY = "table.exec.uid.format"
_SINK_TABLE = re.compile(r"Sink\(table=\[[^\]]*\.([A-Za-z0-9_]+)\]")
#: the compiler's output tables (jobs/compiler.py) and the parts of the job that own them
_OUTPUTS = {"hr_dead_letter": "dead-letter", "hr_late_out": "late"}


def _kind(node: dict[str, Any]) -> str:
    """``stream-exec-group-window-aggregate_1`` -> ``group-window-aggregate``."""
    return re.sub(r"_\d+$", "", str(node["type"])).removeprefix("stream-exec-")


def _sink_table(node: dict[str, Any]) -> str | None:
    if _kind(node) != "sink":
        return None
    match = _SINK_TABLE.search(str(node.get("description", "")))
    return match.group(1) if match else None


def _fixed_owner(node: ExecNode, plan: Plan) -> str | None:
    if node.kind in ("table-source-scan", "watermark-assigner"):
        return "source"
    if node.sink_table in _OUTPUTS:
        return _OUTPUTS[node.sink_table]
    for planned in (*plan.steps, *plan.sinks):
        if planned.owns(node):
            return planned.uid.removeprefix(plan.name + ".")
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

    downstream: dict[int, frozenset[str]] = {}

    def tables(node_id: int) -> frozenset[str]:
        if node_id not in downstream:
            downstream[node_id] = frozenset()  # a cycle cannot occur in a plan, but never recurse twice
            own = _sink_table(nodes[node_id])
            found = frozenset({own}) if own else frozenset()
            for target in consumers[node_id]:
                found |= tables(target)
            downstream[node_id] = found
        return downstream[node_id]

    execs = {i: ExecNode(kind=_kind(n), text=json.dumps(n), sink_table=_sink_table(n), downstream_tables=tables(i))
             for i, n in nodes.items()}
    owners: dict[int, str] = {}

    def owner(node_id: int, seen: frozenset[int] = frozenset()) -> str:
        if node_id in owners:
            return owners[node_id]
        found = _fixed_owner(execs[node_id], plan)
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
