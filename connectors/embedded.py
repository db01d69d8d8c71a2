"""The embedded profile: topics are JSON-lines files, views are tables in one SQLite file.

With ``profiles.local.embedded.data_dir = .headrace/local`` the topic ``clicks`` is the file
``.headrace/local/clicks.jsonl``, the dead-letter topic ``clicks.dlq`` is
``.headrace/local/clicks.dlq.jsonl``, and the view ``page_activity_1m`` is a table in
``.headrace/local/views.sqlite``. No server is involved, so a new user can run a job at once.
Writes are upserts on the same keys as PostgreSQL, so re-running a job rewrites the same rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headrace.connectors.source import decoded_source_ddl
from headrace.connectors.sqltext import literal
from headrace.schemas.kinds import SourceDecoding
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, ViewDef

#: how each field type is stored (window bounds are ISO-8601 text)
SQLITE_TYPES = {FieldType.STRING: "TEXT", FieldType.INTEGER: "INTEGER", FieldType.NUMBER: "REAL",
                FieldType.BOOLEAN: "INTEGER", FieldType.BYTES: "TEXT"}  # bytes as base64, as served


def topic_file(data_dir: Path, topic: str, binary: bool = False) -> Path:
    """A topic's file: JSON lines, or for binary records (Avro, Protobuf, the Confluent wire
    format) one record per line in base64 (``<topic>.b64``)."""
    return data_dir / f"{topic}.{'b64' if binary else 'jsonl'}"


def file_source_ddl(table: str, *, path: Path, decoding: SourceDecoding, out_of_orderness_ms: int,
                    binary: bool = False) -> str:
    """A bounded table over one JSON-lines (or base64-lines) file, shaped like the Kafka source table
    (``headrace-source`` reading through Flink's filesystem connector; no partition, no offset).
    A base64 line is decoded to the record's bytes, which stay as they are (as the Kafka source's
    raw format keeps them)."""
    return decoded_source_ddl(table, delegate="filesystem", options={"path": str(path.resolve())},
                              decoding=decoding, out_of_orderness_ms=out_of_orderness_ms, base64=binary)


def client_sink_ddl(table: str, *, channel: str) -> str:
    """The table the embedded job's outputs go to: ``headrace-client`` hands its rows (``_kind``,
    ``_body``: the JSON of a view row, a dead letter or a late record) to the run in the same JVM
    (ClientSink.java), as Flink's collect sink would, but as a table, so the job compiles to a plan."""
    return (f"CREATE TEMPORARY TABLE `{table}` (`_kind` STRING, `_body` STRING) "
            f"WITH ('connector' = 'headrace-client', 'channel' = {literal(channel)})")


class EmbeddedStore:
    """Views in SQLite and output topics as JSON-lines files under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "views.sqlite")
        self._files: dict[str, Any] = {}

    def ensure_table(self, view: ViewDef) -> None:
        cols = [f'"{n}" {SQLITE_TYPES[t]} NOT NULL' for n, t in view.keys]
        cols += ['"window_start" TEXT NOT NULL', '"window_end" TEXT NOT NULL']
        cols += [f'"{n}" {SQLITE_TYPES[t]}' for n, t in view.measures]
        cols += [f'"{RECORDS_COLUMN}" INTEGER NOT NULL']
        pk = ", ".join(f'"{n}"' for n in view.key_names)
        self.db.execute(f'CREATE TABLE IF NOT EXISTS "{view.name}" ({", ".join(cols)}, PRIMARY KEY ({pk}))')

    def upsert(self, view: ViewDef, row: dict[str, Any]) -> None:
        # as in PostgreSQL: a row built from fewer records never replaces the stored one
        values = [n for n, _ in view.measures] + [RECORDS_COLUMN]
        names = list(view.key_names) + values
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in values)
        self.db.execute(
            f'INSERT INTO "{view.name}" ({", ".join(chr(34) + n + chr(34) for n in names)}) '
            f'VALUES ({", ".join("?" for _ in names)}) '
            f'ON CONFLICT ({", ".join(chr(34) + n + chr(34) for n in view.key_names)}) DO UPDATE SET {updates} '
            f'WHERE excluded."{RECORDS_COLUMN}" >= "{view.name}"."{RECORDS_COLUMN}"',
            [row.get(n) for n in names])

    def delete(self, view: ViewDef, row: dict[str, Any]) -> None:
        cond = " AND ".join(f'"{n}" = ?' for n in view.key_names)
        self.db.execute(f'DELETE FROM "{view.name}" WHERE {cond}', [row[n] for n in view.key_names])

    def append(self, topic: str, record: dict[str, Any]) -> None:
        handle = self._files.get(topic)
        if handle is None:
            handle = self._files[topic] = topic_file(self.data_dir, topic).open("a", encoding="utf-8")
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")

    def truncate_outputs(self, topics: list[str], views: list[ViewDef]) -> None:
        """Start a local run from a clean slate (local runs always read their input from the top)."""
        for topic in topics:
            topic_file(self.data_dir, topic).unlink(missing_ok=True)
        for view in views:
            self.db.execute(f'DROP TABLE IF EXISTS "{view.name}"')

    def rows(self, view_name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.db.execute(f'SELECT * FROM "{view_name}" ORDER BY window_start DESC, 1, 2')
        return [d[0] for d in cur.description], cur.fetchall()

    def records(self, topic: str) -> Iterator[dict[str, Any]]:
        path = topic_file(self.data_dir, topic)
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    yield json.loads(line)

    def close(self) -> None:
        self.db.commit()
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self.db.close()


