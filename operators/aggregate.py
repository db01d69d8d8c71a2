"""``aggregate``: windowed aggregation on event time, compiled to Flink SQL group windows.

Flink SQL's group windows (``TUMBLE``/``HOP``/``SESSION``) run in the JVM, so no Python touches
the per-record window state. Allowed lateness uses Flink's late firing: a window emits when the
watermark passes its end, then re-emits (an upsert) for every record that arrives within
``allowed_lateness``.

A record is *late* when its event time is at or behind ``W - allowed_lateness``, where ``W`` is
the watermark of its own source partition computed with every record: the largest event time
read from that partition so far (this record included) minus ``max_out_of_orderness`` minus
1 ms (see :func:`late_condition`). Late records never reach the window operator but go to the
late output, so none is dropped. Flink's own watermark (the minimum over partitions, emitted
periodically) is never ahead of ``W``, so the window operator never drops a record that was
judged on time; and since ``W`` depends only on the partition's records in offset order, and the
largest event time is kept in checkpointed state, a replay or a restore judges every record
as the first run did.

The plain-Python :func:`assign_windows` is the reference semantics used by tests.
"""

from __future__ import annotations

from headrace.operators.measures import Measure
from headrace.schemas.durations import sql_interval


def window_sql(kind: str, time_col: str, size_ms: int, slide_ms: int | None = None,
               gap_ms: int | None = None) -> tuple[str, str, str]:
    """``(GROUP BY window, start expr, end expr)`` for a Flink SQL group window."""
    if kind == "tumbling":
        args = f"{time_col}, {sql_interval(size_ms)}"
        fn = "TUMBLE"
    elif kind == "sliding":
        assert slide_ms is not None
        args = f"{time_col}, {sql_interval(slide_ms)}, {sql_interval(size_ms)}"
        fn = "HOP"
    else:
        assert gap_ms is not None
        args = f"{time_col}, {sql_interval(gap_ms)}"
        fn = "SESSION"
    return f"{fn}({args})", f"{fn}_START({args})", f"{fn}_END({args})"


def watermark_of(max_seen_col: str, out_of_orderness_ms: int) -> str:
    """A partition's watermark (epoch ms) given its largest event time: bounded out-of-orderness."""
    return f"({max_seen_col} - {out_of_orderness_ms + 1})"


def late_condition(time_col: str, max_seen_col: str, out_of_orderness_ms: int, lateness_ms: int) -> str:
    """SQL predicate, TRUE for a late record; both columns are epoch ms (BIGINT), ``max_seen_col``
    the largest event time of the record's partition so far, the record included."""
    return f"({time_col} <= {max_seen_col} - {out_of_orderness_ms + 1 + lateness_ms})"


def is_late(ts_ms: int, max_seen_ms: int, out_of_orderness_ms: int, lateness_ms: int) -> bool:
    """The same rule in plain Python (``max_seen_ms`` includes this record).

    >>> is_late(1_000, 1_000, 0, 0), is_late(999, 1_000, 0, 0), is_late(94_999, 100_000, 5_000, 0)
    (False, True, True)
    """
    return ts_ms <= max_seen_ms - out_of_orderness_ms - 1 - lateness_ms


def measure_columns(measures: tuple[Measure, ...]) -> list[str]:
    return [f"{m.sql()} AS `{m.name}`" for m in measures]


def assign_windows(ts_ms: int, kind: str, size_ms: int, slide_ms: int | None = None) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` (epoch ms) that a record at ``ts_ms`` belongs to.

    Session windows depend on neighbouring records, so they are not assigned here.

    >>> assign_windows(61_000, "tumbling", 60_000)
    [(60000, 120000)]
    >>> assign_windows(61_000, "sliding", 120_000, 60_000)
    [(0, 120000), (60000, 180000)]
    """
    if kind == "tumbling":
        start = ts_ms - ts_ms % size_ms
        return [(start, start + size_ms)]
    if kind == "sliding":
        assert slide_ms is not None
        last = ts_ms - ts_ms % slide_ms
        starts = range(last - size_ms + slide_ms, last + 1, slide_ms)
        return [(s, s + size_ms) for s in starts]
    raise ValueError("session windows are assigned by merging, not per record")


def merge_sessions(timestamps: list[int], gap_ms: int) -> list[tuple[int, int]]:
    """Session windows ``[first, last + gap)`` over one key's event times (reference semantics).

    >>> merge_sessions([0, 10, 100], 50)
    [(0, 60), (100, 150)]
    """
    sessions: list[tuple[int, int]] = []
    for ts in sorted(timestamps):
        if sessions and ts < sessions[-1][1]:
            sessions[-1] = (sessions[-1][0], max(sessions[-1][1], ts + gap_ms))
        else:
            sessions.append((ts, ts + gap_ms))
    return sessions
