"""InfluxDB sink: one point per key and window, in line protocol (and the window end, for reads).

For a view grouped by ``(tenant_id, page)`` with measures ``events`` and ``avg_ms``::

    page_activity,tenant_id=t1,page=/home events=12i,avg_ms=38.5,_records=12i,window_end_ms=1767225660000i 1767225600000

Tags are the group keys, fields the measures (and ``_records``, and the window's end for the
serving adapters), the timestamp the window start
in milliseconds (UTC). InfluxDB keys a point by measurement, tag set and timestamp, so writing a
window again replaces its fields: a replay after a failure rewrites the same points. Rows are
written in batches by a vectorized Python function in the job's plan (one HTTP request per
batch), completed before every checkpoint: effectively exactly-once for the stored points.

Two APIs (``mode`` in the profile's ``influx:`` section):

- ``v2`` (default): ``/api/v2/write`` through ``influxdb-client``, with an org, a bucket and a token
  (InfluxDB 2.x and 3.x, 1.8+ with its v2 compatibility; VictoriaMetrics accepts it too);
- ``v1``: ``/write?db=`` for InfluxDB 1.x, with an optional user and password.

A server that does not answer is retried with exponential backoff and jitter for up to
``retry_for`` (default 30 s); then the job fails with one line and restarts from its checkpoint.
Values line protocol cannot carry (an empty group key, a line break in one, an event time outside
InfluxDB's 1677–2262 range) are dead letters at the sink boundary, with this sink as the step.
"""

from __future__ import annotations

import base64
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from headrace.connectors.batchsink import PythonWriterNode, batch_udf, row_names, window_ms
from headrace.connectors.influx.connection import InfluxConnection
from headrace.connectors.retry import with_backoff
from headrace.schemas.errors import ServiceError
from headrace.schemas.kinds import PlanContext, Requirements, SinkKind, Stream, Wiring
from headrace.schemas.options import Duration, Identifier, SinkOptions
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, ViewDef

#: InfluxDB stores nanoseconds in an int64: 1677-09-21 .. 2262-04-11 (a little inside, in ms)
TIME_RANGE_MS = (-9_000_000_000_000, 9_000_000_000_000)


class InfluxOptions(SinkOptions):
    """Points of the measurement ``measurement`` (default: the aggregate step's id)."""

    measurement: Identifier | None = None
    retry_for: Duration = 30_000


def _escape_tag(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_value(value: Any, ftype: FieldType | None) -> str | None:
    """A field in line protocol, or None for a null (an absent field)."""
    if value is None or (isinstance(value, float) and math.isnan(value) and ftype is not FieldType.NUMBER):
        return None
    if ftype is FieldType.INTEGER:
        return f"{int(value)}i"
    if ftype is FieldType.NUMBER:
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    if ftype is FieldType.BOOLEAN:
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray):  # a kept sketch: base64 text, as served
        value = base64.b64encode(value).decode()
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(view: ViewDef, measurement: str, row: dict[str, Any]) -> str:
    """One row as a line of line protocol (window bounds as text, UTC).

    >>> from headrace.schemas.views import ViewDef
    >>> v = ViewDef("v", keys=(("page", FieldType.STRING),), measures=(("n", FieldType.INTEGER),))
    >>> line(v, "v", {"page": "/a b", "window_start": "1970-01-01 00:01:00.000",
    ...               "window_end": "1970-01-01 00:02:00.000", "n": 3, "_records": 3})
    'v,page=/a\\\\ b n=3i,_records=3i,window_end_ms=120000i 60000'
    """
    tags = "".join(f",{name}={_escape_tag(tag_text(row[name], ftype))}" for name, ftype in view.keys)
    fields = [(name, _field_value(row[name], ftype)) for name, ftype in view.measures]
    fields.append((RECORDS_COLUMN, f"{int(row[RECORDS_COLUMN])}i"))
    fields.append(("window_end_ms", f"{window_ms(row['window_end'])}i"))  # served back as window_end
    body = ",".join(f"{name}={value}" for name, value in fields if value is not None)
    return f"{_escape_tag(measurement)}{tags} {body} {window_ms(row['window_start'])}"


def tag_text(value: Any, ftype: FieldType) -> str:
    if ftype is FieldType.BOOLEAN:
        return "true" if value else "false"
    if ftype is FieldType.INTEGER:
        return str(int(value))
    if ftype is FieldType.NUMBER:
        return repr(float(value))
    return str(value)


