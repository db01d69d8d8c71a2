"""Redis sink: the latest value of each key's windows as hashes, for fast lookups by key.

For a view ``page_activity`` grouped by ``(tenant_id, page)`` every window row becomes::

    page_activity:t1:/home:1767225600000      hash: measures, window_start, window_end, _records (TTL)
    page_activity:t1:/home:latest             hash: the same fields of the newest window of that key
    page_activity:top:events:1767225600000    sorted set (with ``top: events``): key → measure (TTL)

Key parts are the group-key values, with ``%`` and ``:`` percent-encoded so that a key is never
ambiguous, then the window start in epoch milliseconds (UTC). Writes are pipelined, one round
trip per batch of rows, through one Lua script per row that keeps the stored hash whenever the
new row was built from fewer records (as the PostgreSQL sink's trigger does) and moves ``latest``
only forward in time.

Delivery: effectively exactly-once for the hashes. Rows are written by a vectorized Python
function in the job's plan, whose batches Flink completes before every checkpoint; after a
failure the job replays from its checkpoint and rewrites the same keys with the same values.
A Redis that does not answer is retried with exponential backoff and jitter for up to
``retry_for`` (default 30 s); then the job fails with one line and restarts from its checkpoint.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from headrace.connectors.batchsink import PythonWriterNode, batch_udf, row_names, window_ms
from headrace.connectors.redis.connection import RedisConnection, driver
from headrace.connectors.retry import with_backoff
from headrace.schemas.durations import format_duration_ms
from headrace.schemas.errors import SpecError
from headrace.schemas.kinds import PlanContext, Requirements, SinkKind, Stream, Wiring
from headrace.schemas.options import Duration, Identifier, SinkOptions, SpecModel
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from headrace.schemas.views import RECORDS_COLUMN, ViewDef

# KEYS: window hash, latest hash, [top-N sorted set]
# ARGV: records, window start ms, ttl ms (0: none), member, score, n, field1, value1, ...
WRITE_SCRIPT = """
local stored = redis.call('HGET', KEYS[1], '_records')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local latest = redis.call('HGET', KEYS[2], 'window_start_ms')
if (not latest) or tonumber(latest) <= tonumber(ARGV[2]) then
  if latest and tonumber(latest) < tonumber(ARGV[2]) then redis.call('DEL', KEYS[2]) end
  redis.call('HSET', KEYS[2], unpack(ARGV, 7))
