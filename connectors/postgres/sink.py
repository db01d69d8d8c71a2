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
from typing import Any

from headrace.connectors.postgres.connection import PostgresConnection
from headrace.connectors.sqltext import ident, with_options
from headrace.schemas.errors import ServiceError
from headrace.schemas.kinds import PlanContext, Requirements, SinkKind, SinkNode, Stream
from headrace.schemas.options import Identifier, SinkOptions
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, WINDOW_BOUNDS, ViewDef

GUARD_FUNCTION = "headrace_keep_larger_window"
STAMP_FUNCTION = "headrace_stamp_change"
NOTIFY_FUNCTION = "headrace_notify_change"
#: the column holding the id of the transaction that last wrote a row: how ``headrace serve``
#: finds the rows changed since it last looked (connectors/serving/changes.py)
CHANGE_COLUMN = "_xid"

#: how each field type is stored
TYPES = {FieldType.STRING: "text", FieldType.INTEGER: "bigint", FieldType.NUMBER: "double precision",
         FieldType.BOOLEAN: "boolean", FieldType.BYTES: "bytea"}


#: ``text LIKE`` this: whether a string holds U+0000, for a value the source did not flag (a step
#: between changed it; the Python engine). Flink compiles a LIKE '%x%' with a literal into
#: ``BinaryStringData.contains``, a search of the UTF-8 bytes (U+0000 is the byte 0 in UTF-8 and no
#: other character contains that byte); ``POSITION(CHR(0) IN text)`` made a string per call. The
#: filter still reads the value, and Flink's generated code copies a string column a filter reads,
#: for every record.
HAS_NUL_PATTERN = "U&'%\\0000%'"


def unstorable(column_sql: str, ftype: FieldType, holds_nul: str | None = None) -> tuple[str, str] | None:
    """``(predicate, reason)`` for values of this type that PostgreSQL cannot store, or None.

    ``text`` refuses U+0000; Flink's BIGINT, DOUBLE and BOOLEAN map onto bigint, double precision
    (Infinity and NaN included) and boolean exactly, and window bounds are bounded by the
    event-time range, so NUL is the one value the view tables cannot hold. ``holds_nul``: the
    source's flag for this value, used instead of reading it.
    """
    if ftype is FieldType.STRING:
        return (holds_nul or f"({column_sql} LIKE {HAS_NUL_PATTERN})",
                "the value holds a NUL character (U+0000), which PostgreSQL text cannot store")
    return None


def create_sql(view: ViewDef) -> str:
    """PostgreSQL DDL (identifiers are validated lower_snake_case, and quoted anyway)."""
    cols = [f'"{n}" {TYPES[t]} NOT NULL' for n, t in view.keys]
    cols += [f'"{b}" timestamp(3) NOT NULL' for b in WINDOW_BOUNDS]
    cols += [f'"{n}" {TYPES[t]}' for n, t in view.measures]
    cols += [f'"{RECORDS_COLUMN}" bigint NOT NULL']
    pk = ", ".join(f'"{n}"' for n in view.key_names)
    return (f'CREATE TABLE IF NOT EXISTS "{view.name}" (\n  ' + ",\n  ".join(cols)
            + f",\n  PRIMARY KEY ({pk})\n)")


def guard_sql(view: ViewDef) -> list[str]:
    """The trigger that refuses to replace a row with one built from fewer records."""
    trigger = f"{view.name}_keep_larger"[:63]
    return [
        f"CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n  IF NEW.{RECORDS_COLUMN} < OLD.{RECORDS_COLUMN} THEN RETURN NULL; END IF;\n"
        "  RETURN NEW;\nEND $$",
        f'DROP TRIGGER IF EXISTS "{trigger}" ON "{view.name}"',
        f'CREATE TRIGGER "{trigger}" BEFORE UPDATE ON "{view.name}" FOR EACH ROW '
        f"EXECUTE FUNCTION {GUARD_FUNCTION}()",
    ]


def change_sql(view: ViewDef) -> list[str]:
    """Change stamps for live subscriptions: every inserted or updated row records its writing
    transaction (indexed), and each writing statement notifies ``headrace_changes`` with the table's
    name (PostgreSQL folds the same notice within one transaction into one)."""
    stamp, notify = f"{view.name}_stamp"[:63], f"{view.name}_notify"[:63]
    return [
        f'ALTER TABLE "{view.name}" ADD COLUMN IF NOT EXISTS "{CHANGE_COLUMN}" xid8',
        f'CREATE INDEX IF NOT EXISTS "{view.name[:55]}_changes" ON "{view.name}" ("{CHANGE_COLUMN}")',
        f"CREATE OR REPLACE FUNCTION {STAMP_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n  NEW.{CHANGE_COLUMN} := pg_current_xact_id();\n  RETURN NEW;\nEND $$",
        f"CREATE OR REPLACE FUNCTION {NOTIFY_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n  PERFORM pg_notify('headrace_changes', TG_TABLE_NAME);\n  RETURN NULL;\nEND $$",
        f'DROP TRIGGER IF EXISTS "{stamp}" ON "{view.name}"',
        # BEFORE triggers fire in name order: <table>_keep_larger drops a smaller recount first
        f'CREATE TRIGGER "{stamp}" BEFORE INSERT OR UPDATE ON "{view.name}" FOR EACH ROW '
        f"EXECUTE FUNCTION {STAMP_FUNCTION}()",
        f'DROP TRIGGER IF EXISTS "{notify}" ON "{view.name}"',
        f'CREATE TRIGGER "{notify}" AFTER INSERT OR UPDATE ON "{view.name}" FOR EACH STATEMENT '
        f"EXECUTE FUNCTION {NOTIFY_FUNCTION}()",
    ]


