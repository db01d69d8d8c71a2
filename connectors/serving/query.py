"""A read of a view, from a request's query parameters to parameterized SQL.

Parameters (``GET /v1/views/page_activity_1m?tenant_id=t1&page=/a&page=/b&since=1h&limit=50``):

- a group key column (``tenant_id=t1``; repeated for ``in``): equality on that column;
- ``since`` / ``until``: the window start is at or after / before this instant: ISO-8601
  (``2026-01-01T00:00:00Z``), epoch milliseconds, or a duration back from now (``1h``);
- ``sort``: a key column, ``-`` first for descending (default ``-window_start``); only key
  columns, so a page boundary never moves when measures are upserted;
- ``fields``: the columns to return (comma-separated; default all but bookkeeping);
- ``limit`` (1..max_rows, default 100) and ``cursor`` (the ``next_cursor`` of the page before).

Anything else is refused with the parameter's name. Values reach SQL only as parameters; column
names come from the view's definition, never from the request.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headrace.schemas.durations import parse_duration_ms
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, WINDOW_BOUNDS, ServedView

RESERVED = ("since", "until", "sort", "fields", "limit", "cursor")


class BadRequest(Exception):
    """A request the view cannot answer: 400 with this message (it names the parameter)."""


@dataclass(frozen=True)
class ViewQuery:
    view: ServedView
    filters: dict[str, list[Any]] = field(default_factory=dict)
    since_ms: int | None = None
    until_ms: int | None = None
    sort: str = "window_start"
    descending: bool = True
    fields: tuple[str, ...] = ()
    limit: int = 100
    after: tuple[Any, ...] | None = None  # the cursor: the last row's order key

    @property
    def order(self) -> tuple[str, ...]:
        """The sort column, then the rest of the key: a total order on the view's rows."""
        return (self.sort, *(k for k in self.view.view.key_names if k != self.sort))


def _typed(value: str, ftype: FieldType | None, name: str) -> Any:
    try:
        if ftype is FieldType.INTEGER:
            return int(value)
        if ftype is FieldType.NUMBER:
            return float(value)
        if ftype is FieldType.BOOLEAN:
            if value not in ("true", "false"):
                raise ValueError(value)
            return value == "true"
    except ValueError:
        raise BadRequest(f"parameter '{name}': '{value[:40]}' is not a {ftype.value if ftype else 'value'}") from None
    return value


