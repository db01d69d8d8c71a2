"""PostgreSQL sink: an idempotent upsert keyed by group keys + window start/end.

Flink's JDBC connector writes ``INSERT ... ON CONFLICT (keys) DO UPDATE`` for a table with a
primary key, buffering rows and flushing on every checkpoint. A replay after a failure rewrites
the same rows with the same values, so the table ends up as if every record were counted once
(effectively exactly-once for the materialized view). Headrace creates the table if absent,
with column types derived from the group keys and measures.

Every row also carries ``_records``, the number of records in its window, and a trigger keeps
the stored row whenever an update would replace it with one built from fewer records: a window
re-emitted while a restored job replays its input (or by any other restart path) passes through
smaller counts on its way back to the full one, and those never overwrite what was written.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.sqltext import ident, with_options
from jobs.errors import ServiceError
from schemas.types import FieldType

RECORDS_COLUMN = "_records"
"""How many records built a window's row; the guard against smaller recounts compares it."""
GUARD_FUNCTION = "headrace_keep_larger_window"


def unstorable(column_sql: str, ftype: FieldType) -> tuple[str, str] | None:
    """``(predicate, reason)`` for values of this type that PostgreSQL cannot store, or None.

    ``text`` refuses U+0000; Flink's BIGINT, DOUBLE and BOOLEAN map onto bigint, double precision
    (Infinity and NaN included) and boolean exactly, and window bounds are bounded by the
    event-time range, so NUL is the one value the view tables cannot hold.
    """
    if ftype is FieldType.STRING:
        return (f"POSITION(CHR(0) IN {column_sql}) > 0",
                "the value holds a NUL character (U+0000), which PostgreSQL text cannot store")
    return None


@dataclass(frozen=True)
class ViewTable:
    """Columns of one materialized view table: keys (group keys + window bounds) then measures."""

    name: str
    keys: tuple[tuple[str, FieldType], ...]
    measures: tuple[tuple[str, FieldType], ...]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.keys) + ("window_start", "window_end")

    def create_sql(self) -> str:
        """PostgreSQL DDL (identifiers are validated lower_snake_case, and quoted anyway)."""
        cols = [f'"{n}" {t.postgres} NOT NULL' for n, t in self.keys]
        cols += ['"window_start" timestamp(3) NOT NULL', '"window_end" timestamp(3) NOT NULL']
        cols += [f'"{n}" {t.postgres}' for n, t in self.measures]
        cols += [f'"{RECORDS_COLUMN}" bigint NOT NULL']
        pk = ", ".join(f'"{n}"' for n in self.key_names)
        return (f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n  ' + ",\n  ".join(cols)
                + f",\n  PRIMARY KEY ({pk})\n)")

    def guard_sql(self) -> list[str]:
        """The trigger that refuses to replace a row with one built from fewer records."""
        trigger = f"{self.name}_keep_larger"[:63]
        return [
            f"CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n  IF NEW.{RECORDS_COLUMN} < OLD.{RECORDS_COLUMN} THEN RETURN NULL; END IF;\n"
            "  RETURN NEW;\nEND $$",
            f'DROP TRIGGER IF EXISTS "{trigger}" ON "{self.name}"',
            f'CREATE TRIGGER "{trigger}" BEFORE UPDATE ON "{self.name}" FOR EACH ROW '
            f"EXECUTE FUNCTION {GUARD_FUNCTION}()",
        ]

    def flink_columns(self) -> str:
        cols = [f"{ident(n)} {t.flink_sql} NOT NULL" for n, t in self.keys]
        cols += ["`window_start` TIMESTAMP(3) NOT NULL", "`window_end` TIMESTAMP(3) NOT NULL"]
        cols += [f"{ident(n)} {t.flink_sql}" for n, t in self.measures]
        cols += [f"{ident(RECORDS_COLUMN)} BIGINT NOT NULL"]
        pk = ", ".join(ident(n) for n in self.key_names)
        return ",\n  ".join(cols) + f",\n  PRIMARY KEY ({pk}) NOT ENFORCED"


def jdbc_sink_ddl(table: str, view: ViewTable, *, url: str, user: str, password: str | None) -> str:
    options = {
        # Flink's jdbc sink, closing quietly after a failure (operators/jvm/.../SafeSinkFactory.java)
        "connector": "headrace-jdbc",
        "headrace.metric": "rows_upserted",
        "url": url,
        "table-name": view.name,
        "username": user,
        "sink.buffer-flush.max-rows": "5000",
        "sink.buffer-flush.interval": "1 s",
        "sink.max-retries": "3",
    }
    # the connector wants username and password together; trust/peer auth ignores an empty one
    options["password"] = password or ""
    return f"CREATE TEMPORARY TABLE {ident(table)} (\n  {view.flink_columns()}\n) {with_options(options)}"


def ensure_table(conninfo: dict[str, object], view: ViewTable) -> None:
    """Create the view's table if absent; refuse one whose key columns differ."""
    import psycopg

    where = f"{conninfo.get('host')}:{conninfo.get('port')}/{conninfo.get('dbname')}"
    try:
        with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
            conn.execute(view.create_sql())  # type: ignore[arg-type]
            conn.execute(f'ALTER TABLE "{view.name}" ADD COLUMN IF NOT EXISTS "{RECORDS_COLUMN}" '  # type: ignore[arg-type]
                         "bigint NOT NULL DEFAULT 0")
            # one transaction: concurrent jobs creating the shared guard function wait for each other
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (GUARD_FUNCTION,))
            for statement in view.guard_sql():
                conn.execute(statement)  # type: ignore[arg-type]
            rows = conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (f'"{view.name}"',)).fetchall()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(f"cannot reach PostgreSQL at {where}: {reason}",
                           hint="start the database or fix 'postgres' in the profile") from None
    except psycopg.Error as exc:
        raise ServiceError(f"PostgreSQL at {where} refused to create table '{view.name}': "
                           f"{str(exc).strip().splitlines()[0]}") from None
    have = {r[0] for r in rows}
    if have != set(view.key_names):
        raise ServiceError(f"table '{view.name}' exists with primary key ({', '.join(sorted(have))}), "
                           f"but this job upserts on ({', '.join(view.key_names)})",
                           hint="drop or rename the old table, or write to another table")
