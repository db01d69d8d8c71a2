"""The JVM engine of the enrich step converts looked-up values exactly as the Python engine's
``convert()`` does (both engines must give a job the same rows), held over edge values and a few
thousand random ones, through the JVM's own code (``EnrichCheck.java`` runs ``EnrichLevels``)."""

from __future__ import annotations

import json
import random
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from headrace.operators import jvm
from headrace.operators.enrich import convert
from headrace.operators.lookup import _decode
from headrace.schemas.types import FieldType

TYPES = {"s": FieldType.STRING, "i": FieldType.INTEGER, "n": FieldType.NUMBER, "b": FieldType.BOOLEAN}
EDGES: list[Any] = [
    None, "", " ", "42", " 42 ", "-7", "+7", "4_2", "1e3", "3.7", "-0", "007", "9223372036854775807",
    "true", "True", "YES", "t", "1", "0", "no", "inf", "-Infinity", "nan", "NaN", "1.", ".5", "abc", "ünïcode",
    "a\x00b", 0, 1, -1, 42, 2**53, 2**62, True, False, 0.0, -0.0, 1.0, 1.5, 3.7, -3.7, 1e-5, 1.5e-4, 1e15, 1e16,
    1e20, 1.2345e10, 123456.789, 1e-300, {"decimal": "1.50"}, {"decimal": "-0.001"}, {"decimal": "12345678901234"},
    {"decimal": "1E+3"}, {"l2": '"quoted"'}, {"l2": "not json"}, {"l2": "12"}, {"l2": "1.25"}, {"l2": "true"},
    {"l2": "null"}, {"l2": '"7"'},
]


def python_side(ftype: str, value: Any) -> Any:
    if isinstance(value, dict) and "decimal" in value:
        raw: Any = Decimal(value["decimal"])
    elif isinstance(value, dict) and "l2" in value:
        raw = _decode(value["l2"].encode())
    elif isinstance(value, dict) and "written" in value:  # written to L2 as JSON, read back
        raw = _decode(json.dumps(value["written"]).encode())
    else:
        raw = value
    out = convert(raw, TYPES[ftype])
    if isinstance(out, int) and not isinstance(out, bool) and not -(2**63) <= out < 2**63:
        return None  # beyond BIGINT: the JVM gives null (Python's value would fail the job in Flink)
    return str(out) if isinstance(out, float) and out != out or out in (float("inf"), float("-inf")) else out


def enrich_check(args: list[str], lines: list[str]) -> list[str]:
    """EnrichCheck.java's output lines for ``args``, fed ``lines`` (the JVM's own code)."""
    jar = jvm.build(say=lambda _: None)
    done = subprocess.run(["java", "-cp", f"{jar}:{jvm._flink_lib() / '*'}", f"{jvm.PACKAGE}.EnrichCheck", *args],
                          check=True, capture_output=True, text=True, timeout=120,
                          input="".join(line + "\n" for line in lines))
    return done.stdout.splitlines()


def jvm_side(items: list[list[Any]]) -> list[Any]:
    return [json.loads(line) for line in enrich_check([], [json.dumps(item) for item in items])]


def random_values(rng: random.Random, n: int) -> list[Any]:
    values: list[Any] = []
    for _ in range(n):
        pick = rng.randrange(6)
        if pick == 0:
            values.append(rng.randint(-(2**62), 2**62))
        elif pick == 1:
            values.append(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-8, 12))
        elif pick == 2:
            values.append(str(rng.randint(-10**6, 10**6)) if rng.random() < 0.5 else f"{rng.uniform(-100, 100):.3f}")
        elif pick == 3:
            values.append("".join(rng.choice("0123456789.-+eE _aTtYyNn") for _ in range(rng.randint(0, 6))))
        elif pick == 4:
            values.append({"written": rng.choice([rng.randint(-999, 999), rng.random() * 100, "x y", True, None])})
        else:
            values.append({"decimal": f"{rng.randint(-10**8, 10**8)}.{rng.randint(0, 99):02d}"})
    return values


def test_both_engines_convert_every_value_alike() -> None:
    values = EDGES + random_values(random.Random(7), 3_000)
    items = [[t, v] for v in values for t in TYPES if v is not None]
    got = jvm_side(items)
    assert len(got) == len(items)
    differ = [(t, v, want, have) for (t, v), have in zip(items, got, strict=True)
              if (want := python_side(t, v)) != have or type(want) is not type(have)]
    assert not differ, f"{len(differ)} differ: {differ[:30]}"


