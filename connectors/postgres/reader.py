"""How ``headrace serve`` reads PostgreSQL views: pages through a connection pool (a read replica
when the profile's ``postgres:`` names one), related rows in one statement, and live changes.

Changes are exact and prompt. The sink stamps every row it inserts or updates with its writing
transaction (``_xid``, see ``sink.py``) and notifies ``headrace_changes`` once per statement.
The reader listens on that channel (on the primary, where notices are sent) and wakes the
change hub, whose feed then reads the rows written by transactions that its previous snapshot
did not see::

    _xid >= pg_snapshot_xmin(prev) AND NOT pg_visible_in_snapshot(_xid, prev)

in the same repeatable-read transaction that takes the next snapshot. A transaction that commits
late is still caught (its id is not visible in ``prev``), and nothing is read twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headrace.connectors.postgres.sink import CHANGE_COLUMN, TYPES
from headrace.connectors.serving.changes import PollingFeed
from headrace.connectors.serving.query import (
    RelatedQuery,
    ViewQuery,
    group_related,
    json_value,
    page,
    related_sql,
)
from headrace.connectors.serving.stores import StoreUnavailable, first_line
from headrace.schemas.views import RECORDS_COLUMN, WINDOW_BOUNDS, ServedView

log = logging.getLogger("headrace.serve.changes")

CHANNEL = "headrace_changes"


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def postgres_sql(query: ViewQuery, table: str) -> tuple[Any, list[Any]]:
    """The query as psycopg SQL (identifiers composed, values as parameters)."""
    from psycopg import sql

    conditions: list[Any] = []
    params: list[Any] = []
    for name, values in query.filters.items():
        conditions.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(name)))
        params.append(values)
    if query.since_ms is not None:
        conditions.append(sql.SQL('"window_start" >= %s'))
        params.append(_instant(query.since_ms))
    if query.until_ms is not None:
        conditions.append(sql.SQL('"window_start" < %s'))
        params.append(_instant(query.until_ms))
    order = [sql.Identifier(n) for n in query.order]
    if query.after is not None:
        conditions.append(sql.SQL("({}) {} ({})").format(
            sql.SQL(", ").join(order), sql.SQL("<" if query.descending else ">"),
            sql.SQL(", ").join(sql.Placeholder() * len(order))))
        params += [_pg_value(n, v) for n, v in zip(query.order, query.after, strict=True)]
    columns = list(dict.fromkeys((*query.fields, *query.order)))
    direction = sql.SQL(" DESC" if query.descending else " ASC")
    statement = sql.SQL("SELECT {cols} FROM {table}{where} ORDER BY {order} LIMIT %s").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)), table=sql.Identifier(table),
        where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
        order=sql.SQL(", ").join(o + direction for o in order))
    params.append(query.limit + 1)  # one more: whether there is a next page
    return statement, params


def _pg_value(name: str, value: Any) -> Any:
    if name in WINDOW_BOUNDS:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def related_postgres_sql(query: RelatedQuery, table: str) -> tuple[str, list[Any]]:
    """:func:`related_sql` for PostgreSQL: the key tuples as typed arrays, ``unnest``-ed."""
    types = dict(query.view.view.keys)
    keys = ", ".join(f'"{k}"' for k in query.key_names)
    arrays = ", ".join(f"%s::{TYPES[types[k]]}[]" for k in query.key_names)
    params: list[Any] = [[key[i] for key in query.keys] for i in range(len(query.key_names))]
    return related_sql(query, table, match=f"({keys}) IN (SELECT * FROM unnest({arrays}))", params=params,
                       mark="%s", instant=_instant)


class PostgresFeed:
    """Rows written since the previous snapshot (see the module's docstring)."""

    def __init__(self, view: ServedView, pool: Any) -> None:
        from psycopg import sql

        self.view, self.pool = view, pool
        self.snapshot: str | None = None
        columns = [n for n, _ in view.view.columns if n != RECORDS_COLUMN]
        self.statement = sql.SQL(
            "SELECT {cols} FROM {table} WHERE {xid} >= pg_snapshot_xmin(%(prev)s::pg_snapshot) "
            "AND NOT pg_visible_in_snapshot({xid}, %(prev)s::pg_snapshot) ORDER BY window_start, window_end"
        ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)), table=sql.Identifier(view.view.name),
                 xid=sql.Identifier(CHANGE_COLUMN))

    def poll(self) -> list[dict[str, Any]]:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            now = row[0] if row else None
            if self.snapshot is None:
                self.snapshot = now
                return []
            cursor = conn.execute(self.statement, {"prev": self.snapshot})
            names = [d.name for d in cursor.description or ()]
            rows = [{n: json_value(n, v) for n, v in zip(names, values, strict=True)} for values in cursor]
        self.snapshot = now
        return rows


