"""The one small interface every step kind and sink kind implements.

A *kind* is what a job spec names (``validate``, ``aggregate``, ``postgres``): one module holds
its options model and a :class:`StepKind` or :class:`SinkKind` that plans it. Planning turns the
options into a *node* (:class:`StepNode`, :class:`SinkNode`) that knows everything else about
it: the fields and types it resolved (errors at ``file:line`` through its :class:`PlanContext`),
the Flink SQL it contributes, its line in ``headrace explain``, which operators of Flink's plan
it owns (for their uids), the jars and services it needs, and how it prepares its store.
``jobs/registry.py`` lists the kinds; the compiler only wires the views the nodes return, each
node reading the output view of the node its ``from`` names.

This follows Beam YAML's providers (a kind is created by its type name from its config) and
Quix Streams' sinks (one module each, with its own tests). A new sink, in brief (the README's
"Adding a step, sink or format" has it whole; ``connectors/redis/`` is a whole store)::

    class Csv(SinkKind):
        name, options, sections = "csv", CsvOptions, (CsvFolder,)

        def place(self, options, upstream):          # the planner makes the id sink.csv.<place>
            return options.file.removesuffix(".csv")

        def plan(self, options, ctx, upstream, node_id, uid):
            return CsvNode(id=node_id, kind="csv", uid=uid, file=options.file,
                           view=self.named_view(upstream, self.place(options, upstream)))

plus one line in ``jobs/registry.py``. The framework knows kinds by role only: the decoding step
(:class:`DecodingNode`), steps emitting views (:class:`ViewNode`), sinks, and steps that rewrite
every output (``rewrites_outputs``).

Columns a record stream carries besides its fields, read by the compiler's shared parts (dead
letters, the late judgement), are named in :data:`SYSTEM_COLUMNS`; a step keeps them on every
row it emits.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from headrace.schemas.options import SinkOptions, StepOptions
from headrace.schemas.profile import Profile, Section
from headrace.schemas.types import FieldType
from headrace.schemas.views import ViewDef

#: the columns every record stream carries for the compiler: the raw payload and its origin
#: (dead letters), the event time as a timestamp and in epoch ms, and the largest event time
#: of the record's partition so far (the late judgement; the source computes it, see SourceDecoding)
SYSTEM_COLUMNS = ("_payload", "_topic", "_partition", "_offset", "_event_time", "_event_ms", "_max_seen")
#: the source's flags of the string fields holding U+0000 (:func:`nul_flags`): the decoding step
#: carries it to the steps after it, which test it instead of each value. Flink's generated code
#: copies every string column a filter reads (for every record, before the filter decides), so a
#: test of the value itself costs a copy per field and output; this column is NULL for every
#: record without a NUL, and a NULL is not copied
NUL_COLUMN = "_nul"


@dataclass(frozen=True)
class Stream:
    """What a node emits: records with typed fields, or (``view`` set) the rows of a view."""

    fields: tuple[tuple[str, FieldType], ...] = ()
    #: fields every record has (a schema's ``required``): group keys must be among them
    required: frozenset[str] = frozenset()
    #: how errors name where the fields come from ("click.schema.json", "step 'enrich'")
    described_as: str = ""
    view: ViewDef | None = None

    def field_type(self, name: str) -> FieldType | None:
        return dict(self.fields).get(name)


@dataclass(frozen=True)
class Requirements:
    """What a node needs before the job starts: connector jars (by the jar lock's ``for``),
    profile sections naming services, and whether it runs Python in Flink's workers."""

    jars: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    python: bool = False

    def __or__(self, other: Requirements) -> Requirements:
        return Requirements(self.jars | other.jars, self.services | other.services, self.python or other.python)


class PlanContext(Protocol):
    """What the planner tells a kind about where it is."""

    job: str
    #: the folder relative paths in the spec are resolved against (the job's project)
    project: Path
    #: the event-time field and the source's bounded out-of-orderness (ms)
    event_time_field: str
    out_of_orderness_ms: int
    max_future_ms: int
    #: the source's topic and its ``format`` options (``jobs/spec.py``'s RecordFormat)
    source_topic: str
    source_format: Any

    def where(self, *path: str | int) -> str:
        """``file:line`` of a key inside this node's options (``where("window")``)."""

    @property
    def event_time_where(self) -> str:
        """``file:line`` of the source's event-time field."""

    def field(self, stream: Stream, name: str, *path: str | int, numeric: bool = False,
              required: bool = False, what: str = "field", at: str | None = None) -> FieldType:
        """The type of ``stream``'s field ``name``, or a :class:`SpecError` at ``path`` (or ``at``)."""

    def schema(self, relative: str | None, *path: str | int) -> Any:
        """A record schema (the source's when ``relative`` is None), or a SpecError at ``path``."""


@dataclass(frozen=True)
class ExecNode:
    """One node of Flink's compiled plan, as uid assignment shows it to the kinds."""

    kind: str  # "calc", "python-calc", "group-window-aggregate", "sink", …
    text: str  # the node's JSON
    sink_table: str | None = None  # the table a sink node writes
    downstream_tables: frozenset[str] = frozenset()  # tables of every sink this node feeds

    def calls(self, function: str) -> bool:
        """Whether the node calls ``function``."""
        return f"{function}(" in self.text or json.dumps(function) in self.text


class Wiring(Protocol):
    """What the compiler gives a node writing its SQL."""

    embedded: bool  # the embedded profile (a bounded file source, results collected)
    source_topic: str
    profile: Profile  # the profile the job is compiled for (connections of the stores)

    def view(self, node_id: str, part: str) -> str:
        """The quoted name of a view a node defines; every internal name comes from here."""

    def dead_letter_select(self, step: str, path: str, error: str) -> str:
        """``SELECT <dead-letter columns>`` over a record view (``step``/``path``/``error`` are SQL)."""

    def fields_needed(self) -> tuple[tuple[str, FieldType], ...]:
        """The fields some later node reads (what a decoding step must extract)."""

    def carried(self, node_id: str) -> tuple[str, ...]:
        """The fields the view a node reads carries (besides the system columns)."""

    def unstorable(self, node_id: str) -> list[tuple[str, str, str, str]]:
        """``(step, field, predicate, reason)`` per value a sink reading ``node_id`` cannot store."""

    def source_json_field(self, node_id: str, name: str) -> bool:
        """Whether field ``name`` of the records ``node_id`` reads is, unchanged, a top-level field
        of the Kafka records' JSON (no step before it rewrites it; see StepNode.passes_fields)."""

    def nul_flagged(self, node_id: str) -> frozenset[str]:
        """The fields of the records ``node_id`` reads whose U+0000 their column ``_nul`` flags
        (NUL_COLUMN): the source's string fields, when every step between passes fields (and so
        carries the column on), minus the fields those steps add. Empty: no such column."""


@dataclass(frozen=True)
class NodeSql:
    """The SQL a node contributes."""

    views: tuple[str, ...] = ()  # CREATE TEMPORARY VIEW statements, in order
    output: str | None = None  # the (quoted) view later nodes read
    dead_letters: tuple[str, ...] = ()  # (quoted) views of dead-letter rows
    late: tuple[str, ...] = ()  # (quoted) views of late rows
    #: for the decoding step only: the SELECT over the source every output shares (the compiler
    #: makes it the view ``wiring.view(id, "checked")``; the embedded profile materializes it once)
    checked: str | None = None


class Node(ABC):
    """A planned step or sink."""

    id: str
    kind: str
    uid: str
    requirements: Requirements

    @abstractmethod
    def explain(self) -> str:
        """One line for ``headrace explain``."""

    def owns(self, node: ExecNode) -> bool:
        """Whether an operator of Flink's plan belongs to this node (it then carries our uid)."""
        return False

    def functions(self) -> tuple[str, ...]:
        """``CREATE TEMPORARY SYSTEM FUNCTION`` statements of the JVM functions it calls."""
        return ()

    def register(self, t_env: Any, wiring: Wiring) -> None:  # noqa: B027 (most nodes have none)
        """Register the functions it makes per job (Python functions, or JVM functions built
        with a spec) with a TableEnvironment (before any SQL runs)."""

    def flink_options(self) -> dict[str, str]:
        """Flink options the job needs for this node's operators (a profile's ``flink:`` may
        still override them)."""
        return {}

    def source_properties(self, wiring: Wiring) -> dict[str, str]:
        """Kafka consumer properties it adds to the job's source (the enrich step's read-ahead of
        keys); several nodes' ``interceptor.classes`` are joined."""
        return {}

    def prepare(self, profile: Profile) -> None:  # noqa: B027 (most nodes need nothing)
        """Preflight: make its store ready (create tables) or check it answers, else a ServiceError."""

    def check_environment(self, profile: Profile) -> None:  # noqa: B027 (most nodes need nothing)
        """Before a local run: what it needs of this process's environment (a key), else a HeadraceError."""

    def environment(self, profile: Profile) -> frozenset[str]:
        """The environment variables its tasks read where the job runs (a key): on Kubernetes the
        pods get them from the Secret."""
        return frozenset()

    def run_report(self, same_kind: list[Any], job: str, since: float) -> Any:
        """What ``headrace run`` prints at the end for this kind's nodes of the job (``same_kind``;
        asked once, of the first): a rich renderable, or None for nothing."""
        return None


@dataclass(kw_only=True)
class StepNode(Node):
    id: str
    kind: str
    uid: str
    output: Stream
    #: the fields of its input this step reads
    reads: tuple[str, ...] = ()
    requirements: Requirements = field(default_factory=Requirements)

    @property
    def adds(self) -> tuple[str, ...]:
        """Fields it adds to the records (an enrich step's looked-up fields)."""
        return ()

    @abstractmethod
    def sql(self, wiring: Wiring, input_view: str) -> NodeSql:
        """Views over ``input_view`` (a quoted view name; the source table for a decoding step)."""

    def explain(self) -> str:
        return self.kind

    def stored_fields(self, upstream: Stream) -> dict[str, FieldType]:
        """Record fields whose values reach its sinks as they are (checked against each store)."""
        return {}

    #: its records are the records it reads, each field unchanged (it may add fields or drop
    #: records): a later step's field can then be read from the source's own record. Such a step
    #: also carries the column ``_nul`` on when the records it reads have it
    #: (``wiring.nul_flagged(id)`` not empty; see NUL_COLUMN)
    passes_fields: ClassVar[bool] = False

    #: it changes what every output of the job carries (the mask step masks dead-letter and late
    #: payloads and errors, whether a record was refused before it or after it)
    rewrites_outputs: ClassVar[bool] = False

    def rewrite_outputs(self, same_kind: list[StepNode], payload: str, error: str, wiring: Wiring,
                        unparseable: str) -> tuple[str, str]:
        """``(payload, error)`` SQL of every dead-letter and late record, changed by this kind's
        steps of the job (``same_kind``; called once, on the first). ``unparseable``: the job's
        ``dead_letter.payload`` setting."""
        return payload, error

    def output_functions(self) -> tuple[str, ...]:
        """The JVM functions ``rewrite_outputs`` calls."""
        return ()


@dataclass(frozen=True)
class SourceDecoding:
    """What the source decodes of each record, in the source task (``headrace-source``): the JVM
    decoder (``function``, a class of ``operators/java``, and its ``spec`` literal) giving the
    error path and message, the event time, and ``fields`` in order (the source's columns
    ``_f_<name>``; none when the records are checked later, in Python)."""

    function: str
    spec: str
    fields: tuple[tuple[str, FieldType], ...] = ()


def nul_flags(fields: tuple[tuple[str, FieldType], ...]) -> dict[str, int]:
    """The decoded fields the source also flags in its column ``_nul`` (NUL_COLUMN), its string
    fields, by name, with their index in ``fields``: the column is NULL when none of them holds
    U+0000, else ``,i,`` for each that does (``,0,3,`` for two). A decoding step whose source
    decodes ``fields`` carries the column on; :func:`holds_nul` tests it."""
    return {name: i for i, (name, ftype) in enumerate(fields) if ftype is FieldType.STRING}


def holds_nul(fields: tuple[tuple[str, FieldType], ...], name: str) -> str | None:
    """SQL true exactly when field ``name`` of the source's ``fields`` holds U+0000, from the
    source's flags (NUL_COLUMN); None when the source does not flag it."""
    index = nul_flags(fields).get(name)
    return None if index is None else f"(POSITION(',{index},' IN `{NUL_COLUMN}`) > 0)"


@dataclass(kw_only=True)
class DecodingNode(StepNode):
    """The role of a step whose kind ``decodes``: the first step, reading the source's raw
    records (``_payload``). It tells the source how to decode them (:class:`SourceDecoding`:
    the event time its watermark and the late judgement's per-partition maximum ``_max_seen``
    follow, and the fields later nodes read) and turns the source's columns into the records
    later steps read, refused records into dead letters."""

    #: the source's record schema (``path``: the file it came from)
    schema: Any

    @property
    @abstractmethod
    def binary_payloads(self) -> bool:
        """Whether the source's records are bytes, not text (dead letters carry them in base64)."""

    @abstractmethod
    def source_decoding(self, wiring: Wiring) -> SourceDecoding:
        """How the source decodes each record for this job (``wiring.fields_needed()``: what to extract)."""


@dataclass(kw_only=True)
class ViewNode(StepNode):
    """The role of a step whose kind ``emits`` a view: only sinks read its rows, and it judges
    lateness with its own allowance (its late records go to the late output)."""

    allowed_lateness_ms: int = 0
    #: filled by the planner: the Flink tables of the sinks storing this view (uid ownership)
    sink_tables: frozenset[str] = frozenset()

    @property
    def judged_by(self) -> str:
        """The step whose late judgement its records passed (itself, unless it reads a view)."""
        return self.id


@dataclass(kw_only=True)
class SinkNode(Node):
    id: str
    kind: str
    uid: str
    view: ViewDef
    requirements: Requirements = field(default_factory=Requirements)

    def unstorable(self, column_sql: str, ftype: FieldType, holds_nul: str | None = None) -> tuple[str, str] | None:
        """``(predicate, reason)`` for values of a column this store cannot hold, or None.
        ``holds_nul``, when given, is a predicate true exactly when the column's value holds
        U+0000, which the source computed (see NUL_COLUMN): cheaper than reading the value."""
        return None

    def unstorable_time(self, ms_sql: str) -> tuple[str, str] | None:
        """``(predicate, reason)`` for event times (epoch ms) whose windows this store cannot hold."""
        return None

    @property
    def ranks_by(self) -> str | None:
        """A measure the store also ranks each window's keys by (served as ``/top``), if any."""
        return None

    @abstractmethod
    def table_ddl(self, profile: Profile) -> str:
        """``CREATE TEMPORARY TABLE <flink_table>`` the rows go to (a service profile)."""

    def insert_sql(self, input_view: str) -> str:
        """The statement storing the rows of ``input_view``."""
        return f"INSERT INTO `{self.flink_table}` SELECT * FROM {input_view}"

    def reachable(self, profile: Profile) -> str | None:
        """A phrase when the store does not answer now (for the progress line), else None."""
        return None

    def stored_rows(self, profile: Profile) -> int | None:
        """How many rows the store holds for this view now (the progress line), if it can tell."""
        return None

    def owns(self, node: ExecNode) -> bool:
        return node.kind == "sink" and node.sink_table == self.flink_table

    @property
    def flink_table(self) -> str:
        """The Flink table this sink writes (named by the node id, so unique in the job)."""
        return "hr_" + self.id.replace(".", "_").replace("-", "_")


class StepKind(ABC):
    """A step kind: the YAML key ``name``, its ``options`` model, the profile sections it reads
    (``sections``), and planning."""

    name: ClassVar[str]
    options: ClassVar[type[StepOptions]]
    sections: ClassVar[tuple[type[Section], ...]] = ()
    #: a decoding step reads the source's raw records (it must come first)
    decodes: ClassVar[bool] = False
    #: what it emits: "records" (later steps may read them) or "view" (only sinks read it)
    emits: ClassVar[str] = "records"

    #: it may read the rows of a view step (``from:`` naming one): see :meth:`plan_from_view`
    reads_views: ClassVar[bool] = False

    @abstractmethod
    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> StepNode:
        """Check the options against the upstream stream; a SpecError (at ``ctx.where``) if wrong."""

    def plan_from_view(self, options: Any, ctx: PlanContext, view: ViewNode, records: Stream, node_id: str,
                       uid: str) -> StepNode:
        """Plan a step reading the rows of ``view`` (``records``: what that step read), for kinds
        that ``reads_views``."""
        raise NotImplementedError


class SinkKind(ABC):
    """A sink kind: stores the rows of a view. ``sections``: the profile sections naming its store
    (``redis:``), each a :class:`Section` model; ``reader``: how ``headrace serve`` reads it."""

    name: ClassVar[str]
    options: ClassVar[type[SinkOptions]]
    sections: ClassVar[tuple[type[Section], ...]] = ()

    @abstractmethod
    def place(self, options: Any, upstream: Stream) -> str:
        """The name of what it writes (a table, a key prefix, a measurement): the view's name in
        its store. The planner gives the sink the id ``sink.<kind>.<place>`` and its uid."""

    @abstractmethod
    def plan(self, options: Any, ctx: PlanContext, upstream: Stream, node_id: str, uid: str) -> SinkNode:
        """``upstream.view`` is the view it stores; ``node_id`` and ``uid`` are the planner's."""

    def reader(self, profile: Profile, timeout_ms: int) -> Any:
        """What reads this kind's views for ``headrace serve`` under a service ``profile`` (see
        ``connectors/serving/stores.py``, ``ViewReader``), or None when the profile lacks its store."""
        return None

    @staticmethod
    def named_view(upstream: Stream, name: str) -> ViewDef:
        assert upstream.view is not None
        return replace(upstream.view, name=name)


class FormatKind(ABC):
    """A source format: the key ``source.format`` names it by (``avro: schemas/x.avsc``), the
    other keys it takes, its schema file's loader, the registry's name for its schemas, its
    compatibility rules (which the registry and ``headrace schema`` apply by schema type), and how
    a producer would write a record (``headrace generate``). One module holds it;
    ``jobs/registry.py`` lists it. Its schema object (what ``load`` returns) carries the rest:
    field types, and for a binary format ``decoding()`` (the JVM decoder's spec).
    """

    name: ClassVar[str]
    #: the schema type of the Confluent registry's API (``JSON``, ``AVRO``, ``PROTOBUF``)
    schema_type: ClassVar[str]
    #: schema files it reads (``headrace schema`` picks the format of a bare file by these)
    suffixes: ClassVar[tuple[str, ...]]
    #: what ``name: <...>`` names, for messages
    file_hint: ClassVar[str] = "schema file"
    #: records are bytes, not text (so dead letters carry them in base64)
    binary: ClassVar[bool] = True
    #: its records are JSON objects whose fields are the record's (a reader can find a field in the
    #: bytes, as the enrich step's read-ahead of keys does)
    json_objects: ClassVar[bool] = False
    #: other keys of ``source.format`` it takes: name -> (pydantic field type, Field(...), hint)
    keys: ClassVar[dict[str, tuple[Any, Any, str]]] = {}

    @abstractmethod
    def load(self, path: Path, options: dict[str, Any]) -> Any:
        """The schema in ``path`` (``options``: this kind's keys); ``SchemaFileError`` if wrong."""

    @abstractmethod
    def encoder(self, schema: Any) -> Any:
        """``record dict -> bytes`` as a producer writes it (no framing); raises ``ValueError`` or
        ``TypeError`` for a record the format cannot hold."""

    def framing(self, schema: Any, schema_id: int) -> bytes:
        """The Confluent wire format's header for ``schema_id`` (Protobuf adds message indexes)."""
        return b"\x00" + schema_id.to_bytes(4, "big")

    # -- as the schema registry sees it -----------------------------------------------------------

    #: whether a schema may take parts from other subjects (Confluent's ``references``)
    takes_references: ClassVar[bool] = True

    def canonical(self, text: str) -> str:
        """The stored form of a registered schema's text (JSON schemas compact, keys in order);
        ``ValueError`` when it is not one."""
        return json.dumps(json.loads(text), separators=(",", ":"))

    def parse(self, text: str, referenced: dict[str, str]) -> Any:
        """A registered schema's text as :meth:`incompatibilities` takes it, with the schemas its
        references name (``{name: text}``); ``ValueError`` when it is not one."""
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None

    @abstractmethod
    def incompatibilities(self, writer: Any, reader: Any, reader_is_old: bool = False) -> list[str]:
        """Why records written with ``writer`` cannot be read with ``reader`` (parsed schemas), one
        reason per change (empty: they can); ``reader_is_old`` when the reader is the older version."""

    @abstractmethod
    def fields(self, parsed: Any) -> dict[str, str]:
        """``{field path: how it is declared}`` of a parsed schema, for ``headrace schema diff``."""
