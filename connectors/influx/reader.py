"""How ``headrace serve`` reads InfluxDB views: InfluxQL on ``/query``."""

from __future__ import annotations

from typing import Any

from headrace.connectors.influx.sink import tag_text
from headrace.connectors.serving.query import RelatedQuery, ViewQuery, ms_text
from headrace.connectors.serving.stores import (
    StoreUnavailable,
    first_line,
    related_by_reads,
    sorted_page,
    typed_text,
)


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
            raise StoreUnavailable(f"{self.where} unavailable: {first_line(exc)}") from None
        if "error" in result:
            raise StoreUnavailable(f"{self.where} refused the read: {str(result['error'])[:200]}")
        return list(result.get("series", []))

    def read(self, query: ViewQuery) -> dict[str, Any]:
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
                missing = [k for k in (*keys, "time") if k not in record]
                if missing:
                    raise StoreUnavailable(f"{self.where} answered without '{missing[0]}' for view {view.name} "
                                           "(does it answer InfluxQL on /query?)")
                row = [typed_text(str(record[k]), types[k]) for k in keys]
                row += [ms_text(int(record["time"])), ms_text(int(record.get("window_end_ms") or record["time"]))]
                row += [record.get(m) for m in measures]
                rows.append(tuple(row))
        return sorted_page(query, columns, rows)

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
            return f"{self.where} unavailable: {first_line(exc)}"
        return None

    def close(self) -> None:
        pass
