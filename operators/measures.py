"""Measures of a windowed aggregate: ``count()``, ``sum(x)``, ``avg(x)``, ``min(x)``, ``max(x)``,
``count_distinct(x)`` (exact), ``approx_count_distinct(x)`` (HyperLogLog: exact to 1,024 distinct
values, then a relative standard error of 0.81%), ``percentile(x, q)`` (DDSketch: within 1%,
relative, of the exact q-quantile), ``percentiles(x, [q, ...])`` (one percentile column per
quantile, ``<name>_p50`` …), ``first(x)`` / ``last(x)`` (the non-null value of the record
first or last by event time, ties broken by source partition and offset) and ``top_k(x, k)`` (the
k most frequent values with their counts, exact, as JSON text), and ``udaf(path, x, y, ...)``, a
user-defined aggregate (a Python function over pandas Series, or a Java ``AggregateFunction``:
``operators/udaf.py``). These keep a mergeable
state in the JVM (``operators/java/.../Sketches.java``, ``Picks.java``), so windows that take
late records merge them exactly as the others do.

A measure is parsed once from the spec into a :class:`Measure`, which knows its Flink SQL
expression, its result type and how to fold values in plain Python (the reference used by
tests and by the embedded runner's summaries).

>>> m = parse_measure("avg_ms", "avg(latency_ms)")
>>> m.function, m.field, m.sql()
('avg', 'latency_ms', 'AVG(CAST(`latency_ms` AS DOUBLE))')
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from headrace.schemas.types import FieldType

FUNCTIONS = ("count", "sum", "avg", "min", "max", "count_distinct", "approx_count_distinct", "percentile",
             "percentiles", "first", "last", "top_k", "udaf")
#: the sketch each sketch-kept measure merges (Sketches.java, Picks.java)
SKETCHES = {"count_distinct": "distinct", "approx_count_distinct": "hll", "percentile": "dd", "first": "first",
            "last": "last", "top_k": "topk", "udaf": "rows"}
#: the JVM functions the sketch measures call (registered by the aggregate step)
SKETCH_FUNCTIONS = {"hr_sketch": "SketchAgg", "hr_sketch_of": "SketchOf", "hr_sketch_count": "SketchRead$Count",
                    "hr_sketch_quantile": "SketchRead$Quantile", "hr_sketch_pick": "SketchRead$Pick",
                    "hr_sketch_top": "SketchRead$Top"}
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)?\s*"
                   r"(?:,\s*([0-9]*\.?[0-9]+)\s*)?\)\s*$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_PERCENTILES = re.compile(r"^\s*percentiles\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*\[([^\]]*)\]\s*\)\s*$", re.I)
_UDAF = re.compile(r"^\s*udaf\s*\(\s*([A-Za-z_][A-Za-z0-9_.$]*)\s*((?:,\s*[A-Za-z_][A-Za-z0-9_]*\s*)+)\)\s*$",
                   re.I)
#: the columns of a record's place, by which first() and last() break ties of event time
ORDER_COLUMNS = "`_event_ms`, `_partition`, `_offset`"


@dataclass(frozen=True)
class Measure:
    """One named aggregate column of a window's output."""

    name: str
    function: str
    field: str | None
    #: percentile's q, top_k's k
    arg: float | None = None
    #: the SQL type first() and last() cast their value back to (the field's)
    sql_type: str | None = None
    #: udaf(): the fields it takes, its dotted path or class name, and once resolved
    #: (``operators/udaf.py``) the SQL that finishes a window's rows into its value ("{rows}")
    fields: tuple[str, ...] = ()
    path: str | None = None
    finish_sql: str | None = None
    result: FieldType | None = None

    @property
    def text(self) -> str:
        """The measure as written in a spec: ``percentile(latency_ms, 0.95)``, ``count()``."""
        if self.function == "udaf":
            return f"udaf({', '.join((self.path or '', *self.fields))})"
        arg = {"percentile": f", {self.arg!r}", "top_k": f", {int(self.arg or 0)}"}.get(self.function, "")
        return f"{self.function}({self.field or ''}{arg})"

    @property
    def accuracy(self) -> str | None:
        """The documented accuracy of an estimated measure (None for exact ones)."""
        if self.function == "approx_count_distinct":
            return "HyperLogLog: exact to 1,024 distinct values, then 0.81% relative standard error"
        if self.function == "percentile":
            return "DDSketch: within 1% (relative) of the exact quantile"
        return None

    @property
    def sketch(self) -> str | None:
        """The sketch kind it is kept in, for the measures that are not merged as numbers."""
        return SKETCHES.get(self.function)

    def _sketch_input(self) -> str:
        """The value a sketch takes: a percentile's as DOUBLE, a distinct count's as it is, a first
        or last value's with the record's event time, partition and offset."""
        if self.function in ("first", "last"):
            return f"`{self.field}`, {ORDER_COLUMNS}"
        if self.function == "udaf":  # the record's values, one JSON array each
            return f"JSON_ARRAY({', '.join(f'`{f}`' for f in self.fields)} NULL ON NULL)"
        return f"CAST(`{self.field}` AS DOUBLE)" if self.function == "percentile" else f"`{self.field}`"

    def _sketch_of(self) -> str:
        return f"hr_sketch('{self.sketch}', {self._sketch_input()})"

    def _bare(self) -> str:
        """Whether top_k writes its values as JSON numbers or booleans (SQL literal)."""
        return "TRUE" if self.sql_type in ("BIGINT", "DOUBLE", "BOOLEAN") else "FALSE"

    def read(self, sketch_sql: str) -> str:
        """The measure read from its sketch (SQL)."""
        if self.function == "udaf":
            assert self.finish_sql is not None, "udaf() not resolved"
            return self.finish_sql.replace("{rows}", sketch_sql)
        if self.function == "percentile":
            return f"hr_sketch_quantile({sketch_sql}, CAST({self.arg!r} AS DOUBLE))"
        if self.function in ("first", "last"):
            return f"CAST(hr_sketch_pick({sketch_sql}) AS {self.sql_type or 'STRING'})"
        if self.function == "top_k":
            return f"hr_sketch_top({sketch_sql}, {int(self.arg or 0)}, {self._bare()})"
        return f"hr_sketch_count('{self.sketch}', {sketch_sql})"

    def sql(self) -> str:
        """The Flink SQL aggregate call (AVG over DOUBLE so integer averages keep decimals)."""
        if self.function == "count_distinct":
            return f"COUNT(DISTINCT `{self.field}`)"
        if self.sketch:
            return self.read(self._sketch_of())
        if self.function == "count":
            return "COUNT(*)" if self.field is None else f"COUNT(`{self.field}`)"
        if self.function == "avg":
            return f"AVG(CAST(`{self.field}` AS DOUBLE))"
        return f"{self.function.upper()}(`{self.field}`)"

    def partials(self) -> list[tuple[str, str]]:
        """``(column, aggregate SQL)`` of the parts it is merged from (two-phase windows whose
        late records are merged in afterwards: see ``operators/aggregate.py``)."""
        p = f"_p_{self.name}"
        if self.function == "avg":
            return [(f"{p}_sum", f"SUM(CAST(`{self.field}` AS DOUBLE))"), (f"{p}_count", f"COUNT(`{self.field}`)")]
        if self.sketch:
            return [(p, self._sketch_of())]
        return [(p, self.sql())]

    def unit_partials(self) -> list[tuple[str, str]]:
        """The same parts for one record (SQL over its fields), to be merged like :meth:`partials`."""
        p, f = f"_p_{self.name}", f"`{self.field}`"
        if self.sketch:
            return [(p, f"hr_sketch_of('{self.sketch}', {self._sketch_input()})")]
        if self.function == "count":
            return [(p, "CAST(1 AS BIGINT)" if self.field is None else f"CAST(CASE WHEN {f} IS NULL THEN 0 ELSE 1 END "
                                                                       "AS BIGINT)")]
        if self.function == "avg":
            return [(f"{p}_sum", f"CAST({f} AS DOUBLE)"), (f"{p}_count",
                                                          f"CAST(CASE WHEN {f} IS NULL THEN 0 ELSE 1 END AS BIGINT)")]
        return [(p, f)]

    def parts(self, result: FieldType) -> list[tuple[str, str, str]]:
        """``(column, how two values merge: sum, min, max or a sketch kind, SQL type)`` of
        :meth:`partials`, given the measure's own type."""
        p = f"_p_{self.name}"
        if self.function == "avg":
            return [(f"{p}_sum", "sum", FieldType.NUMBER.flink_sql), (f"{p}_count", "sum", FieldType.INTEGER.flink_sql)]
        if self.sketch:
            return [(p, self.sketch, "BYTES")]
        return [(p, "sum" if self.function in ("count", "sum") else self.function, result.flink_sql)]

    def merged(self, result: FieldType, first: int) -> list[Any]:
        """How MergeWindows.java reads the measure from its merged parts, the first at ``first``."""
        if self.function == "percentile":
            return [self.name, result.flink_sql, "quantile", first, self.arg]
        if self.function in ("first", "last"):
            return [self.name, result.flink_sql, "pick", first]
        if self.function == "top_k":
            return [self.name, result.flink_sql, "top", first, int(self.arg or 0), self._bare() == "TRUE"]
        if self.function == "udaf":  # the rows, finished by the windows' view (:meth:`finish`)
            return [self.name, "BYTES", "part", first]
        if self.sketch:
            return [self.name, result.flink_sql, "count", first, self.sketch]
        if self.function == "avg":
            return [self.name, result.flink_sql, "div", first, first + 1]
        return [self.name, result.flink_sql, "part", first]

    def finish(self, column: str) -> str:
        """The measure from the column MergeWindows.java writes for it (SQL)."""
        return self.read(column) if self.function == "udaf" else column

    def result_type(self, field_type: FieldType | None) -> FieldType:
        """Type of the measure's column, given the type of its input field."""
        if self.function == "udaf":
            assert self.result is not None, "udaf() not resolved"
            return self.result
        if self.function in ("count", "count_distinct", "approx_count_distinct"):
            return FieldType.INTEGER
        if self.function in ("avg", "percentile"):
            return FieldType.NUMBER
        if self.function == "top_k":
            return FieldType.STRING  # JSON: [{"value": v, "count": n}, ...]
        assert field_type is not None
        return field_type

    def fold(self, values: Iterable[object]) -> object:
        """The measure over ``values`` in plain Python (None for an empty or all-null input)."""
        if self.function == "udaf":
            raise ValueError("udaf() is folded by its own function (operators/udaf.py)")
        items = [v for v in values if v is not None] if self.field else list(values)
        if self.function == "count":
            return len(items)
        if self.function in ("count_distinct", "approx_count_distinct"):
            return len(set(items))
        if self.function == "top_k":  # the k most frequent, ties by value (UTF-8 bytes), as the JSON
            counts = Counter(_text(v) for v in items)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:int(self.arg or 0)]
            bare = self.sql_type in ("BIGINT", "DOUBLE", "BOOLEAN")
            return [{"value": json.loads(v) if bare else v, "count": n} for v, n in ranked] or None
        if self.function in ("first", "last"):  # ``values`` in event time, partition, offset order
            return (items[0] if self.function == "first" else items[-1]) if items else None
        if self.function == "percentile":
            if not items:
                return None
            ordered = sorted(float(v) for v in items)  # type: ignore[arg-type]
            return ordered[int((self.arg or 0.0) * (len(ordered) - 1))]
        if not items:
            return None
        if self.function == "sum":
            return sum(items)  # type: ignore[arg-type]
        if self.function == "avg":
            return sum(float(v) for v in items) / len(items)  # type: ignore[arg-type,misc]
        if self.function == "min":
            return min(items)  # type: ignore[type-var]
        return max(items)  # type: ignore[type-var]


