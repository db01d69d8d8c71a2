"""The mask step on a Flink mini-cluster: each rule against a plain-Python reference, and a whole
job whose outputs (view, dead letters, late records) are searched for the clear values."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import sqlite3
from pathlib import Path

import pytest
from headrace.connectors.embedded import EmbeddedStore, topic_file
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import run_embedded, table_environment
from headrace.jobs.sample import click_events

from tests.reference import is_valid

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
KEY = os.environ["HEADRACE_MASK_KEY"]  # set by conftest before the JVM starts


def reference(rule: str, value: str) -> str:
    """The rules, written independently of the Java ones."""
    if rule == "hash":
        return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()
    if rule == "redact":
        return "[redacted]"
    if rule == "email_domain":
        return value[value.rindex("@"):] if "@" in value[:-1] else "[redacted]"
    if rule.startswith("keep_last:"):
        n = int(rule.split(":")[1])
        return "*" * len(value) if len(value) <= n else "*" * (len(value) - n) + value[-n:]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "[redacted]"
    if address.version == 4:
        return str(ipaddress.ip_network(f"{value}/24", strict=False).network_address)
    groups = address.exploded.split(":")[:3]
    return ":".join(format(int(g, 16), "x") for g in groups) + "::"


CASES = [("hash", "alice"), ("hash", ""), ("redact", "x"), ("email_domain", "bob@corp.example"),
         ("email_domain", "no-at-sign"), ("email_domain", "trailing@"), ("keep_last:4", "4111111111111111"),
         ("keep_last:4", "123"), ("keep_last:2", "héllo"), ("truncate_ip", "203.0.113.77"),
         ("truncate_ip", "2001:db8:85a3:8d3:1319:8a2e:370:7348"), ("truncate_ip", "2001:db8::1"),
         ("truncate_ip", "::1"), ("truncate_ip", "999.1.1.1"), ("truncate_ip", "example.com"),
         ("truncate_ip", "1:2:3:4:5:6:7:8:9")]


def test_each_rule_matches_the_reference(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                   .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
                   .replace("  - validate: {}", "  - validate: {}\n  - mask: {fields: {user_id: hash}}"))
    compiled = compile_job(build_plan(parse_job(job)), load_profile("local"))
    t_env = table_environment(compiled, [])
    values = ", ".join(f"('{rule}', '{value}')" for rule, value in CASES)
    rows = t_env.execute_sql(f"SELECT r, v, hr_mask(v, r, 'HEADRACE_MASK_KEY') FROM (VALUES {values}) AS t(r, v)")
    with rows.collect() as results:
        got = {(r[0], r[1]): r[2] for r in results}
    assert got == {(rule, value): reference(rule, value) for rule, value in CASES}


def test_no_output_holds_a_masked_value_in_clear(tmp_path: Path) -> None:
    data_dir = tmp_path / "local"
    lines = []
    for i, event in enumerate(click_events(3_000, seed=5)):
        if event.kind == "invalid":
            lines.append(event.payload)
            continue
        record = json.loads(event.payload)
        record["user_id"], record["email"] = f"secretuser{i % 40}", f"hidden{i}@corp.example"
        lines.append(json.dumps(record).encode())
    # refused records that hold the values: a schema violation elsewhere, a wrong type on the
    # masked field itself (validators quote the value), and a payload that is not JSON
    lines.append(json.dumps({"tenant_id": "t", "user_id": "secretuserA", "page": "/", "ts": 1,
                             "latency_ms": -5, "email": "hiddenA@corp.example"}).encode())
    lines.append(json.dumps({"tenant_id": "t", "user_id": 987654321, "page": "/", "ts": 1, "latency_ms": 5,
                             "email": "hiddenB@corp.example"}).encode())
    lines.append(b"secretuserC hiddenC@corp.example is not json")
    topic_file(data_dir, "clicks").parent.mkdir(parents=True)
    topic_file(data_dir, "clicks").write_bytes(b"\n".join(lines) + b"\n")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {data_dir}}}\n")
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                   .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
                   .replace("  - validate: {}",
                            "  - validate: {}\n  - mask: {fields: {user_id: hash, email: email_domain}}")
                   .replace("group_by: [tenant_id, page]", "group_by: [tenant_id, user_id]"))
    compiled = compile_job(build_plan(parse_job(job)), load_profile("local", profiles))
    summary = run_embedded(compiled, say=lambda _: None)

    store = EmbeddedStore(data_dir)
    columns, rows = store.rows("page_activity_1m")
    dead = list(store.records("clicks.dlq"))
    late = list(store.records("clicks.late"))
    store.close()
    # the view is grouped by the hashed ids, exactly as the reference hashes them
    valid_users = {json.loads(p)["user_id"] for p in lines if is_valid(p, SCHEMA)}
    assert {dict(zip(columns, r, strict=True))["user_id"] for r in rows} <= {reference("hash", u) for u in valid_users}
    assert len(rows) > 40 and summary.late > 0 and summary.dead_lettered >= 3
    raw = b"secretuserC hiddenC@corp.example is not json"
    unparsed = next(d for d in dead if d["payload"] and f'"bytes":{len(raw)},' in d["payload"])
    assert json.loads(unparsed["payload"]) == {"masked_payload": {
        "bytes": len(raw), "hmac_sha256": hmac.new(KEY.encode(), raw, hashlib.sha256).hexdigest()}}
    assert unparsed["error"].endswith(": (details masked)")
    wrong_type = next(d for d in dead if d["error_path"] == "/user_id")
    assert "***" in wrong_type["error"] and "987654321" not in wrong_type["error"]
    assert json.loads(wrong_type["payload"])["user_id"] == reference("hash", "987654321")
    assert json.loads(wrong_type["payload"])["email"] == "@corp.example"
    # late records (refused after the mask step) carry the masked payload too
    hashed = {reference("hash", u) for u in valid_users}
    assert late and all(json.loads(d["payload"])["user_id"] in hashed for d in late)
    assert all(json.loads(d["payload"])["email"] == "@corp.example" for d in late)

    # nothing written anywhere holds a clear value (the input file aside)
    outputs = [p for p in data_dir.iterdir() if p.name != "clicks.jsonl"]
    text = b"".join(p.read_bytes() for p in outputs if p.suffix == ".jsonl")
    with sqlite3.connect(data_dir / "views.sqlite") as db:
        text += "\n".join(db.iterdump()).encode()
    assert b"secretuser" not in text and b"hidden" not in text and b"987654321" not in text
    assert b"@corp.example" in text  # email_domain keeps the domain


def test_a_job_that_masks_needs_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.schemas.errors import HeadraceError

    monkeypatch.delenv("HEADRACE_MASK_KEY", raising=False)
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                   .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
                   .replace("  - validate: {}", "  - validate: {}\n  - mask: {fields: {user_id: hash}}"))
    with pytest.raises(HeadraceError, match="needs its key in environment variable HEADRACE_MASK_KEY"):
        run_embedded(compile_job(build_plan(parse_job(job)), load_profile("local")), say=lambda _: None)