@pytest.mark.parametrize("value", [Decimal("1.50"), 3, "x\ny"])
def test_values_the_jvm_writes_to_l2_read_back_as_written(value: Any) -> None:
    """L2 holds what L3 answered as JSON; the JVM's write-back of a numeric column is a number
    (Python's json.dumps refuses a Decimal: its write-back of such a row is counted as an L2 error)."""
    item = {"written": {"decimal": str(value)} if isinstance(value, Decimal) else value}
    assert jvm_side([["n" if not isinstance(value, str) else "s", item]]) == [
        float(value) if not isinstance(value, str) else value]


def planned_enrich(tmp_path: Path, step: str) -> Any:
    from headrace.jobs.loader import parse_job
    from headrace.jobs.plan import build_plan

    root = Path(__file__).resolve().parents[2]
    job = tmp_path / "job.yaml"
    job.write_text((root / "jobs" / "page_activity.yaml").read_text()
                   .replace("schemas/click.schema.json", str(root / "schemas" / "click.schema.json"))
                   .replace("  - validate: {}", "  - validate: {}\n  - enrich: " + step))
    return next(node for node in build_plan(parse_job(job)).steps if node.kind == "enrich")


def test_auto_is_python_and_jvm_is_asked_for(tmp_path: Path) -> None:
    pg = planned_enrich(tmp_path, "{key: user_id, fields: {plan: string}, source: {postgres: {table: users, "
                                  "key_column: id}}, engine: jvm}")
    assert pg.jvm and not pg.requirements.python and pg.requirements.jars == {"postgres"}
    assert "in the JVM" in pg.explain()
    assert pg.flink_options()["table.exec.async-scalar.retry-strategy"] == "NO_RETRY"
    redis = planned_enrich(tmp_path, "{key: user_id, fields: {plan: string}, source: {redis: {prefix: 'u:'}}, "
                                     "engine: jvm}")
    assert redis.jvm and not redis.requirements.jars
    for python in ("source: {file: {path: users.csv}}", "source: {redis: {prefix: 'u:'}}",
                   "source: {postgres: {table: users, key_column: id}}, cache: {l1: {persist: .cache}}"):
        node = planned_enrich(tmp_path, "{key: user_id, fields: {plan: string}, " + python + "}")
        assert not node.jvm and node.requirements.python and "in Python" in node.explain()
        assert node.flink_options() == {}


def test_the_jvm_engine_refuses_what_only_python_has_in_one_line_at_its_line(tmp_path: Path) -> None:
    from headrace.schemas.errors import SpecError

    with pytest.raises(SpecError) as caught:
        planned_enrich(tmp_path, "{key: user_id, fields: {plan: string}, source: {file: {path: u.csv}}, engine: jvm}")
    assert "the JVM engine does not have a 'file' source" in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'job.yaml'}:") and "\n" not in str(caught.value)


def test_the_key_the_kafka_consumer_reads_ahead_is_the_field_as_the_lookup_casts_it() -> None:
    """EnrichPrefetch.java's key of a record (a top-level string or integer, unescaped), else none:
    a record it cannot read is looked up (or dead-lettered) by its own lookup, as before."""
    records = {
        '{"ts": 1, "user_id": "u7", "page": "/a"}': "u7",
        '{"user": {"user_id": "nested"}, "user_id": "u8"}': "u8",  # a nested field of that name is skipped
        '{"user_id": "caf\\u00e9 \\"q\\""}': 'café "q"',  # escapes as the decoded string has them
        '{"user_id": 12345678901234}': "12345678901234",  # an integer key, as CAST(BIGINT AS STRING)
        '{"user_id": 1.5}': None,  # not a key the lookup would cast alike
        '{"user_id": null}': None,
        '{"page": "/a"}': None,
        '["user_id", "u1"]': None,
        'not json {"user_id": "u1"}': None,
        '{"user_id": "u9"': "u9",  # cut short after the key: the key was read
        "": None,
    }
    keys = enrich_check(["key", "user_id"], [json.dumps(r) for r in records])
    assert [json.loads(line) for line in keys] == list(records.values())


