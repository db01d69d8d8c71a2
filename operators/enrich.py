"""``enrich``: add fields looked up by a key field, from PostgreSQL, Redis or a file, cached in levels.

::

    - enrich:
        key: user_id
        fields: {country: string, plan: string}     # the looked-up fields and their types
        source:
          postgres: {table: users, key_column: id}  # or {query: "... WHERE id = ANY(%(keys)s)"}
          # redis: {prefix: "user:"}                # a hash per key
          # file: {path: data/users.csv, key_column: id}   # CSV with a header, or JSON lines
        cache:
          l1: {size: 100000, ttl: 10m, miss_ttl: 1m, persist: .headrace/cache/users}
          l2: {prefix: "enrich:users:", ttl: 1h}    # Redis in front of PostgreSQL (optional)
        on_miss: keep                               # keep (fields null) | drop | dead_letter
        engine: auto                                # auto | jvm | python

With ``on_miss: drop`` or ``dead_letter`` a key counts as found only when its row has a value for
every looked-up field; those fields are then never null downstream (so they can be group keys).

Two engines answer the lookups, with the same levels and the same results:

- **jvm** (``engine: jvm``, for PostgreSQL and Redis sources): L1 is shared by the step's
  subtasks in one JVM; the keys it lacks go to one batcher thread that asks L2 (Redis, one
  pipelined call per batch) and then L3 (one ``= ANY(?)`` query per batch). When the key is a
  top-level field of the Kafka records' JSON that no step before changes, the Kafka consumer reads
  each fetched batch's keys ahead (``EnrichPrefetch.java``) so the batcher fetches them while the
  task works through the batch before, and a plain scalar function (``EnrichGet.java``) answers
  each record from L1 on the task thread. Otherwise an asynchronous Flink function
  (``EnrichLookup.java``) lets a record wait for its batch while the task goes on with the next
  records (Flink keeps their order). No record crosses into Python.
- **python** (``auto``; the only one for a ``file`` source or ``l1.persist``): a vectorized Python
  function gets a batch of keys and answers them through :class:`operators.lookup.Lookup` (L1 in
  the worker, L2 Redis, L3 the source); only the key crosses into Python.

A source that does not answer is retried with bounded backoff, then the job fails and restarts
from its checkpoint. Each worker writes what its lookups did (hits per level, misses, batch
latency) to ``.headrace/stats/``, and ``headrace run`` prints the sum at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from headrace.connectors.postgres.connection import PostgresConnection
from headrace.connectors.redis.connection import RedisConnection
from headrace.connectors.sqltext import ident, literal
from headrace.operators import jvm
from headrace.schemas.durations import format_duration_ms
from headrace.schemas.errors import ServiceError, SpecError
from headrace.schemas.kinds import (
    NUL_COLUMN,
    SYSTEM_COLUMNS,
    ExecNode,
    NodeSql,
    PlanContext,
    Requirements,
    StepKind,
    StepNode,
    Stream,
    Wiring,
)
from headrace.schemas.options import Duration, FilePath, Identifier, SpecModel, StepOptions
from headrace.schemas.profile import Profile
from headrace.schemas.types import FieldType
from pydantic import Field, model_validator

FOUND_FUNCTION = "hr_found"
BARRIER_FUNCTION = "hr_barrier"
FOUND_CLASS = f"{jvm.PACKAGE}.LookupFound"
BARRIER_CLASS = f"{jvm.PACKAGE}.Barrier"
LOOKUP_CLASS = f"{jvm.PACKAGE}.EnrichLookup"
GET_CLASS = f"{jvm.PACKAGE}.EnrichGet"
PREFETCH_CLASS = f"{jvm.PACKAGE}.EnrichPrefetch"
#: where workers of local runs leave their lookup counts (relative to the working directory)
STATS_DIR = Path(".headrace") / "stats"


class PostgresLookup(SpecModel):
    """Rows of ``table`` whose ``key_column`` is the key, or of ``query`` (given the batch's keys as
    ``%(keys)s``, a text array; it returns the key first, then the fields in order)."""

    table: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
    key_column: Identifier | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PostgresLookup:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either 'table' (with 'key_column') or 'query'")
        if self.query is not None and "%(keys)s" not in self.query:
            raise ValueError("the query takes the batch's keys as %(keys)s, e.g. WHERE id = ANY(%(keys)s)")
        return self


class RedisLookup(SpecModel):
    prefix: str = Field(min_length=1)


class FileLookup(SpecModel):
    """A CSV file with a header row, or JSON lines; ``key_column`` (default: the step's key)
    names the column or member holding the key."""

    path: FilePath
    key_column: str | None = None


class LookupSource(SpecModel):
    """Exactly one of ``postgres``, ``redis``, ``file``."""

    postgres: PostgresLookup | None = None
    redis: RedisLookup | None = None
    file: FileLookup | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LookupSource:
        if sum(x is not None for x in (self.postgres, self.redis, self.file)) != 1:
            raise ValueError("a source is exactly one of 'postgres', 'redis' or 'file'")
        return self

    @property
    def kind(self) -> str:
        return "postgres" if self.postgres else "redis" if self.redis else "file"


class L1Options(SpecModel):
    size: int = Field(default=100_000, ge=1)
    ttl: Duration = 600_000
    miss_ttl: Duration = 60_000
    persist: str | None = None  # a directory: the cache kept in rocksdict, one database per worker


class L2Options(SpecModel):
    prefix: str | None = None
    ttl: Duration = 3_600_000


class CacheOptions(SpecModel):
    l1: L1Options = L1Options()
    l2: L2Options | None = None


class EnrichOptions(StepOptions):
    key: Identifier
    fields: dict[Identifier, Literal["string", "integer", "number", "boolean"]] = Field(min_length=1)
    source: LookupSource
    cache: CacheOptions = CacheOptions()
    on_miss: Literal["keep", "drop", "dead_letter"] = "keep"
    retry_for: Duration = 30_000
    #: where the lookups run: ``auto`` is Python (on the benchmark it took a quarter less CPU than the
    #: JVM engine for ~10% less speed; see the README's enrichment row)
    engine: Literal["auto", "jvm", "python"] = "auto"


def python_only(opts: EnrichOptions) -> str | None:
    """What of a step only the Python engine has, or None."""
    if opts.source.file is not None:
        return "a 'file' source"
    if opts.cache.l1.persist:
        return "'cache.l1.persist'"
    return None


def convert(value: Any, ftype: FieldType) -> Any:
    """A looked-up value as the declared type (None when it is not one).

    >>> convert("3", FieldType.INTEGER), convert("x", FieldType.INTEGER), convert("true", FieldType.BOOLEAN)
    (3, None, True)
    """
    if value is None:
        return None
    try:
        if ftype is FieldType.INTEGER:
            return int(value)
        if ftype is FieldType.NUMBER:
            return float(value)
        if ftype is FieldType.BOOLEAN:
            return value if isinstance(value, bool) else str(value).lower() in ("true", "t", "1", "yes")
        return str(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LookupConfig:
    """Everything a worker needs to open its lookup (connections resolved from the profile)."""

    job: str
    step: str
    key: str
    fields: tuple[tuple[str, FieldType], ...]
    options: EnrichOptions
    project: str  # the directory relative paths are resolved against
    postgres: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None

    def open(self) -> Any:
        from headrace.operators.lookup import FileSource, LocalCache, Lookup, PostgresSource, RedisLevel, RedisSource

        opts = self.options
        names = [n for n, _ in self.fields]
        l1 = opts.cache.l1
        persist = None
        if l1.persist:
            persist = self._path(l1.persist) / f"{self.job}.{self.step}"
        cache = LocalCache(size=l1.size, ttl_ms=l1.ttl, miss_ttl_ms=l1.miss_ttl, persist=persist)
        source: Any
        if opts.source.postgres is not None:
            pg = opts.source.postgres
            assert self.postgres is not None
            source = PostgresSource(self.postgres, names, table=pg.table, key_column=pg.key_column,
                                    query=pg.query, retry_for_ms=opts.retry_for)
        elif opts.source.redis is not None:
            assert self.redis is not None
            source = RedisSource(_redis_client(self.redis), opts.source.redis.prefix, names, opts.retry_for,
                                 where=f"Redis at {self.redis.get('host')}:{self.redis.get('port')}")
        else:
            assert opts.source.file is not None
            source = FileSource.read(self._path(opts.source.file.path), opts.source.file.key_column or self.key, names)
        l2 = None
        if opts.cache.l2 is not None and self.redis is not None:
            prefix = opts.cache.l2.prefix or f"headrace:enrich:{self.job}:{self.step}:"
            l2 = RedisLevel(_redis_client(self.redis), prefix, opts.cache.l2.ttl, names)
        return Lookup(cache, l2, source)

    def _path(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else Path(self.project) / path


def _redis_client(kwargs: dict[str, Any]) -> Any:
    import redis

    return redis.Redis(**kwargs)


#: the lookup's counts that become Flink counters ``enrich_l1_hits`` … ``enrich_misses``
LEVEL_COUNTERS = ("l1_hits", "l2_hits", "l3_hits", "misses")


def enrich_udf(config: LookupConfig, stats_dir: Path) -> Any:
    """A vectorized function: a batch of keys in, ``ROW<_found, fields…>`` out."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    flink_types = {FieldType.STRING: DataTypes.STRING(), FieldType.INTEGER: DataTypes.BIGINT(),
                   FieldType.NUMBER: DataTypes.DOUBLE(), FieldType.BOOLEAN: DataTypes.BOOLEAN()}
    result = DataTypes.ROW([DataTypes.FIELD("_found", DataTypes.BOOLEAN())]
                           + [DataTypes.FIELD(n, flink_types[t]) for n, t in config.fields])

    class EnrichRecords(ScalarFunction):
        def is_deterministic(self) -> bool:
            return False

        def open(self, function_context: Any) -> None:
            self.lookup = config.open()
            # Flink metrics (group headrace): which level answered each key, keys no level had
            group = function_context.get_metric_group().add_group("headrace")
            self.counters = {name: group.counter(f"enrich_{name}") for name in LEVEL_COUNTERS}
            self.counted = dict.fromkeys(LEVEL_COUNTERS, 0)

        def eval(self, keys: Any) -> Any:
            import pandas as pd

            values = self.lookup.get([None if k is None or k != k else str(k) for k in keys])
            for name in LEVEL_COUNTERS:
                now = getattr(self.lookup.stats, name)
                self.counters[name].inc(now - self.counted[name])
                self.counted[name] = now
            data: dict[str, Any] = {}
            for name, ftype in config.fields:
                column = [convert(v.get(name), ftype) if v is not None else None for v in values]
                data[name] = pd.Series(column, dtype="object")
            # with on_miss keep, a row found is enough; otherwise every field must have a value
            # (the fields are then required downstream, so they can be group keys)
            found = [v is not None for v in values]
            if config.options.on_miss != "keep":
                found = [f and all(data[n][i] is not None for n, _ in config.fields) for i, f in enumerate(found)]
            data = {"_found": pd.Series(found, dtype="bool"), **data}
            # after every batch (a batch is up to a bundle of records: one small file write), as
            # a bounded job's workers may be stopped before close()
            self.lookup.save_stats(stats_dir, f"{config.job}.{config.step}")
            return pd.DataFrame(data)

        def close(self) -> None:
            lookup = getattr(self, "lookup", None)
            if lookup is not None:
                lookup.save_stats(stats_dir, f"{config.job}.{config.step}")
                lookup.close()

    # not deterministic (a store can change between two lookups of one key): the planner then
    # neither pushes filters below the lookup nor evaluates it once per output
    return udf(EnrichRecords(), result_type=result, func_type="pandas", deterministic=False)