class PostgresViews:
    """Views in PostgreSQL, read through a connection pool (a read replica when configured);
    ``listen_conninfo`` (the primary) is where change notices are listened for."""

    name = "postgres"

    def __init__(self, conninfo: dict[str, Any], timeout_ms: int, max_size: int = 8,
                 listen_conninfo: dict[str, Any] | None = None) -> None:
        from psycopg_pool import ConnectionPool

        self.where = f"PostgreSQL {conninfo.get('host')}:{conninfo.get('port')}"
        self.timeout_ms = timeout_ms
        self.listen_conninfo = listen_conninfo or conninfo
        options = f"-c statement_timeout={timeout_ms} -c default_transaction_read_only=on"
        kwargs = {**conninfo, "connect_timeout": max(1, timeout_ms // 1000), "options": options, "autocommit": True}
        self.pool = ConnectionPool(kwargs=kwargs, min_size=1, max_size=max_size, open=False,
                                   timeout=timeout_ms / 1000, reconnect_timeout=5)
        self.pool.open(wait=False)
        self.round_trips = 0  # for tests: one per read

    def _fetch(self, statement: Any, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]] | None:
        """Columns and rows of one statement; None when the view's table does not exist yet."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn:
                cursor = conn.execute(statement, params)
                self.round_trips += 1
                return [d.name for d in cursor.description or ()], cursor.fetchall()
        except psycopg.errors.UndefinedTable:
            return None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.pool.check()  # drop broken connections so service resumes when the store is back
            raise StoreUnavailable(f"{self.where} unavailable: {first_line(exc)}") from None

    def read(self, query: ViewQuery) -> dict[str, Any]:
        got = self._fetch(*postgres_sql(query, query.view.view.name))
        if got is None:
            return {**page(query, [], []), "note": f"view '{query.view.name}' has no table yet: its job has not run"}
        return page(query, *got)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        """Every key's newest rows in one round trip."""
        got = self._fetch(*related_postgres_sql(query, query.view.view.name))
        return group_related(query, *(got or ([], [])))

    def check(self) -> str | None:
        """None when the store answers now, else why not."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout) as exc:
            return f"{self.where} unavailable: {first_line(exc)}"
        return None

    def feed(self, view: ServedView, max_rows: int) -> Any:
        """A view's changes: by change stamps, or by comparing reads for a table from before them."""
        return PostgresFeed(view, self.pool) if self._stamped(view) else PollingFeed(view, self, max_rows)

    def _stamped(self, view: ServedView) -> bool:
        """Whether the view's table carries the sink's change stamps (tables from before do not)."""
        try:
            with self.pool.connection() as conn:
                # a table not created yet will be created by the current sink, with the stamps
                row = conn.execute("SELECT 1 WHERE to_regclass(%s) IS NULL OR EXISTS (SELECT 1 FROM pg_attribute "
                                   "WHERE attrelid = to_regclass(%s) AND attname = %s)",
                                   (f'"{view.view.name}"', f'"{view.view.name}"', CHANGE_COLUMN)).fetchone()
        except Exception:  # unreachable now: assume the current sink, whose tables are stamped
            return True
        if row is None:
            log.warning("view %s has no change stamps (its table predates them): subscriptions compare its "
                        "newest rows on every poll instead", view.name)
        return row is not None

    def listen(self, wake: Callable[[], None], stopped: threading.Event, interval_s: float) -> None:
        """Until ``stopped``: ``wake()`` on every notice from the sink's triggers (and on reconnecting,
        so that anything written while not listening is read)."""
        import psycopg

        while not stopped.is_set():
            try:
                with psycopg.connect(**{**self.listen_conninfo, "connect_timeout": 3}, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    wake()
                    while not stopped.is_set():
                        for _ in conn.notifies(timeout=interval_s, stop_after=1):
                            wake()
            except psycopg.Error:
                stopped.wait(interval_s)

    def close(self) -> None:
        self.pool.close()
