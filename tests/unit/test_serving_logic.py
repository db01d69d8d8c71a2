"""The serving layer's logic without servers: what a subscriber may see of changed rows, how a
polled store's changes are found, and the related-rows SQL (one statement for many keys)."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from headrace.connectors.serving.access import Access, Forbidden
from headrace.connectors.serving.auth import Principal
from headrace.connectors.serving.changes import ChangeHub, PollingFeed
from headrace.connectors.serving.query import RelatedQuery, group_related, related_sqlite_sql
from headrace.schemas.serving import ServeSettings
from headrace.schemas.types import FieldType
from headrace.schemas.views import ServedView, ViewDef

VIEW = ServedView(view=ViewDef("per_minute", keys=(("tenant_id", FieldType.STRING), ("page", FieldType.STRING)),
                               measures=(("events", FieldType.INTEGER), ("avg_ms", FieldType.NUMBER))),
                  store="postgres", job="j", step="s", spec="j.yaml")
SETTINGS = ServeSettings(hide={"guest": ["avg_ms"]})


def row(tenant: str, page: str, minute: int, events: int) -> dict[str, Any]:
    return {"tenant_id": tenant, "page": page, "window_start": f"2026-01-01T00:{minute:02d}:00.000Z",
            "window_end": f"2026-01-01T00:{minute + 1:02d}:00.000Z", "events": events, "avg_ms": 1.5}


def test_a_subscriber_sees_its_tenant_its_filters_and_no_hidden_measure() -> None:
    guest = Access(Principal("ana", "t1", frozenset({"guest"})), SETTINGS)
    accept = guest.rows_filter(VIEW, {"page": ["/a", "/b"]})
    rows = [row("t1", "/a", 1, 3), row("t2", "/a", 1, 4), row("t1", "/c", 1, 5), row("t1", "/b", 2, 6)]
    assert accept(rows) == [{k: v for k, v in r.items() if k != "avg_ms"} for r in (rows[0], rows[3])]
    with pytest.raises(Forbidden):
        guest.rows_filter(VIEW, {"tenant_id": ["t2"]})
    admin = Access(Principal("root", None, frozenset({"all_tenants"})), SETTINGS)
    assert admin.rows_filter(VIEW, {})(rows) == rows
    with pytest.raises(Forbidden):  # no tenant and no all-tenants role: nothing
        Access(Principal("x", None, frozenset()), SETTINGS).rows_filter(VIEW, {})


class FakeStore:
    """A store whose newest rows are whatever the test set (a fake: this tests the diff only)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.reads = 0

    def read(self, query: Any) -> dict[str, Any]:
        self.reads += 1
        return {"rows": [dict(r) for r in self.rows]}


def test_a_polled_store_yields_new_and_changed_rows_once() -> None:
    store = FakeStore()
    store.rows = [row("t1", "/a", 1, 3)]
    feed = PollingFeed(VIEW, store, max_rows=1000)
    assert feed.poll() == []  # the baseline
    store.rows = [row("t1", "/a", 1, 3), row("t1", "/a", 2, 1)]
    assert feed.poll() == [row("t1", "/a", 2, 1)]
    assert feed.poll() == []
    store.rows = [row("t1", "/a", 1, 4), row("t1", "/a", 2, 1)]
    assert feed.poll() == [row("t1", "/a", 1, 4)]


def test_the_hub_reads_a_view_once_for_all_its_subscribers() -> None:
    store = FakeStore()
    hub = ChangeHub({"postgres": store}, interval_s=0.05)
    view = ServedView(view=VIEW.view, store="postgres", job="j", step="s", spec="j.yaml")

    async def scenario() -> list[list[dict[str, Any]]]:
        t1 = Access(Principal("a", "t1", frozenset()), SETTINGS)
        t2 = Access(Principal("b", "t2", frozenset()), SETTINGS)
        subs = [await hub.subscribe(view, access.rows_filter(view, {})) for access in (t1, t1, t2)]
        store.rows = [row("t1", "/a", 1, 3), row("t2", "/a", 1, 9)]
        got = [await asyncio.wait_for(s.queue.get(), 5) for s in subs]
        return got  # type: ignore[return-value]

    try:
        got = asyncio.run(scenario())
    finally:
        hub.close()
    assert got == [[row("t1", "/a", 1, 3)], [row("t1", "/a", 1, 3)], [row("t2", "/a", 1, 9)]]
    # one baseline read, then one read per poll for all three subscribers (not three per poll)
    assert store.reads < 3 + 2 * (1 + 5 / 0.05)


def test_related_rows_are_one_statement_ranked_per_key() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE per_minute (tenant_id TEXT, page TEXT, window_start TEXT, window_end TEXT, '
                 'events INTEGER, avg_ms REAL, _records INTEGER)')
    for t in ("t1", "t2"):
        for p in ("/a", "/b"):
            for m in range(5):
                conn.execute("INSERT INTO per_minute VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (t, p, f"2026-01-01 00:0{m}:00.000", f"2026-01-01 00:0{m + 1}:00.000", m, 0.5, m))
    query = RelatedQuery(view=VIEW, key_names=("tenant_id", "page"), keys=(("t1", "/a"), ("t2", "/b"), ("t9", "/z")),
                         limit=2)
    statement, params = related_sqlite_sql(query, "per_minute")
    cursor = conn.execute(statement, params)
    grouped = group_related(query, [d[0] for d in cursor.description], cursor.fetchall())
    assert {k: [r["events"] for r in v] for k, v in grouped.items()} == {
        ("t1", "/a"): [4, 3], ("t2", "/b"): [4, 3], ("t9", "/z"): []}
    assert grouped[("t1", "/a")][0]["window_start"] == "2026-01-01T00:04:00.000Z"
    # hostile key values are parameters, never SQL
    hostile = RelatedQuery(view=VIEW, key_names=("tenant_id",), keys=(("' OR 1=1 --",),), limit=2)
    statement, params = related_sqlite_sql(hostile, "per_minute")
    assert "OR 1=1" not in statement and conn.execute(statement, params).fetchall() == []
