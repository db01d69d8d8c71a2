"""What a materialized view is, whatever store holds it: its keys (group keys, then the window
bounds), its measures with their types, and how many records built each row.

Every sink kind stores a :class:`ViewDef`; each store maps the types itself (PostgreSQL in
``connectors/postgres/sink.py``, SQLite in ``connectors/embedded.py``, …). The serving adapters read
the same definition, so a view is declared once: by the aggregate step of a job spec.

>>> view = ViewDef("per_minute", keys=(("page", FieldType.STRING),), measures=(("n", FieldType.INTEGER),))
>>> view.key_names
('page', 'window_start', 'window_end')
>>> [name for name, _ in view.columns]
['page', 'window_start', 'window_end', 'n', '_records']
"""

from __future__ import annotations

from dataclasses import dataclass

from headrace.schemas.types import FieldType

RECORDS_COLUMN = "_records"
"""How many records built a window's row; sinks keep the row built from more of them."""
WINDOW_BOUNDS = ("window_start", "window_end")
"""The window's bounds, epoch milliseconds in UTC (``TIMESTAMP(3)`` in Flink)."""


@dataclass(frozen=True)
class ViewDef:
    """One materialized view: ``name`` (the table, key prefix or measurement a sink writes),
    group keys, window bounds and measures."""

    name: str
    keys: tuple[tuple[str, FieldType], ...]
    measures: tuple[tuple[str, FieldType], ...]
    #: the measures that are estimates, each with its documented accuracy
    approximate: tuple[tuple[str, str], ...] = ()
    #: the measures stored as JSON text of ``[{"value": v, "count": n}, ...]`` (``top_k``), served as lists
    ranked: tuple[str, ...] = ()

    @property
    def key_names(self) -> tuple[str, ...]:
        """The upsert key: group keys, then the window bounds."""
        return tuple(n for n, _ in self.keys) + WINDOW_BOUNDS

    @property
    def columns(self) -> tuple[tuple[str, FieldType | None], ...]:
        """Every column in order; the window bounds have no field type (they are timestamps)."""
        bounds: tuple[tuple[str, FieldType | None], ...] = tuple((b, None) for b in WINDOW_BOUNDS)
        return (*self.keys, *bounds, *self.measures, (RECORDS_COLUMN, FieldType.INTEGER))

    def flink_columns(self) -> str:
        """The view as a Flink table schema, keyed for upserts."""
        cols = [f"`{n}` {t.flink_sql} NOT NULL" for n, t in self.keys]
        cols += [f"`{b}` TIMESTAMP(3) NOT NULL" for b in WINDOW_BOUNDS]
        cols += [f"`{n}` {t.flink_sql}" for n, t in self.measures]
        cols += [f"`{RECORDS_COLUMN}` BIGINT NOT NULL"]
        pk = ", ".join(f"`{n}`" for n in self.key_names)
        return ",\n  ".join(cols) + f",\n  PRIMARY KEY ({pk}) NOT ENFORCED"


@dataclass(frozen=True)
class ServedView:
    """A view as the serving adapters see it: its definition, the store holding it (``postgres``,
    ``redis``, ``influx``) and where it was declared. ``name`` is how analysts address it: the
    view's own name, or ``name@store`` when several stores hold a view of that name."""

    view: ViewDef
    store: str
    job: str
    step: str
    spec: str
    alias: str | None = None
    #: a measure the store also ranks keys by, per window (a Redis sink's ``top``)
    top: str | None = None

    @property
    def name(self) -> str:
        return self.alias or self.view.name

    def column_type(self, name: str) -> FieldType | None:
        """The field type of a key or measure (None for the window bounds and unknown names)."""
        return dict((*self.view.keys, *self.view.measures, (RECORDS_COLUMN, FieldType.INTEGER))).get(name)
