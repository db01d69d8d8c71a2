"""Reading views from the stores that hold them.

Each store answers a :class:`ViewQuery` with a page of rows, says in one line when it cannot
(:class:`StoreUnavailable`, served as 503), and serves a view whose table does not exist yet as
empty with a note. Reads time out after the serve settings' ``timeout``.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from headrace.connectors.serving.query import (
    RelatedQuery,
    ViewQuery,
    group_related,
    page,
    postgres_sql,
    related_sql,
    sqlite_sql,
)
from headrace.schemas.views import ServedView


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
            raise StoreUnavailable(f"{self.where} unavailable: {_first_line(exc)}") from None

    def read(self, query: ViewQuery) -> dict[str, Any]:
        got = self._fetch(*postgres_sql(query, query.view.view.name))
        if got is None:
            return {**page(query, [], []), "note": f"view '{query.view.name}' has no table yet: its job has not run"}
        return page(query, *got)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        """Every key's newest rows in one round trip."""
        got = self._fetch(*related_sql(query, query.view.view.name, dialect="postgres"))  # type: ignore[arg-type]
        return group_related(query, *(got or ([], [])))

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
            raise StoreUnavailable(f"embedded store {self.path} unavailable: {_first_line(exc)}") from None

    def read(self, query: ViewQuery) -> dict[str, Any]:
        got = self._fetch(*sqlite_sql(query, query.view.view.name))
        if isinstance(got, str):
            return {**page(query, [], []), "note": got.replace("the view", f"view '{query.view.name}'")}
        return page(query, *got)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        got = self._fetch(*related_sql(query, query.view.view.name, dialect="sqlite"))
        return group_related(query, *(([], []) if isinstance(got, str) else got))

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def _first_line(exc: BaseException) -> str:
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


def _sorted_page(query: ViewQuery, columns: list[str], rows: list[tuple[Any, ...]]) -> dict[str, Any]:
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


class RedisViews:
    """Views a Redis sink wrote: the hash of each key and window (``<view>:<keys…>:<window ms>``).

    A read scans the view's keys (narrowed to one key's windows when every group key is given)
    and fetches the hashes in one pipelined round trip; ordering and pages are applied here, so a
    read costs time in proportion to the view's size in Redis (keep Redis views bounded by TTL).
    """

    name = "redis"

    def __init__(self, redis_kwargs: dict[str, Any], timeout_ms: int) -> None:
        import redis

        self.where = f"Redis {redis_kwargs.get('host')}:{redis_kwargs.get('port')}"
        self.client = redis.Redis(**{**redis_kwargs, "socket_timeout": timeout_ms / 1000,
                                     "socket_connect_timeout": timeout_ms / 1000})

    def read(self, query: ViewQuery) -> dict[str, Any]:
        import redis
        from headrace.connectors.redis import encode_part

        view = query.view.view
        keys = [n for n, _ in view.keys]
        pattern = f"{_glob(view.name)}:*"
        if all(len(query.filters.get(k, [])) == 1 for k in keys):
            parts = [_glob(encode_part(query.filters[k][0], t)) for k, t in view.keys]
            pattern = f"{_glob(view.name)}:{':'.join(parts)}:*"
        columns = [*keys, "window_start", "window_end", *(n for n, _ in view.measures)]
        types = dict((*view.keys, *view.measures))
        try:
            names = [k for k in self.client.scan_iter(match=pattern, count=1000)
                     if not k.endswith(b":latest") and b":top:" not in k]
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            hashes = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{self.where} unavailable: {_first_line(exc)}") from None
        rows = []
        for values in hashes:
            if not values:
                continue  # expired between the scan and the read
            record = {k.decode(): v.decode() for k, v in values.items()}
            row = []
            for column in columns:
                text = record.get(column, "")
                ftype = types.get(column)
                row.append(text if ftype is None else _typed_text(text, ftype))
            rows.append(tuple(row))
        return _sorted_page(query, columns, rows)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        return related_by_reads(self, query)

    def top(self, view: ServedView, window_start_ms: int, n: int,
            tenant: tuple[str, str] | None) -> list[dict[str, Any]]:
        """The keys of one window ranked by the view's top measure (its sorted set), best first;
        ``tenant`` (column, value) keeps only that tenant's keys."""
        import redis

        keys = view.view.keys
        try:
            ranked: Any = self.client.zrevrange(f"{view.view.name}:top:{view.top}:{window_start_ms}", 0, -1,
                                                withscores=True)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{self.where} unavailable: {_first_line(exc)}") from None
        out = []
        for member, score in ranked:
            parts = [urllib.parse.unquote(p) for p in member.decode().split(":")]
            if len(parts) != len(keys):
                continue
            key = {name: _typed_text(text, ftype) for (name, ftype), text in zip(keys, parts, strict=True)}
            if tenant is not None and str(key.get(tenant[0])) != tenant[1]:
                continue
            out.append({"key": key, view.top or "value": score})
            if len(out) >= n:
                break
        return out

    def check(self) -> str | None:
        import redis

        try:
            self.client.ping()
        except redis.RedisError as exc:
            return f"{self.where} unavailable: {_first_line(exc)}"
        return None

    def close(self) -> None:
        self.client.close()