@dataclass(frozen=True)
class PointWriter:
    """Plain Python: writes batches of view rows as points (a client opened lazily, in the worker)."""

    view: ViewDef
    measurement: str
    connection: InfluxConnection
    retry_for_ms: int

    def body(self, rows: list[dict[str, Any]]) -> bytes:
        return "\n".join(line(self.view, self.measurement, row) for row in rows).encode()

    def write(self, rows: list[dict[str, Any]], client: Any = None) -> None:
        data = self.body(rows)
        conn = self.connection
        if conn.mode == "v2":
            from influxdb_client.client.write_api import SYNCHRONOUS
            from influxdb_client.rest import ApiException
            from urllib3.exceptions import HTTPError as Urllib3Error

            api = client.write_api(write_options=SYNCHRONOUS)

            def attempt() -> None:
                try:
                    api.write(bucket=conn.bucket, org=conn.org or "", record=data, write_precision="ms")
                except ApiException as exc:
                    if exc.status and exc.status < 500:  # refused, not unavailable: no use retrying
                        raise ServiceError(f"InfluxDB at {conn.url} refused the points: {exc.status} "
                                           f"{(exc.body or '')[:200]}") from None
                    raise ConnectionError(f"HTTP {exc.status}") from None

            with_backoff(attempt, retry_for_ms=self.retry_for_ms, what=f"InfluxDB at {conn.url}",
                         transient=(ConnectionError, OSError, Urllib3Error))
            return

        query = {"db": conn.database or "", "precision": "ms"}
        request = urllib.request.Request(f"{conn.url.rstrip('/')}/write?{urllib.parse.urlencode(query)}",
                                         data=data, method="POST")
        if conn.username:
            secret = conn.password.get_secret_value() if conn.password else ""
            request.add_header("Authorization", "Basic " + base64.b64encode(
                f"{conn.username}:{secret}".encode()).decode())

        def post() -> None:
            try:
                with urllib.request.urlopen(request, timeout=conn.timeout / 1000) as answer:
                    answer.read()
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise ServiceError(f"InfluxDB at {conn.url} refused the points: {exc.code} "
                                       f"{exc.read()[:200].decode(errors='replace')}") from None
                raise ConnectionError(f"HTTP {exc.code}") from None

        with_backoff(post, retry_for_ms=self.retry_for_ms, what=f"InfluxDB at {conn.url}",
                     transient=(ConnectionError, OSError, urllib.error.URLError))


def influx_udf(writer: PointWriter) -> Any:
    """The vectorized function writing each batch of rows (see connectors/batchsink.py)."""

    def open_client() -> Any:
        conn = writer.connection
        if conn.mode != "v2":
            return None
        from influxdb_client import InfluxDBClient

        token = conn.token.get_secret_value() if conn.token else ""
        return InfluxDBClient(url=conn.url, token=token, org=conn.org or "", timeout=conn.timeout)

    return batch_udf(row_names(writer.view), open_client, lambda client, rows: writer.write(rows, client),
                     lambda client: client.close() if client is not None else None)


@dataclass(kw_only=True)
class InfluxNode(PythonWriterNode):
    measurement: str
    retry_for_ms: int
    connection, store = InfluxConnection, "InfluxDB"

    def explain(self) -> str:
        tags = ", ".join(n for n, _ in self.view.keys)
        return f"influx measurement '{self.measurement}', tags ({tags}), time = window start"

    def unstorable(self, column_sql: str, ftype: FieldType, holds_nul: str | None = None) -> tuple[str, str] | None:
        if ftype is FieldType.STRING and column_sql.strip("`") in dict(self.view.keys):
            return (f"({column_sql} = '' OR POSITION(CHR(10) IN {column_sql}) > 0 "
                    f"OR POSITION(CHR(13) IN {column_sql}) > 0)",
                    "the value is empty or holds a line break, which an InfluxDB tag cannot carry")
        return None

    def unstorable_time(self, ms_sql: str) -> tuple[str, str] | None:
        low, high = TIME_RANGE_MS
        return (f"({ms_sql} < {low} OR {ms_sql} > {high})",
                "the event time is outside what InfluxDB can store (1677-09-21 .. 2262-04-11)")

    def register(self, t_env: Any, wiring: Wiring) -> None:
        if not wiring.embedded:
            writer = PointWriter(self.view, self.measurement, wiring.profile.section(InfluxConnection),
                                 self.retry_for_ms)
            t_env.create_temporary_function(self.function, influx_udf(writer))

    def prepare(self, profile: Profile) -> None:
        conn = profile.section(InfluxConnection)
        if conn.mode == "v2":
            try:
                import influxdb_client  # noqa: F401
            except ImportError:
                raise ServiceError("the influx sink (mode v2) needs influxdb-client",
                                   hint="pip install 'headrace[influx]'") from None
        super().prepare(profile)

    def reachable(self, profile: Profile) -> str | None:
        conn = profile.section(InfluxConnection)
        try:
            with urllib.request.urlopen(f"{conn.url.rstrip('/')}/ping", timeout=3) as answer:
                answer.read()
        except urllib.error.HTTPError:
            return None  # it answers
        except (OSError, urllib.error.URLError):
            return f"InfluxDB {conn.url} not answering"
        return None


class Influx(SinkKind):
    name = "influx"
    options = InfluxOptions
    sections = (InfluxConnection,)

    def place(self, options: Any, upstream: Stream) -> str:
        assert upstream.view is not None
        return str(options.measurement or upstream.view.name)

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> InfluxNode:
        opts: InfluxOptions = options
        measurement = self.place(opts, upstream)
        return InfluxNode(id=node_id, kind=self.name, uid=uid, view=self.named_view(upstream, measurement),
                          measurement=measurement, retry_for_ms=opts.retry_for,
                          requirements=Requirements(services=frozenset({"influx"}), python=True))

    def reader(self, profile: Profile, timeout_ms: int) -> Any:
        from headrace.connectors.influx.reader import InfluxViews

        conn = profile.find(InfluxConnection)
        return None if conn is None else InfluxViews(conn.url, conn.database or conn.bucket or "", conn.auth_header(),
                                                     timeout_ms)
