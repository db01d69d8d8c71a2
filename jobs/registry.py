"""Every step kind, sink kind and source format Headrace knows, by the name a job spec uses.

Adding a kind is its module plus one line here (see README, "Adding a step, sink or format").
"""

from __future__ import annotations

from headrace.connectors.influx import Influx
from headrace.connectors.postgres import Postgres
from headrace.connectors.redis import Redis
from headrace.operators.aggregate import Aggregate
from headrace.operators.avro import AvroFormat
from headrace.operators.enrich import Enrich
from headrace.operators.mask import Mask
from headrace.operators.protobuf import ProtobufFormat
from headrace.operators.validate import Validate
from headrace.schemas.jsonschema import JsonFormat
from headrace.schemas.kinds import FormatKind, SinkKind, StepKind

STEPS: dict[str, StepKind] = {kind.name: kind for kind in (Validate(), Enrich(), Mask(), Aggregate())}
SINKS: dict[str, SinkKind] = {kind.name: kind for kind in (Postgres(), Redis(), Influx())}
FORMATS: dict[str, FormatKind] = {kind.name: kind for kind in (JsonFormat(), AvroFormat(), ProtobufFormat())}
