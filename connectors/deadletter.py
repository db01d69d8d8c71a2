"""The dead-letter record: what failed, where it came from, and the raw payload.

Dead letters and late records share this shape, so one consumer can read both:

==================  =======================================================
id                  ``topic/partition/offset`` of the source record: stable across
                    replays, so a reader drops repeats by it (it is also the Kafka key);
                    NULL for the embedded profile's files
source_topic        topic (or file) the record was read from
source_partition    partition (NULL for a file)
source_offset       offset in that partition (NULL for a file)
step                step id that refused it (``validate``), ``aggregate`` for late, or
                    ``sink.<table>`` for a value that sink cannot store
error_path          JSON Pointer into the record (``/latency_ms``), ``/`` for the whole
error               what was wrong, or ``late: ...``
payload             the raw record as read, cut to ``PAYLOAD_MAX_BYTES`` of UTF-8; for a
                    binary format (Avro) its bytes in base64, cut to as many bytes as fit
payload_bytes       length of the whole raw record in bytes
payload_sha256      SHA-256 (hex) of the whole raw record
payload_truncated   whether ``payload`` was cut
failed_at           when Headrace refused it (UTC)
==================  =======================================================

Delivery is at-least-once: after a failure a record may be dead-lettered (or judged late)
again, with the same ``id``.
"""

from __future__ import annotations

#: a dead letter must fit the producer's request size (1 MB by default) even when JSON escaping
#: grows every byte of a binary payload to six (``\\u0000``)
PAYLOAD_MAX_BYTES = 100_000

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "STRING"),
    ("source_topic", "STRING"),
    ("source_partition", "INT"),
    ("source_offset", "BIGINT"),
    ("step", "STRING"),
    ("error_path", "STRING"),
    ("error", "STRING"),
    ("payload", "STRING"),
    ("payload_bytes", "BIGINT"),
    ("payload_sha256", "STRING"),
    ("payload_truncated", "BOOLEAN"),
    ("failed_at", "TIMESTAMP_LTZ(3)"),
)