def instant_ms(text: str, name: str, now_ms: int | None = None) -> int:
    """``2026-01-01T00:00:00Z``, ``1767225600000`` or ``1h`` (that long before now) in epoch ms."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if text.lstrip("-").isdigit() and len(text) <= 16:
        return int(text)
    try:
        return now_ms - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"parameter '{name}': '{text[:40]}' is not an instant (ISO-8601, epoch ms or a "
                         "duration such as 1h)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(text: str, length: int) -> tuple[Any, ...]:
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError):
        raise BadRequest("parameter 'cursor': not a cursor this server gave") from None
    if not isinstance(values, list) or len(values) != length or not all(
            isinstance(v, str | int | float | bool) for v in values):
        raise BadRequest("parameter 'cursor': not a cursor this server gave")
    return tuple(values)


def parse_query(view: ServedView, params: Sequence[tuple[str, str]], *, max_rows: int,
                hidden: frozenset[str] = frozenset()) -> ViewQuery:
    """The read a request asks for, or :class:`BadRequest` naming the first wrong parameter."""
    keys = [n for n, _ in view.view.keys]
    measures = [n for n, _ in view.view.measures if n not in hidden]
    visible = [*keys, *WINDOW_BOUNDS, *measures]
    filters: dict[str, list[Any]] = {}
    single: dict[str, str] = {}
    for name, value in params:
        if "\x00" in value or "\x00" in name:  # no store holds it: refused, never sent
            raise BadRequest(f"parameter '{name[:60].replace(chr(0), '?')}': holds a NUL character")
        if name in keys:
            filters.setdefault(name, []).append(_typed(value, view.column_type(name), name))
        elif name in RESERVED:
            if name in single:
                raise BadRequest(f"parameter '{name}' is given twice")
            single[name] = value
        else:
            raise BadRequest(f"unknown parameter '{name[:60]}': filter on {', '.join(keys)}, or use "
                             f"{', '.join(RESERVED)}")
    sort = single.get("sort", "-window_start")
    descending = sort.startswith("-")
    sort = sort.removeprefix("-")
    if sort not in view.view.key_names:
        raise BadRequest(f"parameter 'sort': '{sort[:40]}' is not a key column "
                         f"({', '.join(view.view.key_names)}, '-' first for descending)")
    fields = tuple(visible)
    if "fields" in single:
        fields = tuple(f for f in single["fields"].split(",") if f)
        wrong = [f for f in fields if f not in visible]
        if wrong or not fields:
            raise BadRequest(f"parameter 'fields': '{(wrong or [''])[0][:40]}' is not a column of {view.name} "
                             f"({', '.join(visible)})")
    try:
        limit = int(single.get("limit", "100"))
    except ValueError:
        raise BadRequest("parameter 'limit': not a whole number") from None
    if not 1 <= limit <= max_rows:
        raise BadRequest(f"parameter 'limit': between 1 and {max_rows}")
    query = ViewQuery(
        view=view, filters=filters, sort=sort, descending=descending, fields=fields, limit=limit,
        since_ms=instant_ms(single["since"], "since") if "since" in single else None,
        until_ms=instant_ms(single["until"], "until") if "until" in single else None)
    if "cursor" in single:
        query = ViewQuery(**{**query.__dict__, "after": _decode_cursor(single["cursor"], len(query.order))})
    return query


def ms_text(ms: int) -> str:
    """Epoch ms as the stores' window text (``2026-01-01 00:00:00.000``, UTC)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def sqlite_sql(query: ViewQuery, table: str) -> tuple[str, list[Any]]:
    """The query for the embedded store (window bounds are text there)."""

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    conditions: list[str] = []
    params: list[Any] = []
    for name, values in query.filters.items():
        conditions.append(f"{q(name)} IN ({', '.join('?' for _ in values)})")
        params += values
    if query.since_ms is not None:
        conditions.append('"window_start" >= ?')
        params.append(ms_text(query.since_ms))
    if query.until_ms is not None:
        conditions.append('"window_start" < ?')
        params.append(ms_text(query.until_ms))
    if query.after is not None:
        conditions.append(f"({', '.join(map(q, query.order))}) {'<' if query.descending else '>'} "
                          f"({', '.join('?' for _ in query.order)})")
        params += [str(v).replace("T", " ").removesuffix("Z") if n in WINDOW_BOUNDS else v
                   for n, v in zip(query.order, query.after, strict=True)]
    columns = list(dict.fromkeys((*query.fields, *query.order)))
    direction = " DESC" if query.descending else " ASC"
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    statement = (f"SELECT {', '.join(map(q, columns))} FROM {q(table)}{where} "
                 f"ORDER BY {', '.join(q(o) + direction for o in query.order)} LIMIT ?")
    params.append(query.limit + 1)
    return statement, params


