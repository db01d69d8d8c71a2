"""Reading views from the stores that hold them: what every store's reader does
(:class:`ViewReader`), and the embedded profile's reader.

Each sink kind gives ``headrace serve`` a reader (``SinkKind.reader``, in its store's folder:
``connectors/postgres/reader.py``, …) that answers a :class:`ViewQuery` with a page of rows, says
in one line when it cannot (:class:`StoreUnavailable`, served as 503), and serves a view whose
table does not exist yet as empty with a note. Reads time out after the serve settings' ``timeout``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

from headrace.connectors.serving.query import (
    RelatedQuery,
    ViewQuery,
    group_related,
    page,
    related_sqlite_sql,
    sqlite_sql,
)


class StoreUnavailable(Exception):
    """The store holding a view does not answer: 503 with this one-line reason."""


class ViewReader(Protocol):
    """What ``headrace serve`` asks of a store's reader. Optional, by store:

    - ``feed(view, max_rows)``: how the view's changes are found (default: a :class:`PollingFeed`
      comparing reads every ``serve.changes_interval``);
    - ``listen(wake, stopped, interval_s)``: run in a thread, calls ``wake()`` when the store says
      something changed (PostgreSQL's notices), so feeds are read at once;
    - ``top(view, window_start_ms, n, tenant)``: a window's keys ranked by ``view.top``.
    """

    name: str

    def read(self, query: ViewQuery) -> dict[str, Any]:
        """A page of rows: ``{"view", "rows", "next_cursor"}`` (and ``note`` when there are none yet)."""

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        """The newest rows of each key tuple (GraphQL's nested fields)."""

    def check(self) -> str | None:
        """None when the store answers now, else why not (``/healthz``)."""

    def close(self) -> None:
        """Release connections."""


class EmbeddedViews:
    """Views of the embedded profile: tables in ``<data_dir>/views.sqlite`` (opened read-only)."""

    name = "embedded"

    def __init__(self, data_dir: Path, timeout_ms: int) -> None:
        self.path = data_dir / "views.sqlite"
        self.timeout_ms = timeout_ms

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout_ms / 1000)

    def _fetch(self, statement: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]] | str:
        """Columns and rows, or a note saying why there are none yet."""
        if not self.path.exists():
            return f"no embedded store at {self.path} yet: run a job first"
        try:
            with self._connect() as conn:
                cursor = conn.execute(statement, params)
                return [d[0] for d in cursor.description], cursor.fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return "the view has no table yet: its job has not run"
            raise StoreUnavailable(f"embedded store {self.path} unavailable: {first_line(exc)}") from None

    def read(self, query: ViewQuery) -> dict[str, Any]:
        got = self._fetch(*sqlite_sql(query, query.view.view.name))
        if isinstance(got, str):
            return {**page(query, [], []), "note": got.replace("the view", f"view '{query.view.name}'")}
        return page(query, *got)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        got = self._fetch(*related_sqlite_sql(query, query.view.view.name))
        return group_related(query, *(([], []) if isinstance(got, str) else got))

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def related_by_reads(store: Any, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """A related read for stores without SQL: one read per key tuple (Redis, InfluxDB)."""
    out = {}
    for key in query.keys:
        one = ViewQuery(view=query.view, filters={k: [v] for k, v in zip(query.key_names, key, strict=True)},
                        since_ms=query.since_ms, until_ms=query.until_ms, fields=query.fields, limit=query.limit)
        out[key] = store.read(one)["rows"]
    return out


def sorted_page(query: ViewQuery, columns: list[str], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Filter (time range, cursor), order and cut rows read whole from a store without SQL."""
    from headrace.connectors.serving.query import json_value, ms_text

    index = {c: i for i, c in enumerate(columns)}

    def order_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(json_value(n, row[index[n]]) for n in query.order)

    kept = []
    for row in rows:
        start = str(row[index["window_start"]])
        if query.since_ms is not None and start < ms_text(query.since_ms):
            continue
        if query.until_ms is not None and start >= ms_text(query.until_ms):
            continue
        if any(row[index[k]] not in values for k, values in query.filters.items()):
            continue
        if query.after is not None:
            key = order_key(row)
            if (key >= query.after) if query.descending else (key <= query.after):
                continue
        kept.append(row)
    kept.sort(key=order_key, reverse=query.descending)
    return page(query, columns, kept[:query.limit + 1])


def typed_text(text: str, ftype: Any) -> Any:
    from headrace.schemas.types import FieldType

    if text == "":
        return None
    if ftype is FieldType.INTEGER:
        return int(text)
    if ftype is FieldType.NUMBER:
        return float(text)
    if ftype is FieldType.BOOLEAN:
        return text == "true"
    return text