def _text(value: object) -> str:
    """A value as the JVM writes it in a sketch (Sketches.text): booleans lower case."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def quantile_label(q: float) -> str:
    """The column suffix of a quantile: 0.5 → p50, 0.95 → p95, 0.999 → p99_9.

    >>> [quantile_label(q) for q in (0.5, 0.95, 0.99, 0.999, 1.0)]
    ['p50', 'p95', 'p99', 'p99_9', 'p100']
    """
    return "p" + f"{q * 100:.6f}".rstrip("0").rstrip(".").replace(".", "_")


def parse_measures(name: str, expression: object) -> list[Measure]:
    """The measures one spec entry stands for: ``percentiles(f, [0.5, 0.95, 0.99])`` is one
    percentile column per quantile (``<name>_p50``, ``<name>_p95``, ``<name>_p99``); any other
    expression is one measure (:func:`parse_measure`)."""
    match = _PERCENTILES.match(expression) if isinstance(expression, str) else None
    if match is None:
        if isinstance(expression, str) and expression.strip().lower().startswith("percentiles"):
            raise ValueError(f"percentiles() takes a field and a list of quantiles between 0 and 1, e.g. "
                             f"'percentiles(latency_ms, [0.5, 0.95, 0.99])', not '{expression}'")
        return [parse_measure(name, expression)]
    field, listed = match.group(1), match.group(2)
    try:
        quantiles = [float(q) for q in listed.split(",") if q.strip()]
    except ValueError:
        quantiles = []
    if not quantiles or not all(0.0 <= q <= 1.0 for q in quantiles) or len(set(quantiles)) != len(quantiles):
        raise ValueError(f"percentiles() takes a list of different quantiles between 0 and 1, e.g. "
                         f"'percentiles({field}, [0.5, 0.95, 0.99])'")
    return [parse_measure(f"{name}_{quantile_label(q)}", f"percentile({field}, {q!r})") for q in quantiles]


def parse_measure(name: str, expression: object) -> Measure:
    """Parse ``expression`` (e.g. ``"sum(bytes)"``); raises ValueError with a hint."""
    if not _NAME.match(name):
        raise ValueError(f"measure name '{name}' must be lower_snake_case (it becomes a column)")
    if not isinstance(expression, str):
        raise ValueError(f"expected a measure such as 'count()' or 'avg(latency_ms)', got {expression!r}")
    udaf = _UDAF.match(expression)
    if udaf is not None:
        fields = tuple(f.strip() for f in udaf.group(2).split(",") if f.strip())
        if len(set(fields)) != len(fields):
            raise ValueError(f"udaf() names a field twice in '{expression}'")
        return Measure(name=name, function="udaf", field=fields[0], fields=fields, path=udaf.group(1))
    match = _CALL.match(expression)
    if not match and re.match(r"^\s*[A-Za-z_]\w*\s*\([^)]*$", expression):
        raise ValueError(f"'{expression}' is cut at a comma: in a {{...}} mapping a comma ends the value; write "
                         "the measures one per line, or quote this one ('percentile(latency_ms, 0.95)')")
    if not match:
        raise ValueError(f"'{expression}' is not a measure; write e.g. 'count()' or 'sum(bytes)'")
    function, field, arg = match.group(1).lower(), match.group(2), match.group(3)
    if function == "udaf":
        raise ValueError(f"udaf() takes a function's dotted path (or a Java class name) and its fields, e.g. "
                         f"'udaf(mypkg.aggs.weighted_score, latency_ms, bytes)', not '{expression}'")
    if function not in FUNCTIONS:
        close = difflib.get_close_matches(function, FUNCTIONS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(FUNCTIONS)}"
        raise ValueError(f"unknown measure function '{function}'; {hint}")
    if function == "percentiles":
        raise ValueError(f"percentiles() takes a field and a list of quantiles, e.g. "
                         f"'percentiles({field or 'latency_ms'}, [0.5, 0.95, 0.99])'")
    if function != "count" and field is None:
        raise ValueError(f"{function}() needs a field, e.g. '{function}(latency_ms)'")
    if function == "percentile":
        if arg is None or not 0.0 <= float(arg) <= 1.0:
            raise ValueError(f"percentile() takes a field and a quantile between 0 and 1, e.g. "
                             f"'percentile({field}, 0.95)'")
        return Measure(name=name, function=function, field=field, arg=float(arg))
    if function == "top_k":
        if arg is None or not arg.isdigit() or not 1 <= int(arg) <= 1000:
            raise ValueError(f"top_k() takes a field and how many values (1 to 1000), e.g. 'top_k({field}, 10)'")
        return Measure(name=name, function=function, field=field, arg=float(arg))
    if arg is not None:
        raise ValueError(f"{function}() takes one field, not '{expression}'")
    return Measure(name=name, function=function, field=field)
