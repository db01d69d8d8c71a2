"""The dead-letter record: what failed, where it came from, and the raw payload.

Dead letters and late records share this shape, so one consumer can read both:

=================  =======================================================
source_topic       topic (or file) the record was read from
source_partition   partition (NULL for a file)
source_offset      offset in that partition (NULL for a file)
step               step id that refused it (``validate``) or ``aggregate`` for late
error_path         JSON Pointer into the record (``/latency_ms``), ``/`` for the whole
error              what was wrong, or ``late: ...``
payload            the raw record as read
failed_at          when Headrace refused it (UTC)
=================  =======================================================
"""

from __future__ import annotations

COLUMNS: tuple[tuple[str, str], ...] = (
    ("source_topic", "STRING"),
    ("source_partition", "INT"),
    ("source_offset", "BIGINT"),
    ("step", "STRING"),
    ("error_path", "STRING"),
    ("error", "STRING"),
    ("payload", "STRING"),
    ("failed_at", "TIMESTAMP_LTZ(3)"),
)
