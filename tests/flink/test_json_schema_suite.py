"""The official JSON-Schema-Test-Suite (draft 2020-12, vendored in tests/data) through both
validate engines: jsonschema-rs (the Python engine) and the JVM validator. Every test an engine
accepts to judge must agree with the suite's expected validity; the JVM engine refuses a schema
outside its subset, and ``jvm_unsupported`` (which makes the choice at compile time) must refuse
exactly the schemas the JVM compiler refuses, with a reason."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from headrace.operators import jvm
from headrace.schemas.jsonschema import jvm_unsupported

pytestmark = pytest.mark.flink
DATA = Path(__file__).resolve().parents[1] / "data" / "json-schema-test-suite"
SUITE = DATA / "draft2020-12"


def remotes() -> Any:
    """The suite's remote schemas, as the http://localhost:1234/ its tests name them (no network)."""
    root = DATA / "remotes"
    return jsonschema_rs.Registry([(f"http://localhost:1234/{p.relative_to(root)}", json.loads(p.read_text()))
                                   for p in sorted(root.rglob("*.json"))])


#: the reasons a schema may go to the Python engine: what the JVM subset leaves out on purpose
FALLBACKS = {
    "unevaluated*": r"uses 'unevaluated(Properties|Items)'",
    "$dynamicRef/$dynamicAnchor": r"uses '\$dynamic",
    "a $ref by $id, anchor or URL": r"\$ref .* is not a JSON Pointer into the document",
    "a nested $id": r"nested '\$id'",
    "another meta-schema": r"declares \$schema",
    "an ECMA-only pattern": r"may mean something else in Java",
}


def groups() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, group) for path in sorted(SUITE.glob("*.json")) for group in json.loads(path.read_text())]


def probe() -> Any:
    """``SchemaProbe.verdicts`` of the JVM functions jar, through the PyFlink gateway."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    url = gateway.jvm.java.net.URL(jvm.build().resolve().as_uri())
    urls = gateway.new_array(gateway.jvm.java.net.URL, 1)
    urls[0] = url
    loader = gateway.jvm.java.net.URLClassLoader(urls, gateway.jvm.java.lang.Thread.currentThread()
                                                 .getContextClassLoader())
    cls = gateway.jvm.java.lang.Class.forName("dev.headrace.functions.SchemaProbe", True, loader)
    method = cls.getMethod("verdicts", _string_classes(gateway))
    return lambda schema, instances: str(method.invoke(None, _args(gateway, schema, instances)))


def _string_classes(gateway: Any) -> Any:
    classes = gateway.new_array(gateway.jvm.java.lang.Class, 2)
    classes[0] = classes[1] = gateway.jvm.java.lang.Class.forName("java.lang.String")
    return classes


def _args(gateway: Any, *values: str) -> Any:
    array = gateway.new_array(gateway.jvm.java.lang.Object, len(values))
    for i, value in enumerate(values):
        array[i] = value
    return array


def test_both_engines_agree_with_the_suite_on_every_test_they_judge() -> None:
    verdicts = probe()
    judged = Counter[str]()
    disagreements = []
    refusals = Counter[str]()
    registry = remotes()
    for file, group in groups():
        schema, tests = group["schema"], group["tests"]
        where = f"{file}: {group['description']}"
        validator = jsonschema_rs.validator_for(schema, registry=registry)
        for test in tests:
            judged["python"] += 1
            if validator.is_valid(test["data"]) != test["valid"]:
                disagreements.append(f"python: {where}: {test['description']}")
        reason = jvm_unsupported(schema)
        answer = verdicts(json.dumps(schema), json.dumps([t["data"] for t in tests]))
        if answer.startswith("refused: "):
            assert reason is not None, f"{where}: the JVM refuses it ({answer}) but jvm_unsupported accepts it"
        if reason is not None:  # the Python side sends it to the Python engine: the JVM is not asked
            kind = next((k for k, pattern in FALLBACKS.items() if re.search(pattern, reason)), None)
            assert kind is not None, f"{where}: refused for a reason outside the fallbacks: {reason}"
            refusals[kind] += 1
            continue
        judged["jvm groups"] += 1
        for test, valid in zip(tests, json.loads(answer), strict=True):
            judged["jvm"] += 1
            if valid != test["valid"]:
                disagreements.append(f"jvm: {where}: {test['description']}")
    print(f"\n{len(groups())} groups; Python engine: {judged['python']} tests; JVM engine: "
          f"{judged['jvm groups']} groups, {judged['jvm']} tests; to the Python engine: {refusals.most_common()}")
    assert not disagreements, "\n".join(disagreements)
    assert judged["jvm groups"] >= 247, judged  # a floor: fewer means the JVM subset shrank
