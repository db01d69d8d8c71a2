"""``validate`` in Python: decode each record once and check it against its JSON Schema (2020-12).

This is the engine for schemas outside the JVM subset (``engine: python``, or ``auto`` with such a
schema); ``operators/java`` holds the JVM engine, and tests/flink/test_jvm_validator.py holds the
two to the same verdicts.

:class:`RecordCheck` is plain Python: ``check(payload)`` returns ``(error_path, error, *fields)``
where ``error`` is None for a good record and ``fields`` are the typed values the later steps
read. The Flink side is :func:`validate_udf`, a scalar UDF returning that tuple as a ROW; rows
with an error are routed to the dead-letter output by the compiled SQL. A valid record whose
event time is out of range (before year 1, or more than ``max_future`` ahead of the clock) is a
dead letter too, as in the JVM engine.

>>> check = RecordCheck({"type": "object", "required": ["n"],
...                      "properties": {"n": {"type": "integer"}}}, [("n", FieldType.INTEGER)])
>>> check.check('{"n": 3}')
(None, None, 3)
>>> check.check('{"n": "x"}')
('/n', '"x" is not of type "integer"', None)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import jsonschema_rs
import orjson
from headrace.connectors.sqltext import ident, literal
from headrace.operators import jvm
from headrace.operators.binary import DECODE_FUNCTION, BinaryDecoding, BinarySchema
from headrace.schemas.durations import format_duration_ms
from headrace.schemas.errors import SpecError
from headrace.schemas.jsonschema import RecordSchema, jvm_unsupported
from headrace.schemas.kinds import (
    NUL_COLUMN,
    DecodingNode,
    ExecNode,
    NodeSql,
    PlanContext,
    Requirements,
    SourceDecoding,
    StepKind,
    Stream,
    Wiring,
    nul_flags,
)
from headrace.schemas.options import StepOptions
from headrace.schemas.types import FieldType
from pydantic import Field

VALIDATE_FUNCTION = "hr_validate"
EVENT_TIME_FUNCTION = "hr_event_time"

_INT64 = (-(2**63), 2**63 - 1)
#: 0001-01-01T00:00:00Z: the earliest event time every store (and Flink's TIMESTAMP) can hold
MIN_EVENT_MS = -62_135_596_800_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def render_ms(ms: int) -> str:
    """An epoch-millisecond instant as ISO-8601 plus the number, for any int (as the JVM does).

    >>> render_ms(4_102_444_800_000)
    '2100-01-01T00:00:00Z (4102444800000 ms)'
    >>> render_ms(2**63 - 1)
    '+292278994-08-17T07:12:55.807Z (9223372036854775807 ms)'
    """
    try:
        text = (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        text = text.replace("+00:00", "Z").replace(".000Z", "Z")
    except OverflowError:  # beyond Python's year 9999: Java's Instant.toString form
        text = _java_instant(ms)
    return f"{text} ({ms} ms)"


def _java_instant(ms: int) -> str:
    # proleptic Gregorian arithmetic on days (civil_from_days, H. Hinnant), as java.time does
    days, rest = divmod(ms, 86_400_000)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    seconds, millis = divmod(rest, 1000)
    clock = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    clock += f".{millis:03d}" if millis else ""
    shown = f"+{year}" if year > 9999 else f"{year:04d}" if year >= 0 else f"-{-year:04d}"
    return f"{shown}-{month:02d}-{day:02d}T{clock}Z"


def event_time_problem(ms: int, max_future_ms: int, max_future_text: str, now_ms: int | None = None) -> str | None:
    """Why ``ms`` is not acceptable as an event time, or None (the JVM's EventTimes rule)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if ms < MIN_EVENT_MS:
        return f"event time {render_ms(ms)} is before 0001-01-01T00:00:00Z"
    if ms > now_ms + max_future_ms:
        now = render_ms(now_ms).split(" ")[0]
        return f"event time {render_ms(ms)} is more than max_future ({max_future_text}) ahead of the clock ({now})"
    return None
ERROR_FIELDS = ("err_path", "err_msg")


def _pointer(path: Sequence[object]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else "/"


class RecordCheck:
    """Decode + validate + extract typed fields. Build once, call ``check`` per record."""

    def __init__(self, schema: dict[str, Any], fields: Sequence[tuple[str, FieldType]], *,
                 event_time: str | None = None, max_future_ms: int = 86_400_000,
                 max_future_text: str = "1d") -> None:
        self.schema = schema
        self.fields = tuple(fields)
        self.event_time = event_time
        self.max_future_ms = max_future_ms
        self.max_future_text = max_future_text
        self._validator: Any = None
        self._none = (None,) * len(self.fields)

    def open(self) -> None:
        """Compile the schema (done lazily on workers, never at pickling time)."""
        self._validator = jsonschema_rs.validator_for(self.schema)

    def _fail(self, path: str, message: str) -> tuple[Any, ...]:
        return (path, message[:2000]) + self._none

    def check(self, payload: str | bytes | None) -> tuple[Any, ...]:
        if self._validator is None:
            self.open()
        if payload is None or payload == "" or payload == b"":
            return self._fail("/", "empty record")
        try:
            record = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            if isinstance(payload, bytes):
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return self._fail("/", f"not valid JSON: not UTF-8 (byte 0x{payload[bad.start]:02x} "
                                           f"at offset {bad.start})")
            return self._fail("/", f"not valid JSON: {exc}")
        if not self._validator.is_valid(record):
            error = next(iter(self._validator.iter_errors(record)))
            return self._fail(_pointer(list(error.instance_path)), error.message)
        if not isinstance(record, dict):  # a schema without "type": "object" let it through
            return self._fail("/", f"{orjson.dumps(record).decode()[:200]} is not a JSON object")
        if self.event_time is not None:
            ms = record.get(self.event_time)
            if isinstance(ms, int | float) and not isinstance(ms, bool) and ms == int(ms):
                problem = event_time_problem(int(ms), self.max_future_ms, self.max_future_text)
                if problem is not None:
                    return self._fail(f"/{self.event_time}", problem)
        values: list[Any] = []
        for name, kind in self.fields:
            value = record.get(name)
            if value is not None:
                if kind is FieldType.INTEGER:
                    value = int(value)
                    if not _INT64[0] <= value <= _INT64[1]:
                        return self._fail(f"/{name}", f"{value} does not fit in a 64-bit integer")
                elif kind is FieldType.NUMBER:
                    value = float(value)
            values.append(value)
        return (None, None, *values)


def validate_udf(check: RecordCheck, vectorized: bool = True) -> Any:
    """The PyFlink scalar UDF around ``check`` (imports PyFlink lazily: unit tests need no JVM).

    By default it is a pandas UDF: records cross between the JVM and Python in Arrow batches
    (``python.fn-execution.arrow.batch.size``) instead of one at a time, which measured ~1.6x
    faster on the example job; ``vectorized=False`` gives the row-at-a-time UDF.
    """
    from pyflink.table import DataTypes, Row
    from pyflink.table.udf import ScalarFunction, udf

    class ValidateFunction(ScalarFunction):  # type: ignore[misc]
        def __init__(self, inner: RecordCheck) -> None:
            self.inner = inner

        def open(self, function_context: Any) -> None:
            self.inner.open()

        def eval(self, payload: bytes | None) -> Any:
            return Row(*self.inner.check(payload))

    class VectorizedValidate(ScalarFunction):  # type: ignore[misc]
        def __init__(self, inner: RecordCheck) -> None:
            self.inner = inner

        def open(self, function_context: Any) -> None:
            self.inner.open()
            self.names = list(ERROR_FIELDS) + [name for name, _ in self.inner.fields]

        def eval(self, payloads: Any) -> Any:
            import pandas as pd

            # object columns keep exact Python ints and None: an int64 column with a missing
            # value would become float64 (inexact beyond 2**53), and PyFlink's Arrow writer
            # refuses pandas' nullable dtypes
            check = self.inner.check
            return pd.DataFrame([check(p) for p in payloads], columns=self.names, dtype=object)

    types = {FieldType.STRING: DataTypes.STRING(), FieldType.INTEGER: DataTypes.BIGINT(),
             FieldType.NUMBER: DataTypes.DOUBLE(), FieldType.BOOLEAN: DataTypes.BOOLEAN()}
    row = DataTypes.ROW([DataTypes.FIELD(n, DataTypes.STRING()) for n in ERROR_FIELDS]
                        + [DataTypes.FIELD(name, types[kind]) for name, kind in check.fields])
    # the raw bytes: the source's STRING column holds them unchecked, and Arrow's conversion of
    # a string column to Python fails on bytes that are not UTF-8 (the whole batch, every retry)
    inputs = [DataTypes.BYTES()]
    if vectorized:
        return udf(VectorizedValidate(check), input_types=inputs, result_type=row, func_type="pandas")
    return udf(ValidateFunction(check), input_types=inputs, result_type=row)


# -- the step kind ---------------------------------------------------------------------------

class ValidateOptions(StepOptions):
    """Check each record against the source's schema (or ``schema``); failures go to dead letter."""

    schema_file: str | None = Field(default=None, alias="schema")
    #: where records are checked: ``jvm`` (Flink function, the JSON Schema subset Headrace
    #: compiles), ``python`` (jsonschema-rs, all of draft 2020-12, slower), or ``auto``:
    #: the JVM when the schema is in its subset
    engine: Literal["auto", "jvm", "python"] = "auto"


@dataclass(kw_only=True)
class ValidateNode(DecodingNode):
    """The decoding step: reads the source's raw records once, checks them, extracts the fields
    every later node reads, and judges lateness per partition (``_max_seen``). ``schema`` is a
    RecordSchema (JSON) or a binary format's BinarySchema."""
    passes_fields: ClassVar[bool] = True  # it drops refused records, changes no field
    #: "jvm" (Flink function) or "python" (vectorized UDF); ``engine_note`` says why
    engine: str = "jvm"
    engine_note: str = ""
    event_time_field: str = ""
    max_future_ms: int = 86_400_000
    fields: tuple[tuple[str, FieldType], ...] = ()  # set by the compiler: what later nodes read
    #: a binary format's decoding (None for JSON); its writer schemas are read from the profile's
    #: registry once per compilation (``decoding_for``)
    decoding: BinaryDecoding | None = None
    _writers: dict[str, BinaryDecoding] = field(default_factory=dict)
    #: JSON in the Confluent wire format: the subject, and its schema ids per profile (read once)
    subject: str | None = None
    _ids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def step_id(self) -> str:
        return self.id

    @property
    def binary_payloads(self) -> bool:
        """Whether the source's records are bytes, not text (dead letters carry them in base64)."""
        return self.decoding is not None or self.subject is not None  # a framing's id is not text

    def explain(self) -> str:
        if self.decoding is not None:
            return f"{self.decoding.explain()}; undecodable records → dead letter"
        engine = "in the JVM" if self.engine == "jvm" else f"in Python, jsonschema-rs ({self.engine_note})"
        framing = f" (Confluent wire format, subject '{self.subject}')" if self.subject is not None else ""
        return (f"decode + check each record against {self.schema.path.name}{framing} {engine}; "
                "failures → dead letter")

    def owns(self, node: ExecNode) -> bool:
        # the operator calling the Python validator, or the one splitting the source's decoded
        # records into refused and valid ones
        return ((node.kind.startswith("python-") and node.calls(VALIDATE_FUNCTION))
                or (node.kind == "calc" and "_valid" in node.text))

    def decoding_for(self, wiring: Wiring) -> BinaryDecoding:
        """The decoding with the writers the profile's registry has now (Confluent wire), read once
        per profile: the watermark's call and the checked view's must carry the same literal."""
        assert self.decoding is not None
        name = wiring.profile.name
        if name not in self._writers:
            self._writers[name] = self.decoding.with_writers(wiring.profile)
        return self._writers[name]

    def json_ids(self, wiring: Wiring) -> list[int]:
        """The schema ids of the subject (JSON in the Confluent wire format), read once per profile."""
        assert self.subject is not None
        name = wiring.profile.name
        if name not in self._ids:
            from headrace.connectors.registry import subject_schemas

            self._ids[name] = sorted(subject_schemas(wiring.profile, self.subject, "JSON"))
        return self._ids[name]

    def spec(self, fields: Sequence[tuple[str, FieldType]], wiring: Wiring | None = None) -> str:
        """The JVM decoder's spec literal: the schema and the fields to extract, in order."""
        if self.decoding is not None:
            assert wiring is not None
            return self.decoding_for(wiring).spec(tuple(fields), self.event_time_field, self.max_future_ms,
                                                  format_duration_ms(self.max_future_ms))
        spec: dict[str, Any] = {"schema": self.schema.document, "event_time": self.event_time_field,
                                "max_future_ms": self.max_future_ms,
                                "max_future": format_duration_ms(self.max_future_ms),
                                "fields": [[n, t.value] for n, t in fields]}
        if self.subject is not None:
            assert wiring is not None
            spec.update(wire="confluent", subject=self.subject, ids=self.json_ids(wiring))
            connection = wiring.profile.registry
            if connection is not None:
                spec["registry"] = connection.runtime()
        return json.dumps(spec, separators=(",", ":"), ensure_ascii=False)

    def call(self, fields: Sequence[tuple[str, FieldType]], wiring: Wiring | None = None) -> str:
        """The JVM decoder as a SQL function call (``hr_decode`` / ``hr_validate``): for tests
        and benchmarks of the decoder alone; a job decodes in its source (:meth:`source_decoding`)."""
        function = DECODE_FUNCTION if self.decoding is not None else VALIDATE_FUNCTION
        return f"{function}(`_payload`, {literal(self.spec(fields, wiring))})"

    def source_decoding(self, wiring: Wiring) -> SourceDecoding:
        fields = wiring.fields_needed()
        if self.engine == "python":  # the source reads only the event time; Python checks the rest
            spec = json.dumps({"event_time": self.event_time_field, "max_future_ms": self.max_future_ms})
            return SourceDecoding(jvm.EVENT_TIME_CLASS, spec)
        function = jvm.DECODE_CLASS if self.decoding is not None else jvm.VALIDATE_CLASS
        return SourceDecoding(function, self.spec(fields, wiring), tuple(fields))

    def functions(self) -> tuple[str, ...]:
        return ()

    def register(self, t_env: Any, wiring: Wiring) -> None:
        if self.engine == "python":
            check = RecordCheck(self.schema.document, wiring.fields_needed(), event_time=self.event_time_field,
                                max_future_ms=self.max_future_ms,
                                max_future_text=format_duration_ms(self.max_future_ms))
            t_env.create_temporary_function(VALIDATE_FUNCTION, validate_udf(check))

    def sql(self, wiring: Wiring, input_view: str) -> NodeSql:
        fields = wiring.fields_needed()
        # embedded with the Python engine: the checked view is materialized through a DataStream
        # (see the runner), which carries the rowtime as the record timestamp: the query exposes
        # it under another name
        time_column = "_rowtime" if wiring.embedded and self.engine == "python" else "_event_time"
        origin = (f"`_payload`, {literal(wiring.source_topic)} AS `_topic`, `_partition`, `_offset`, `_event_ms`, "
                  f"`_event_time` AS {ident(time_column)}, `_max_seen`")
        nul = ""
        if self.engine == "jvm":
            # the source decoded every record (headrace-source): its columns, renamed, and its
            # flags of the string fields holding U+0000 (see NUL_COLUMN)
            columns = ", ".join(f"{ident('_f_' + n)} AS {ident(n)}" for n, _ in fields)
            if nul_flags(fields):
                nul = f", {ident(NUL_COLUMN)}"
                columns += nul
            checked = (f"SELECT {origin}, `_valid`, `_err_path`, `_err_msg`{', ' if columns else ''}{columns}\n"
                       f"FROM {input_view}")
        else:
            row = f"{VALIDATE_FUNCTION}(CAST(`_payload` AS BYTES))"
            columns = ", ".join(f"`_v`.{ident(n)} AS {ident(n)}" for n, _ in fields)
            checked = (f"SELECT {origin}, `_v`.`err_msg` IS NULL AS `_valid`, `_v`.`err_path` AS `_err_path`, "
                       f"`_v`.`err_msg` AS `_err_msg`{', ' if columns else ''}{columns}\n"
                       f"FROM (SELECT *, {row} AS `_v` FROM {input_view})")
        checked_view = wiring.view(self.id, "checked")
        rejected, valid = wiring.view(self.id, "rejected"), wiring.view(self.id, "valid")
        # Lateness is judged per source partition against the largest event time read from it so
        # far (`_max_seen`): the watermark that partition alone would have, computed with every
        # record rather than periodically, and kept with the source's offsets in its checkpoints,
        # so that the judgement is the same in a replay and after a restore (Flink's own watermark
        # is neither). The source computes it over every record, invalid ones included, with the
        # very `_event_ms` its watermark follows: Flink's watermark can then never be ahead of it,
        # so the window operator never drops a record this judgement let through. Each aggregate
        # applies its own lateness to it.
        names = "".join(f", {ident(n)}" for n, _ in fields)
        views = (
            f"""CREATE TEMPORARY VIEW {rejected} AS
{wiring.dead_letter_select(literal(self.id), '`_err_path`', '`_err_msg`')}
FROM {checked_view} WHERE NOT `_valid`""",
            f"""CREATE TEMPORARY VIEW {valid} AS
SELECT `_payload`, `_topic`, `_partition`, `_offset`, `_event_time`, `_event_ms`, `_max_seen`{names}{nul}
FROM {checked_view} WHERE `_valid`""",
        )
        return NodeSql(views=views, output=valid, dead_letters=(rejected,), checked=checked)


class Validate(StepKind):
    """``validate``: the decoding step every job starts with."""

    name = "validate"
    options = ValidateOptions
    decodes = True

    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> ValidateNode:
        opts: ValidateOptions = options
        schema = ctx.schema(opts.schema_file, "schema")
        et = ctx.event_time_field
        if isinstance(schema, BinarySchema):
            return self._plan_binary(opts, ctx, schema, node_id, uid)
        stream = Stream(fields=tuple((n, t) for n in schema.properties if (t := schema.field_type(n)) is not None),
                        required=frozenset(schema.required), described_as=schema.path.name)
        et_type = ctx.field(stream, et, required=True, what="event-time field", at=ctx.event_time_where)
        if et_type is not FieldType.INTEGER:
            raise SpecError(f"event-time field '{et}' must be an integer (epoch milliseconds)",
                            where=ctx.event_time_where, hint="give it \"type\": \"integer\" in the schema")
        engine, note = _choose_engine(ctx, schema, opts.engine)
        fmt = ctx.source_format
        subject = None
        if fmt is not None and fmt.wire == "confluent":
            if engine == "python":
                raise SpecError("the Python engine reads plain JSON, not the Confluent wire format",
                                where=ctx.where("engine") if opts.engine == "python" else ctx.event_time_where,
                                hint=f"keep the schema in the JVM subset (engine: auto or jvm); {note}")
            subject = fmt.subject or f"{ctx.source_topic}-value"
        return ValidateNode(id=node_id, kind=self.name, uid=uid, output=stream, schema=schema, engine=engine,
                            requirements=Requirements(python=engine == "python"), subject=subject,
                            engine_note=note, event_time_field=et, max_future_ms=ctx.max_future_ms)


    def _plan_binary(self, opts: ValidateOptions, ctx: PlanContext, schema: BinarySchema, node_id: str,
                     uid: str) -> ValidateNode:
        decoding = schema.decoding(ctx.source_format, ctx.source_topic)
        if opts.schema_file is not None:
            raise SpecError(f"validate: 'schema' is for JSON sources; a {decoding.name} source is read with its "
                            "own schema", where=ctx.where("schema"), hint="remove 'schema', or change source.format")
        if opts.engine == "python":
            raise SpecError(f"validate: a {decoding.name} source is decoded in the JVM; 'engine: python' is for JSON",
                            where=ctx.where("engine"), hint="remove 'engine'")
        et = ctx.event_time_field
        schema.check_event_time(et, ctx.event_time_where)
        stream = Stream(fields=tuple((n, t) for n in schema.properties if (t := schema.field_type(n)) is not None),
                        required=schema.required, described_as=schema.path.name)
        return ValidateNode(id=node_id, kind=self.name, uid=uid, output=stream, schema=schema, engine="jvm",
                            engine_note=f"{decoding.name}, decoded in the JVM", event_time_field=et,
                            max_future_ms=ctx.max_future_ms, decoding=decoding)


def _choose_engine(ctx: PlanContext, schema: RecordSchema, wanted: str) -> tuple[str, str]:
    """Where ``validate`` checks records: the JVM when the schema is in its subset."""
    if wanted == "python":
        return "python", "engine: python in the spec"
    unsupported = jvm_unsupported(schema.document)
    if unsupported is None:
        return "jvm", "schema in the JVM subset"
    if wanted == "jvm":
        raise SpecError(f"engine 'jvm' cannot check {schema.path.name}: {unsupported}", where=ctx.where("engine"),
                        hint="use engine: auto (or python) to check it with jsonschema-rs in Python")
    return "python", f"{schema.path.name}: {unsupported}"
