"""The job's source table: ``headrace-source`` (``operators/java/.../connectors/RecordSource.java``).

It reads through Flink's own connector (``kafka``, or ``filesystem`` for the embedded profile)
and, in the source task, decodes each record once (the decoding step's JVM decoder), gives the
watermark its event time per partition, and adds the largest event time its partition has had
so far (``_max_seen``, kept with the offsets in checkpoints), from which every aggregate judges
lateness without a shuffle or keyed state.
"""

from __future__ import annotations

from headrace.connectors.sqltext import ident, with_options
from headrace.schemas.kinds import NUL_COLUMN, SourceDecoding, nul_flags


def decoded_source_ddl(table: str, *, delegate: str, options: dict[str, str], decoding: SourceDecoding,
                       out_of_orderness_ms: int, idle_timeout_ms: int | None = None, base64: bool = False) -> str:
    """A ``headrace-source`` table reading through ``delegate`` (``kafka``, ``filesystem``): the
    system columns, then the decoding's error columns and fields (see SYSTEM_COLUMNS), then, when
    it has string fields, their NUL flags (NUL_COLUMN)."""
    own = {"connector": "headrace-source", "headrace.delegate": delegate, "headrace.decoder": decoding.function,
           "headrace.spec": decoding.spec, "headrace.out-of-orderness-ms": str(out_of_orderness_ms)}
    if idle_timeout_ms:
        own["headrace.idle-timeout-ms"] = str(idle_timeout_ms)
    if base64:
        own["headrace.base64"] = "true"
    columns = ["`_payload` STRING", "`_partition` INT", "`_offset` BIGINT", "`_event_ms` BIGINT NOT NULL",
               "`_event_time` TIMESTAMP_LTZ(3) NOT NULL", "`_max_seen` BIGINT NOT NULL", "`_valid` BOOLEAN NOT NULL",
               "`_err_path` STRING", "`_err_msg` STRING"]
    columns += [f"{ident('_f_' + name)} {ftype.flink_sql}" for name, ftype in decoding.fields]
    flagged = nul_flags(decoding.fields)
    if flagged:
        own["headrace.nul-fields"] = ",".join(str(i) for i in flagged.values())
        columns.append(f"{ident(NUL_COLUMN)} STRING")
    columns += ["WATERMARK FOR `_event_time` AS SOURCE_WATERMARK()"]
    body = ",\n  ".join(columns)
    return f"CREATE TEMPORARY TABLE {ident(table)} (\n  {body}\n) {with_options({**own, **options})}"