@dataclass(kw_only=True)
class EnrichNode(StepNode):
    options: EnrichOptions
    added: tuple[tuple[str, FieldType], ...]
    job: str
    project: str
    jvm: bool  # the lookups run in the JVM (EnrichLookup.java), not in Python
    passes_fields: ClassVar[bool] = True  # it adds fields and may drop records

    def reads_ahead(self, wiring: Wiring) -> bool:
        """The JVM engine, with its keys read ahead by the Kafka consumer (EnrichPrefetch.java)
        and looked up on the task thread (EnrichGet.java): when the key is the Kafka records' own
        JSON field. Otherwise the lookup is Flink's asynchronous calc (EnrichLookup.java)."""
        return self.jvm and wiring.source_json_field(self.id, self.options.key)

    @property
    def function(self) -> str:
        return f"hr_enrich_{self.id.replace('-', '_')}"

    @property
    def adds(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.added)

    def explain(self) -> str:
        opts = self.options
        src = opts.source
        where = (f"postgres {'table ' + str(src.postgres.table) if src.postgres.table else 'query'}"
                 if src.postgres else f"redis hashes '{src.redis.prefix}<key>'" if src.redis
                 else f"file {src.file.path if src.file else ''}")
        l1 = opts.cache.l1
        levels = f"L1 {l1.size:,} × {format_duration_ms(l1.ttl)} (misses {format_duration_ms(l1.miss_ttl)})"
        if opts.cache.l2 is not None:
            levels += f", L2 redis × {format_duration_ms(opts.cache.l2.ttl)}"
        engine = ("in the JVM: keys read ahead by the Kafka consumer when the key is a field of the JSON "
                  "records, else asynchronous" if self.jvm else "in Python")
        return (f"look up {', '.join(self.adds)} by {opts.key} from {where} ({levels}; batched, {engine}); "
                f"on miss: {opts.on_miss}")

    def owns(self, node: ExecNode) -> bool:
        kinds = ("async-calc", "calc") if self.jvm else ("python-",)
        return node.kind.startswith(kinds) and node.calls(self.function)

    def functions(self) -> tuple[str, ...]:
        return (f"CREATE TEMPORARY SYSTEM FUNCTION {FOUND_FUNCTION} AS {literal(FOUND_CLASS)} LANGUAGE JAVA",
                f"CREATE TEMPORARY SYSTEM FUNCTION {BARRIER_FUNCTION} AS {literal(BARRIER_CLASS)} LANGUAGE JAVA")

    def passed_through(self, wiring: Wiring) -> tuple[tuple[str, FieldType], ...]:
        """The JVM engine's record fields that go through the lookup as its argument: Flink 2.3's
        asynchronous calc forwards a BIGINT, DOUBLE or BOOLEAN column without its null flag
        (a NULL came out as -1; see EnrichLookup.java), so these come back in ``_e._carried``."""
        if not self.jvm or self.reads_ahead(wiring):
            return ()
        primitive = (FieldType.INTEGER, FieldType.NUMBER, FieldType.BOOLEAN)
        return tuple((name, ftype) for name in wiring.carried(self.id)
                     if (ftype := self.output.field_type(name)) in primitive)

    def register(self, t_env: Any, wiring: Wiring) -> None:
        config = self.config(wiring.profile)
        if not self.jvm:
            t_env.create_temporary_function(self.function, enrich_udf(config, Path.cwd() / STATS_DIR))
            return
        from functools import reduce

        from pyflink.java_gateway import get_gateway

        # an instance made with its spec: the spec holds the stores' passwords, which SQL text
        # (shown in operator names and plans) must not
        spec = jvm_spec(config, Path.cwd() / STATS_DIR, self.passed_through(wiring))
        java_class = GET_CLASS if self.reads_ahead(wiring) else LOOKUP_CLASS
        function = reduce(getattr, java_class.split("."), get_gateway().jvm)(spec)
        t_env._j_tenv.createTemporarySystemFunction(self.function, function)

    def source_properties(self, wiring: Wiring) -> dict[str, str]:
        if not self.reads_ahead(wiring):
            return {}
        return {"interceptor.classes": PREFETCH_CLASS,
                f"headrace.prefetch.{self.id}": f"{self.job}\t{self.options.key}"}

    def flink_options(self) -> dict[str, str]:
        if not self.jvm:
            return {}
        return {
            # the outputs reading the step (on time, late, dead letters) share one lookup
            "table.optimizer.reuse-optimize-block-with-digest-enabled": "true",
            # records in flight per subtask: L1 answers at once, a batch of misses takes a round trip
            "table.exec.async-scalar.max-concurrent-operations": "2000",
            # the function retries its stores itself (for retry_for, each call under a socket
            # timeout), then fails the records; Flink's timeout would cost a timer per record
            "table.exec.async-scalar.retry-strategy": "NO_RETRY",
            "table.exec.async-scalar.timeout": "0 ms",
        }

    def config(self, profile: Profile) -> LookupConfig:
        src = self.options.source
        postgres = redis = None
        if src.postgres is not None:
            postgres = profile.section(PostgresConnection).conninfo()
        if src.redis is not None or self.options.cache.l2 is not None:
            if src.redis is not None or profile.embedded is None:
                redis = profile.section(RedisConnection).client_kwargs()
        return LookupConfig(job=self.job, step=self.id, key=self.options.key, fields=self.added,
                            options=self.options, project=self.project, postgres=postgres, redis=redis)

    def prepare(self, profile: Profile) -> None:
        """The source answers (and, for a file, exists), or one line."""
        src = self.options.source
        if profile.embedded is not None and src.file is None:
            raise ServiceError(f"enrich step '{self.id}' reads {src.kind}, which the embedded profile does not have",
                               hint="give it a 'file:' source for local runs, or use a service profile")
        config = self.config(profile)
        try:
            lookup = config.open()
            try:
                if src.file is not None and not lookup.l3.rows:
                    raise ServiceError(f"enrich step '{self.id}': {src.file.path} has no row with a "
                                       f"'{src.file.key_column or self.options.key}' column",
                                       hint="fix 'source.file.key_column' or the file")
                lookup.l3.fetch([])
                if src.postgres is not None:  # the table or query is readable: one probe with no keys
                    lookup.l3.fetch(["\x01headrace-probe"])
            finally:
                lookup.l3.close()
        except ServiceError:
            raise
        except FileNotFoundError as exc:
            raise ServiceError(f"enrich step '{self.id}': file {exc.filename} does not exist",
                               hint="fix 'source.file.path' (relative to the job's project folder)") from None
        except RuntimeError as exc:  # retried, then refused
            raise ServiceError(f"enrich step '{self.id}': {exc}") from None
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServiceError(f"enrich step '{self.id}' cannot read its {src.kind} source: {reason}",
                               hint="fix 'source' in the step or the store") from None

    def sql(self, wiring: Wiring, input_view: str) -> NodeSql:
        carried = wiring.carried(self.id)
        looked, output = wiring.view(self.id, "looked"), wiring.view(self.id, "enriched")
        key = ident(self.options.key)
        packed = self.passed_through(wiring)
        argument = ""
        if packed:
            row = ", ".join(f"{ident(n)} {t.flink_sql}" for n, t in packed)
            argument = f", CAST(ROW({', '.join(ident(n) for n, _ in packed)}) AS ROW<{row}>)"
        call = f"{self.function}(CAST({key} AS STRING){argument})"
        views = [f"CREATE TEMPORARY VIEW {looked} AS\nSELECT *, {call} AS `_e`\nFROM {input_view}"]
        # the late judgement's column through a barrier: the outputs (on time, late, dead letters)
        # then share one lookup instead of each running its own (see Barrier.java)
        columns = [ident(c) if c != "_max_seen" else f"{BARRIER_FUNCTION}(`_max_seen`) AS `_max_seen`"
                   for c in SYSTEM_COLUMNS]
        through = {n for n, _ in packed}
        columns += [f"`_e`.`_carried`.{ident(c)} AS {ident(c)}" if c in through else ident(c) for c in carried]
        columns += [f"`_e`.{ident(n)} AS {ident(n)}" for n in self.adds]
        if wiring.nul_flagged(self.id):  # it passes fields: the source's flags of them stay true
            columns.append(ident(NUL_COLUMN))
        # a correlate, not WHERE _e._found: a filter on a Python function's result trips Flink's
        # planner (RemoteCalcSplitRule); see LookupFound.java
        keep = "" if self.options.on_miss == "keep" else f", LATERAL TABLE({FOUND_FUNCTION}(`_e`, TRUE)) AS `_f`"
        views.append(f"CREATE TEMPORARY VIEW {output} AS\nSELECT {', '.join(columns)}\nFROM {looked}{keep}")
        dead: tuple[str, ...] = ()
        if self.options.on_miss == "dead_letter":
            missed = wiring.view(self.id, "missed")
            shown = f"`_e`.`_carried`.{key}" if self.options.key in through else key
            error = (f"CONCAT('enrich: no row for {self.options.key} ', COALESCE(CAST({shown} AS STRING), 'NULL'), "
                     f"{literal(' in the ' + self.options.source.kind + ' source')})")
            views.append(f"CREATE TEMPORARY VIEW {missed} AS\n"
                         f"{wiring.dead_letter_select(literal(self.id), literal('/' + self.options.key), error)}\n"
                         f"FROM {looked}, LATERAL TABLE({FOUND_FUNCTION}(`_e`, FALSE)) AS `_f`")
            dead = (missed,)
        return NodeSql(views=tuple(views), output=output, dead_letters=dead)

    def run_report(self, same_kind: list[Any], job: str, since: float) -> Any:
        """The lookups of each enrich step in this run: records answered per cache level, misses,
        and batch latency (from the workers' files in .headrace/stats)."""
        from headrace.operators.lookup import LookupStats
        from rich.table import Table

        table = Table(title="lookups", title_justify="left")
        warm: list[str] = []
        for column in ("step", "records", "L1 (worker)", "L2 (redis)", "L3 (store)", "misses", "L2 errors",
                       "batch p50 / p99"):
            table.add_column(column, justify="left" if column == "step" else "right")
        for step in same_kind:
            files = [f for f in STATS_DIR.glob(f"{job}.{step.id}.*.json") if f.stat().st_mtime >= since]
            if not files:
                table.add_row(step.id, "0", "", "", "", "", "", "")
                continue
            total = LookupStats()
            for f in files:
                total = total.merged(LookupStats.from_json(f.read_text()))
            latencies = sorted(total.batch_ms)
            n = max(total.keys, 1)
            p50 = latencies[len(latencies) // 2] if latencies else 0.0
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
            table.add_row(step.id, f"{total.keys:,}", *(f"{hits:,} ({hits / n:.1%})" for hits in (
                total.l1_hits, total.l2_hits, total.l3_hits, total.misses)),
                f"{total.l2_errors:,}", f"{p50:.1f} / {p99:.1f} ms")
            if total.read_ahead:
                warm.append(f"{step.id}: {total.read_ahead:,} keys read ahead by the Kafka consumer; "
                            f"{total.waited:,} records waited for their lookup")
            if total.l1_loaded:
                warm.append(f"{step.id}: L1 started with {total.l1_loaded:,} persisted keys, its first batches "
                            f"answered {total.first_batch_l1_hits:,} of {total.first_batch_keys:,} keys")
        if warm:
            table.caption = "; ".join(warm)
            table.caption_justify = "left"
        return table


def jvm_spec(config: LookupConfig, stats_dir: Path, carried: tuple[tuple[str, FieldType], ...] = ()) -> str:
    """The JVM engine's spec (EnrichSpec.java): the step, its levels and the stores' connections."""
    opts = config.options
    src = opts.source
    spec: dict[str, Any] = {
        "job": config.job, "step": config.step, "fields": [[n, t.value[0]] for n, t in config.fields],
        "strict": opts.on_miss != "keep", "l1_size": opts.cache.l1.size, "ttl_ms": opts.cache.l1.ttl,
        "miss_ttl_ms": opts.cache.l1.miss_ttl, "retry_for_ms": opts.retry_for,
        "retry_for_text": format_duration_ms(opts.retry_for), "stats_dir": str(stats_dir.resolve()),
        "source": (src.postgres.model_dump() if src.postgres else {"prefix": src.redis.prefix} if src.redis else {}),
        "postgres": config.postgres, "carried": [[n, t.value[0]] for n, t in carried],
    }
    if opts.cache.l2 is not None and config.redis is not None:
        spec["l2_prefix"] = opts.cache.l2.prefix or f"headrace:enrich:{config.job}:{config.step}:"
        spec["l2_ttl_ms"] = opts.cache.l2.ttl
    if config.redis is not None:
        redis = dict(config.redis)
        redis["timeout_ms"] = int(float(redis.pop("socket_timeout", 5)) * 1000)
        redis.pop("socket_connect_timeout", None)
        spec["redis"] = redis
    return json.dumps(spec)


class Enrich(StepKind):
    name = "enrich"
    options = EnrichOptions
    sections = (PostgresConnection, RedisConnection)

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> EnrichNode:
        opts: EnrichOptions = options
        ctx.field(upstream, opts.key, "key", what="key field")
        for name in opts.fields:
            if upstream.field_type(name) is not None:
                raise SpecError(f"looked-up field '{name}' is already a field of {upstream.described_as}",
                                where=ctx.where("fields", name), hint="rename it in the source, or drop it here")
        if opts.source.postgres and opts.source.postgres.table and not opts.source.postgres.key_column:
            raise SpecError("a postgres table source needs 'key_column'", where=ctx.where("source", "postgres"),
                            hint="name the table's column holding the key")
        added = tuple((n, FieldType(t)) for n, t in opts.fields.items())
        always = frozenset(opts.fields) if opts.on_miss != "keep" else frozenset()  # never null downstream
        services = {opts.source.kind} - {"file"}
        if opts.cache.l2 is not None:
            services.add("redis")
        needs_python = python_only(opts)
        if opts.engine == "jvm" and needs_python:
            raise SpecError(f"the JVM engine does not have {needs_python}", where=ctx.where("engine"),
                            hint="use 'engine: python' (or auto), or drop what only Python has")
        in_jvm = opts.engine == "jvm"
        return EnrichNode(
            id=node_id, kind=self.name, uid=uid, reads=(opts.key,), options=opts, added=added, job=ctx.job,
            project=str(ctx.project), jvm=in_jvm,
            output=Stream(fields=upstream.fields + added, required=upstream.required | always,
                          described_as=f"{upstream.described_as} + step '{node_id}'"),
            requirements=Requirements(jars=frozenset({"postgres"} if in_jvm and opts.source.postgres else ()),
                                      services=frozenset(services), python=not in_jvm))
