"""The enrich step on a Flink mini-cluster (embedded profile, a CSV source): views grouped by a
looked-up field equal a plain-Python join, misses follow on_miss, and the lookup counts add up."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from headrace.connectors.embedded import EmbeddedStore, topic_file
from headrace.jobs.compiler import compile_job
from headrace.jobs.loader import parse_job
from headrace.jobs.plan import build_plan
from headrace.jobs.profiles import load_profile
from headrace.jobs.runner import run_embedded
from headrace.jobs.sample import click_events, write_jsonl
from headrace.operators.enrich import STATS_DIR
from headrace.operators.lookup import LookupStats

from tests.reference import is_valid, utc

pytestmark = pytest.mark.flink
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "click.schema.json").read_text())
COUNTRIES = ["NO", "SE", "DK", "FI", "IS"]


def enrich_job(tmp_path: Path, on_miss: str) -> tuple[Path, Path, dict[str, str]]:
    users = {f"u{i}": COUNTRIES[i % 5] for i in range(250)}  # u250..u299 are unknown
    csv = tmp_path / "users.csv"
    csv.write_text("id,country,tier\n" + "".join(f"{u},{c},{i % 3}\n" for i, (u, c) in enumerate(users.items())))
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "page_activity.yaml").read_text()
                   .replace("schemas/click.schema.json", str(ROOT / "schemas" / "click.schema.json"))
                   .replace("  - validate: {}", "  - validate: {}\n  - enrich:\n      key: user_id\n"
                            "      fields: {country: string, tier: integer}\n"
                            f"      source: {{file: {{path: {csv}, key_column: id}}}}\n      on_miss: {on_miss}")
                   .replace("group_by: [tenant_id, page]",
                            "group_by: [tenant_id, page]" if on_miss == "keep" else "group_by: [tenant_id, country]")
                   .replace("events: count()", "events: count()\n        tiers: sum(tier)")
                   .replace("allowed_lateness: 30s", "allowed_lateness: 0s"))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"profiles:\n  local:\n    embedded: {{data_dir: {tmp_path / 'local'}}}\n"
                        "    flink: {parallelism.default: '2'}\n")
    return job, profiles, users


@pytest.mark.parametrize("on_miss", ["keep", "drop", "dead_letter"])
def test_views_grouped_by_a_looked_up_field_match_a_plain_join(
        tmp_path: Path, on_miss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the workers' lookup counts go to ./.headrace/stats
    job, profiles, users = enrich_job(tmp_path, on_miss)
    events = list(click_events(6_000, seed=17))
    write_jsonl(topic_file(tmp_path / "local", "clicks"), iter(events))
    summary = run_embedded(compile_job(build_plan(parse_job(job)), load_profile("local", profiles)),
                           say=lambda _: None)

    store = EmbeddedStore(tmp_path / "local")
    columns, rows = store.rows("page_activity_1m")
    dead = list(store.records("clicks.dlq"))
    late = Counter(d["payload"].encode() for d in store.records("clicks.late"))
    store.close()
    valid = [json.loads(e.payload) for e in events if is_valid(e.payload, SCHEMA) and not late[e.payload]]
    missed = [r for r in valid if r["user_id"] not in users]
    assert missed  # the sample has users the file lacks
    group = "page" if on_miss == "keep" else "country"
    tier = {u: i % 3 for i, u in enumerate(users)}
    expected: dict[tuple[object, ...], list[int]] = {}
    for r in valid:
        if r["user_id"] not in users and on_miss != "keep":
            continue
        start = r["ts"] - r["ts"] % 60_000
        key = (r["tenant_id"], r["page"] if group == "page" else users[r["user_id"]],
               utc(start).strftime("%Y-%m-%d %H:%M:%S.000"))
        counts = expected.setdefault(key, [0, 0, 0])  # events, sum of tiers, tiers seen
        counts[0] += 1
        if r["user_id"] in tier:
            counts[1] += tier[r["user_id"]]
            counts[2] += 1
    want = {k: (v[0], v[1] if v[2] else None) for k, v in expected.items()}
    got = {(r["tenant_id"], r[group], r["window_start"]): (r["events"], r["tiers"])
           for r in (dict(zip(columns, row, strict=True)) for row in rows)}
    assert got == want
    enrich_dead = [d for d in dead if d["step"] == "enrich"]
    if on_miss == "dead_letter":
        assert len(enrich_dead) == len(missed)
        assert all(d["error"].startswith("enrich: no row for user_id u2") and d["error_path"] == "/user_id"
                   for d in enrich_dead)
    else:
        assert not enrich_dead
    assert summary.records_in == len(events)

    # every valid record asked the lookup once; the file answered each key once per worker, L1 the rest
    stats = [LookupStats.from_json(p.read_text()) for p in (tmp_path / STATS_DIR).glob("page-activity.enrich.*.json")]
    total = stats[0]
    for more in stats[1:]:
        total = total.merged(more)
    # every record the aggregate took was looked up once; late ones too where the output needs the
    # lookup to route them (drop, dead_letter), not where it does not (keep)
    assert len(valid) <= total.keys <= sum(1 for e in events if is_valid(e.payload, SCHEMA))
    assert total.l1_hits + total.l3_hits + total.misses == total.keys
    assert total.l3_hits <= 250 * len(stats) and total.misses <= 50 * len(stats) and total.l2_hits == 0
