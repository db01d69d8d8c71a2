"""Reading views from the stores that hold them.

Each store answers a :class:`ViewQuery` with a page of rows, says in one line when it cannot
(:class:`StoreUnavailable`, served as 503), and serves a view whose table does not exist yet as
empty with a note. Reads time out after the serve settings' ``timeout``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from headrace.connectors.serving.query import ViewQuery, page, postgres_sql, sqlite_sql


class StoreUnavailable(Exception):
    """The store holding a view does not answer: 503 with this one-line reason."""


class PostgresViews:
    """Views in PostgreSQL, read through a connection pool (a read replica when configured)."""

    name = "postgres"

    def __init__(self, conninfo: dict[str, Any], timeout_ms: int, max_size: int = 8) -> None:
        from psycopg_pool import ConnectionPool

        self.where = f"PostgreSQL {conninfo.get('host')}:{conninfo.get('port')}"
        self.timeout_ms = timeout_ms
        options = f"-c statement_timeout={timeout_ms} -c default_transaction_read_only=on"
        kwargs = {**conninfo, "connect_timeout": max(1, timeout_ms // 1000), "options": options, "autocommit": True}
        self.pool = ConnectionPool(kwargs=kwargs, min_size=1, max_size=max_size, open=False,
                                   timeout=timeout_ms / 1000, reconnect_timeout=5)
        self.pool.open(wait=False)
        self.round_trips = 0  # for tests: one per read

    def read(self, query: ViewQuery) -> dict[str, Any]:
        import psycopg
        from psycopg_pool import PoolTimeout

        statement, params = postgres_sql(query, query.view.view.name)
        try:
            with self.pool.connection() as conn:
                cursor = conn.execute(statement, params)
                self.round_trips += 1
                columns = [d.name for d in cursor.description or ()]
                rows = cursor.fetchall()
        except psycopg.errors.UndefinedTable:
            return {**page(query, [], []), "note": f"view '{query.view.name}' has no table yet: its job has not run"}
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self.pool.check()  # drop broken connections so service resumes when the store is back
            raise StoreUnavailable(f"{self.where} unavailable: {_first_line(exc)}") from None
        return page(query, columns, rows)

    def check(self) -> str | None:
        """None when the store answers now, else why not."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout) as exc:
            return f"{self.where} unavailable: {_first_line(exc)}"
        return None

    def close(self) -> None:
        self.pool.close()


class EmbeddedViews:
    """Views of the embedded profile: tables in ``<data_dir>/views.sqlite`` (opened read-only)."""

    name = "embedded"

    def __init__(self, data_dir: Path, timeout_ms: int) -> None:
        self.path = data_dir / "views.sqlite"
        self.timeout_ms = timeout_ms

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout_ms / 1000)

    def read(self, query: ViewQuery) -> dict[str, Any]:
        statement, params = sqlite_sql(query, query.view.view.name)
        if not self.path.exists():
            return {**page(query, [], []), "note": f"no embedded store at {self.path} yet: run a job first"}
        try:
            with self._connect() as conn:
                cursor = conn.execute(statement, params)
                columns = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {**page(query, [], []),
                        "note": f"view '{query.view.name}' has no table yet: its job has not run"}
            raise StoreUnavailable(f"embedded store {self.path} unavailable: {_first_line(exc)}") from None
        return page(query, columns, rows)

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