def l1_segment(capacity: int, ops: list[str]) -> list[str]:
    """Each read's answer, then the keys held (sorted, one string)."""
    *reads, held = enrich_check(["l1", str(capacity)], ops)
    return [*reads, ",".join(sorted(held.split(",")))]


def test_the_jvm_l1_evicts_the_least_recently_read_first_by_second_chance() -> None:
    """A read marks its entry instead of moving it (EnrichLevels.Segment): when the segment is full
    the eldest unread entry goes, a read one moves to the end once; the newest always stays, and
    the segment never holds more than its capacity. In these sequences that is exactly LRU."""
    # a was read after b and c came: b is the least recently used, then c
    assert l1_segment(3, ["store a", "store b", "store c", "read a", "store d", "read b", "store e"]) == [
        "hit", "miss", "a,d,e"]
    # nothing read: first in, first out
    assert l1_segment(2, ["store a", "store b", "store c", "read a", "read b", "read c"]) == [
        "miss", "hit", "hit", "b,c"]
    # capacity 1 keeps the newest even when the old one was read
    assert l1_segment(1, ["store a", "read a", "store b", "read a", "read b"]) == ["hit", "miss", "hit", "b"]
    # a key stored again is one entry, at the end
    assert l1_segment(2, ["store a", "store b", "store a", "store c"]) == ["a,c"]
    # many keys through a small segment: bounded, and a key read on every round survives them all
    ops = [op for i in range(200) for op in (f"store k{i}", "read hot")]
    out = l1_segment(8, ["store hot", *ops])
    assert out[:-1] == ["hit"] * 200
    held = out[-1].split(",")
    assert len(held) == 8 and "hot" in held and "k199" in held and "k191" not in held


def test_the_key_read_ahead_by_a_scan_is_the_parser_s_over_random_records() -> None:
    """Json.scannedKey reads most records' key without a parser and hands the rest (escapes,
    bytes past ASCII, odd numbers) to it: over random records, nested fields of the same name,
    arrays, whitespace and non-ASCII text, the key is the top-level field as the lookup casts it."""
    rng = random.Random(20261207)

    def scalar() -> Any:
        return rng.choice([rng.randint(-10**15, 10**15), rng.random() * 1e6, True, False, None,
                           "u" + str(rng.randint(0, 99)), "ünï", 'q"uo\\te', "tab\there", "", "caf\u00e9 \U0001f600"])

    def value(depth: int = 0) -> Any:
        pick = rng.randrange(4 if depth < 3 else 1)
        if pick == 1:
            return {rng.choice(["user_id", "a", "b c", "ü"]): value(depth + 1) for _ in range(rng.randint(0, 3))}
        if pick == 2:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return scalar()

    records, expected = [], []
    for _ in range(3000):
        keys = rng.sample(["ts", "page", "user", "user_id", "tenant_id", "x y"], rng.randint(0, 6))
        record = {k: value() for k in keys}
        text = json.dumps(record, ensure_ascii=rng.random() < 0.5,
                          separators=rng.choice([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
        records.append(text if rng.random() < 0.95 else text[:rng.randint(0, len(text))])
        got = record.get("user_id") if records[-1] == text else "?"
        if got == "?":
            expected.append(None)  # cut short: the parser's answer decides (checked below)
        elif isinstance(got, bool) or not isinstance(got, str | int):
            expected.append(None)
        else:
            expected.append(str(got))
    def keys(*mode: str) -> list[Any]:
        return [json.loads(line) for line in enrich_check(["key", "user_id", *mode], [json.dumps(r) for r in records])]

    read, scanned, parsed = keys(), keys("scan"), keys("parser")
    assert len(read) == len(scanned) == len(parsed) == len(records)
    # the key read ahead: the scan's answer, or the parser's where the scan leaves the record to it
    assert read == [p if s == {"unsure": True} else s for s, p in zip(scanned, parsed, strict=True)]
    answered = 0
    for record, want, key, scan in zip(records, expected, parsed, scanned, strict=True):
        if scan != {"unsure": True}:
            answered += 1
            assert scan == key, (record, scan, key)  # the scan never answers otherwise than the parser
        try:
            json.loads(record)
        except ValueError:  # cut short: a key only when the record reached it whole
            assert key is None or '"user_id"' in record, (record, key)
            continue
        assert key == want, record
    assert answered > len(records) // 3, answered  # the scan answers most plain records itself