def jdbc_sink_ddl(table: str, view: ViewDef, *, url: str, user: str, password: str | None) -> str:
    options = {
        # Flink's jdbc sink, closing quietly after a failure (operators/java/.../SafeSinkFactory.java)
        "connector": "headrace-jdbc",
        "headrace.metric": "rows_upserted",
        "url": url,
        "table-name": view.name,
        "username": user,
        "sink.buffer-flush.max-rows": "5000",
        # a closed window's row is visible within ~20 ms of reaching the sink (the rows of one
        # window reach each sink subtask, so its slowest row waits for the later of their timers);
        # an idle tick costs nothing (an empty JDBC batch), a checkpoint flushes what a tick has not
        "sink.buffer-flush.interval": "20 ms",
        "sink.max-retries": "3",
    }
    # the connector wants username and password together; trust/peer auth ignores an empty one
    options["password"] = password or ""
    return f"CREATE TEMPORARY TABLE {ident(table)} (\n  {view.flink_columns()}\n) {with_options(options)}"


def ensure_table(conninfo: dict[str, object], view: ViewDef) -> None:
    """Create the view's table if absent; refuse one whose key columns differ."""
    import psycopg

    where = f"{conninfo.get('host')}:{conninfo.get('port')}/{conninfo.get('dbname')}"
    try:
        with psycopg.connect(**conninfo) as conn:  # type: ignore[arg-type]
            conn.execute(create_sql(view))  # type: ignore[arg-type]
            conn.execute(f'ALTER TABLE "{view.name}" ADD COLUMN IF NOT EXISTS "{RECORDS_COLUMN}" '  # type: ignore[arg-type]
                         "bigint NOT NULL DEFAULT 0")
            # one transaction: concurrent jobs creating the shared guard function wait for each other
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (GUARD_FUNCTION,))
            for statement in guard_sql(view) + change_sql(view):
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


# -- the sink kind ---------------------------------------------------------------------------

class PostgresOptions(SinkOptions):
    """An upsert into a PostgreSQL table (created if absent), keyed by group keys + window."""

    table: Identifier


@dataclass(kw_only=True)
class PostgresNode(SinkNode):
    """Delivery: effectively exactly-once for the table (idempotent upserts, flushed on every
    checkpoint and replayed from it after a failure; never replaced by a smaller recount)."""

    @property
    def table(self) -> str:
        return self.view.name

    def explain(self) -> str:
        return f"postgres table '{self.view.name}', upsert on ({', '.join(self.view.key_names)})"

    def unstorable(self, column_sql: str, ftype: FieldType, holds_nul: str | None = None) -> tuple[str, str] | None:
        return unstorable(column_sql, ftype, holds_nul)

    def table_ddl(self, profile: Profile) -> str:
        conn = profile.section(PostgresConnection)
        password = conn.password.get_secret_value() if conn.password else None
        return jdbc_sink_ddl(self.flink_table, self.view, url=conn.jdbc_url, user=conn.user, password=password)

    def prepare(self, profile: Profile) -> None:
        ensure_table(profile.section(PostgresConnection).conninfo(), self.view)

    def reachable(self, profile: Profile) -> str | None:
        import psycopg

        conn = profile.section(PostgresConnection)
        try:
            with psycopg.connect(**conn.conninfo(connect_timeout=3)) as db:
                db.execute("SELECT 1")
        except psycopg.Error:
            return f"PostgreSQL {conn.where} not answering"
        return None

    def stored_rows(self, profile: Profile) -> int | None:
        import psycopg

        try:
            with psycopg.connect(**profile.section(PostgresConnection).conninfo(connect_timeout=3)) as db:
                row = db.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                    psycopg.sql.Identifier(self.view.name))).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else 0


class Postgres(SinkKind):
    name = "postgres"
    options = PostgresOptions
    sections = (PostgresConnection,)

    def place(self, options: Any, upstream: Stream) -> str:
        return str(options.table)

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> PostgresNode:
        return PostgresNode(id=node_id, kind=self.name, uid=uid, view=self.named_view(upstream, options.table),
                            requirements=Requirements(jars=frozenset({"postgres"}), services=frozenset({"postgres"})))

    def reader(self, profile: Profile, timeout_ms: int) -> Any:
        from headrace.connectors.postgres.reader import PostgresViews

        connection = profile.find(PostgresConnection)
        return None if connection is None else PostgresViews(connection.reader_conninfo(), timeout_ms,
                                                             listen_conninfo=connection.conninfo())