def page(query: ViewQuery, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The response body: the rows (requested fields only, window bounds as ISO-8601 UTC) and the
    cursor of the next page (None on the last)."""
    if not rows:
        return {"view": query.view.name, "rows": [], "next_cursor": None}
    index = {name: i for i, name in enumerate(columns)}
    # per column, once per page: where it is in a row and how it becomes JSON (the hot path of a read)
    ranked = query.view.view.ranked
    shown = [(name, index[name], _converter(name, ranked)) for name in query.fields]
    keyed = [(index[name], _converter(name)) for name in query.order]
    out = [{name: convert(row[i]) for name, i, convert in shown} for row in rows[:query.limit]]
    more = len(rows) > query.limit and out
    last = tuple(convert(rows[query.limit - 1][i]) for i, convert in keyed) if more else None
    return {"view": query.view.name, "rows": out, "next_cursor": encode_cursor(last) if last else None}


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return str(value).replace(" ", "T") + "Z"


def _same(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):  # a kept sketch, as base64 text (as every store serves it)
        return base64.b64encode(bytes(value)).decode()
    return value


def _list(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _converter(name: str, ranked: Sequence[str] = ()) -> Any:
    """How a column's values are served (:func:`json_value`), chosen once per column."""
    if name in ranked:
        return _list
    if name in WINDOW_BOUNDS:
        return _iso
    if name == RECORDS_COLUMN:
        return int
    return _same


def json_value(name: str, value: Any, ranked: Sequence[str] = ()) -> Any:
    """One stored value as served: window bounds as ISO-8601 UTC, the record count as an integer,
    a ``top_k`` measure (``ranked``) as its list of ``{"value": v, "count": n}``."""
    return _converter(name, ranked)(value)


@dataclass(frozen=True)
class RelatedQuery:
    """The newest rows of ``view`` for each of several key tuples, in one read: how GraphQL loads
    a nested field for every parent row at once (no N+1).

    ``key_names`` are group keys of ``view``; ``keys`` the value tuples to read; each gets at most
    ``limit`` rows, newest window first.
    """

    view: ServedView
    key_names: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...]
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 10

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.view.view.columns if n != RECORDS_COLUMN)


def _bounds(since_ms: int | None, until_ms: int | None, as_value: Any) -> tuple[list[str], list[Any]]:
    conditions, params = [], []
    if since_ms is not None:
        conditions.append('"window_start" >= ')
        params.append(as_value(since_ms))
    if until_ms is not None:
        conditions.append('"window_start" < ')
        params.append(as_value(until_ms))
    return conditions, params


def related_sql(query: RelatedQuery, table: str, *, match: str, params: list[Any], mark: str,
                instant: Callable[[int], Any]) -> tuple[str, list[Any]]:
    """One statement for a :class:`RelatedQuery`: rows whose keys are in the list (``match``, with
    its ``params``: how the store's SQL dialect says it), ranked per key by window (newest first)
    and cut at ``limit``. ``mark`` is the dialect's parameter mark, ``instant`` how it takes an
    instant. Identifiers come from the view definition (validated lower_snake_case) and are
    quoted; every value is a parameter."""

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    keys = ", ".join(map(q, query.key_names))
    params = list(params)
    bounds, values = _bounds(query.since_ms, query.until_ms, instant)
    params += values
    where = " AND ".join([match, *(b + mark for b in bounds)])
    columns = ", ".join(map(q, query.fields))
    statement = (f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY {keys} "
                 f'ORDER BY "window_start" DESC, "window_end" DESC) AS _rank FROM {q(table)} WHERE {where}) ranked '
                 f'WHERE _rank <= {mark} ORDER BY {keys}, "window_start" DESC')
    params.append(query.limit)
    return statement, params


def related_sqlite_sql(query: RelatedQuery, table: str) -> tuple[str, list[Any]]:
    """:func:`related_sql` for the embedded store (SQLite): the key tuples as a VALUES list."""
    keys = ", ".join('"' + k.replace('"', '""') + '"' for k in query.key_names)
    one = "(" + ", ".join("?" for _ in query.key_names) + ")"
    return related_sql(query, table, match=f"({keys}) IN (VALUES {', '.join(one for _ in query.keys)})",
                       params=[v for key in query.keys for v in key], mark="?", instant=ms_text)


def group_related(query: RelatedQuery, columns: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows of a related read, by key tuple, as JSON values (every asked key present)."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {key: [] for key in query.keys}
    for row in rows:
        record = {name: json_value(name, value, query.view.view.ranked)
                  for name, value in zip(columns, row, strict=True)}
        out.setdefault(tuple(record[k] for k in query.key_names), []).append(record)
    return out