end
if #KEYS > 2 then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
end
return 1
"""


class TopN(SpecModel):
    measure: Identifier


class RedisOptions(SinkOptions):
    """Hashes per key and window under the prefix ``view`` (default: the aggregate step's id)."""

    view: Identifier | None = None
    ttl: Duration | None = None
    top: TopN | None = None
    retry_for: Duration = 30_000


def encode_part(value: Any, ftype: FieldType | None) -> str:
    """One key part: a group-key value, with ``%`` and ``:`` percent-encoded.

    >>> encode_part("a:b%c", FieldType.STRING), encode_part(True, FieldType.BOOLEAN), encode_part(7, FieldType.INTEGER)
    ('a%3Ab%25c', 'true', '7')
    """
    return _text(value, ftype).replace("%", "%25").replace(":", "%3A")


def _text(value: Any, ftype: FieldType | None) -> str:
    """A value as stored in a hash field ("" for null)."""
    if value is None or (isinstance(value, float) and value != value and ftype is not FieldType.NUMBER):
        return ""
    if isinstance(value, bytes | bytearray):  # a kept sketch: base64, as served
        return base64.b64encode(value).decode()
    if ftype is FieldType.BOOLEAN:
        return "true" if value else "false"
    if ftype is FieldType.INTEGER:
        return str(int(value))
    if ftype is FieldType.NUMBER:
        return repr(float(value))
    return str(value)


@dataclass(frozen=True)
class RowWriter:
    """Plain Python: writes batches of view rows to Redis (opened lazily, in the worker)."""

    view: ViewDef
    connection: RedisConnection
    ttl_ms: int
    top: str | None
    retry_for_ms: int

    def keys_of(self, row: dict[str, Any]) -> tuple[list[str], list[str]]:
        """``(KEYS, ARGV)`` of the write script for one row (window bounds as text)."""
        parts = [self.view.name, *(encode_part(row[n], t) for n, t in self.view.keys)]
        start = window_ms(row["window_start"])
        base = ":".join(parts)
        keys = [f"{base}:{start}", f"{base}:latest"]
        member, score = ":".join(parts[1:]), "0"
        if self.top is not None:
            keys.append(f"{self.view.name}:top:{self.top}:{start}")
            score = _text(row[self.top], FieldType.NUMBER) or "0"
        fields = ["window_start", row["window_start"], "window_end", row["window_end"],
                  "window_start_ms", str(start), "window_end_ms", str(window_ms(row["window_end"]))]
        fields += [x for n, t in self.view.keys for x in (n, _text(row[n], t))]
        fields += [x for n, t in self.view.measures for x in (n, _text(row[n], t))]
        fields += [RECORDS_COLUMN, str(int(row[RECORDS_COLUMN]))]
        return keys, [str(int(row[RECORDS_COLUMN])), str(start), str(self.ttl_ms), member, score, "0", *fields]

    def write(self, client: Any, script: Any, rows: list[dict[str, Any]]) -> None:
        """One pipelined round trip for all ``rows``; retried with backoff, then raises."""
        redis = driver()

        def attempt() -> None:
            pipe = client.pipeline(transaction=False)
            for row in rows:
                keys, args = self.keys_of(row)
                script(keys=keys, args=args, client=pipe)
            pipe.execute()

        with_backoff(attempt, retry_for_ms=self.retry_for_ms, what=f"Redis at {self.connection.host}:"
                     f"{self.connection.port}", transient=(redis.ConnectionError, redis.TimeoutError,
                                                            redis.BusyLoadingError))


def redis_udf(writer: RowWriter) -> Any:
    """The vectorized function writing each batch of rows (see connectors/batchsink.py)."""

    def open_client() -> Any:
        client = driver().Redis(**writer.connection.client_kwargs())
        return client, client.register_script(WRITE_SCRIPT)

    return batch_udf(row_names(writer.view), open_client, lambda c, rows: writer.write(c[0], c[1], rows),
                     lambda c: c[0].close())


@dataclass(kw_only=True)
class RedisNode(PythonWriterNode):
    ttl_ms: int
    top: str | None
    retry_for_ms: int

    connection, store = RedisConnection, "Redis"

    def explain(self) -> str:
        ttl = f", TTL {format_duration_ms(self.ttl_ms)}" if self.ttl_ms else ""
        top = f", top-N by {self.top}" if self.top else ""
        key = f"{self.view.name}:<{':'.join(n for n, _ in self.view.keys)}>"
        return f"redis hashes '{key}:<window start ms>' and '{key}:latest'{ttl}{top}"

    @property
    def ranks_by(self) -> str | None:
        return self.top

    def writer(self, profile: Profile) -> RowWriter:
        return RowWriter(self.view, profile.section(RedisConnection), self.ttl_ms, self.top, self.retry_for_ms)

    def register(self, t_env: Any, wiring: Wiring) -> None:
        if not wiring.embedded:
            t_env.create_temporary_function(self.function, redis_udf(self.writer(wiring.profile)))

    def reachable(self, profile: Profile) -> str | None:
        redis = driver()
        conn = profile.section(RedisConnection)
        try:
            with redis.Redis(**{**conn.client_kwargs(), "socket_timeout": 3, "socket_connect_timeout": 3}) as client:
                client.ping()
        except redis.RedisError:
            return f"Redis {conn.host}:{conn.port} not answering"
        return None

    def stored_rows(self, profile: Profile) -> int | None:
        redis = driver()
        conn = profile.section(RedisConnection)
        try:
            with redis.Redis(**{**conn.client_kwargs(), "socket_timeout": 3}) as client:
                return sum(1 for key in client.scan_iter(match=f"{self.view.name}:*", count=1000)
                           if not key.endswith(b":latest") and b":top:" not in key)
        except redis.RedisError:
            return None


class Redis(SinkKind):
    name = "redis"
    options = RedisOptions
    sections = (RedisConnection,)

    def place(self, options: Any, upstream: Stream) -> str:
        assert upstream.view is not None
        return str(options.view or upstream.view.name)

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> RedisNode:
        opts: RedisOptions = options
        view = self.named_view(upstream, self.place(opts, upstream))
        if opts.top is not None and opts.top.measure not in dict(view.measures):
            raise SpecError(f"top-N measure '{opts.top.measure}' is not a measure of the view",
                            where=ctx.where("top", "measure"),
                            hint=f"measures: {', '.join(n for n, _ in view.measures)}")
        if opts.top is not None and not dict(view.measures)[opts.top.measure].numeric:
            raise SpecError(f"top-N measure '{opts.top.measure}' is not a number", where=ctx.where("top", "measure"))
        return RedisNode(id=node_id, kind=self.name, uid=uid, view=view,
                         ttl_ms=opts.ttl or 0, top=opts.top.measure if opts.top else None,
                         retry_for_ms=opts.retry_for,
                         requirements=Requirements(services=frozenset({"redis"}), python=True))

    def reader(self, profile: Profile, timeout_ms: int) -> Any:
        from headrace.connectors.redis.reader import RedisViews

        connection = profile.find(RedisConnection)
        return None if connection is None else RedisViews(connection.client_kwargs(), timeout_ms)
