"""The InfluxDB store, one folder: its profile section (``connection.py``), its sink kind
(``sink.py``: a point per key and window, written from Python) and how ``headrace serve`` reads
its views (``reader.py``: InfluxQL)."""

from headrace.connectors.influx.connection import InfluxConnection
from headrace.connectors.influx.sink import Influx, PointWriter, line

__all__ = ["Influx", "InfluxConnection", "PointWriter", "line"]
