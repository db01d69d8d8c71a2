"""The Redis store, one folder: its profile section (``connection.py``), its sink kind
(``sink.py``: hashes per key and window, written from Python) and how ``headrace serve`` reads its
views (``reader.py``)."""

from headrace.connectors.redis.connection import RedisConnection
from headrace.connectors.redis.sink import WRITE_SCRIPT, Redis, RowWriter, encode_part

__all__ = ["WRITE_SCRIPT", "Redis", "RedisConnection", "RowWriter", "encode_part"]
