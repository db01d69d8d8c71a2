"""The PostgreSQL store, one folder: its profile section (``connection.py``), its sink kind
(``sink.py``: upserts through Flink's JDBC connector) and how ``headrace serve`` reads its views
(``reader.py``: pages, related rows, live changes)."""

from headrace.connectors.postgres.connection import PostgresConnection
from headrace.connectors.postgres.sink import Postgres, create_sql, ensure_table

__all__ = ["Postgres", "PostgresConnection", "create_sql", "ensure_table"]
