"""How ``headrace serve`` reads Redis views: the hash of each key and window that the sink wrote."""

from __future__ import annotations

import urllib.parse
from typing import Any

from headrace.connectors.redis.sink import encode_part
from headrace.connectors.serving.query import RelatedQuery, ViewQuery
from headrace.connectors.serving.stores import (
    StoreUnavailable,
    first_line,
    related_by_reads,
    sorted_page,
    typed_text,
)
from headrace.schemas.views import ServedView


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
            raise StoreUnavailable(f"{self.where} unavailable: {first_line(exc)}") from None
        rows = []
        for values in hashes:
            if not values:
                continue  # expired between the scan and the read
            record = {k.decode(): v.decode() for k, v in values.items()}
            row = []
            for column in columns:
                text = record.get(column, "")
                ftype = types.get(column)
                row.append(text if ftype is None else typed_text(text, ftype))
            rows.append(tuple(row))
        return sorted_page(query, columns, rows)

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
            raise StoreUnavailable(f"{self.where} unavailable: {first_line(exc)}") from None
        out = []
        for member, score in ranked:
            parts = [urllib.parse.unquote(p) for p in member.decode().split(":")]
            if len(parts) != len(keys):
                continue
            key = {name: typed_text(text, ftype) for (name, ftype), text in zip(keys, parts, strict=True)}
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
            return f"{self.where} unavailable: {first_line(exc)}"
        return None

    def close(self) -> None:
        self.client.close()


def _glob(text: str) -> str:
    """``text`` matched literally by Redis's MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