def _glob(text: str) -> str:
    """``text`` matched literally by Redis's MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _typed_text(text: str, ftype: Any) -> Any:
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


class InfluxViews:
    """Views an InfluxDB sink wrote, read with InfluxQL on ``/query`` (InfluxDB 1.x, and 2.x/3.x
    through their v1 compatibility), values bound as query parameters, never spliced in."""

    name = "influx"

    def __init__(self, url: str, database: str, auth_header: str | None, timeout_ms: int) -> None:
        self.url, self.database, self.auth_header, self.timeout_ms = url.rstrip("/"), database, auth_header, timeout_ms
        self.where = f"InfluxDB {self.url}"

    def _query(self, influxql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        form = {"db": self.database, "q": influxql, "epoch": "ms", "params": json.dumps(params)}
        request = urllib.request.Request(f"{self.url}/query", data=urllib.parse.urlencode(form).encode(),
                                         method="POST")
        if self.auth_header:
            request.add_header("Authorization", self.auth_header)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_ms / 1000) as answer:
                result = json.loads(answer.read())["results"][0]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StoreUnavailable(f"{self.where} unavailable: {_first_line(exc)}") from None
        if "error" in result:
            raise StoreUnavailable(f"{self.where} refused the read: {str(result['error'])[:200]}")
        return list(result.get("series", []))

    def read(self, query: ViewQuery) -> dict[str, Any]:
        from headrace.connectors.influx import tag_text
        from headrace.connectors.serving.query import ms_text

        view = query.view.view
        keys = [n for n, _ in view.keys]
        measures = [n for n, _ in view.measures]
        types = dict((*view.keys, *view.measures))
        conditions: list[str] = []
        params: dict[str, Any] = {}
        if query.since_ms is not None:
            conditions.append("time >= $since")
            params["since"] = query.since_ms * 1_000_000
        if query.until_ms is not None:
            conditions.append("time < $until")
            params["until"] = query.until_ms * 1_000_000
        for k_index, (name, values) in enumerate(query.filters.items()):
            alternatives = []
            for v_index, value in enumerate(values):
                params[f"k{k_index}_{v_index}"] = tag_text(value, types[name])
                alternatives.append(f'"{name}" = $k{k_index}_{v_index}')
            conditions.append("(" + " OR ".join(alternatives) + ")")
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        fields = ", ".join(f'"{m}"' for m in (*measures, "window_end_ms"))
        tags = ", ".join(f'"{k}"' for k in keys)
        series = self._query(f'SELECT {fields}, {tags} FROM "{view.name}"{where}', params)
        columns = [*keys, "window_start", "window_end", *measures]
        rows = []
        for one in series:
            names = list(one.get("columns", []))
            for values in one.get("values", []):
                record = dict(zip(names, values, strict=True))
                row = [_typed_text(str(record[k]), types[k]) for k in keys]
                row += [ms_text(int(record["time"])), ms_text(int(record.get("window_end_ms") or record["time"]))]
                row += [record.get(m) for m in measures]
                rows.append(tuple(row))
        return _sorted_page(query, columns, rows)

    def read_related(self, query: RelatedQuery) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
        return related_by_reads(self, query)

    def check(self) -> str | None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as answer:
                answer.read()
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError) as exc:
            return f"{self.where} unavailable: {_first_line(exc)}"
        return None

    def close(self) -> None:
        pass
