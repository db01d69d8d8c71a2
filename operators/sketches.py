"""Reading a view's kept sketches (``keep_sketch: true``) in plain Python: the bytes
``operators/java/.../Sketches.java`` writes, as every store serves them (base64 text; PostgreSQL
``bytea``). So a sketch stored per minute can be read, or merged, outside the job too.

- ``dd`` (a percentile's): (int bucket, long count) pairs, big-endian, in value order; bucket ``k``
  of a positive value stands for ``2·γ^(k - 2^20) / (γ + 1)`` with ``γ = 1.01/0.99``.
- ``hll`` (an approx_count_distinct's): a first byte 1 and up to 1,024 sorted 64-bit hashes
  (exact), or a first byte 2 and 2^14 one-byte HyperLogLog registers.

>>> one = struct.pack(">iq", (1 << 20) + 231, 3)   # three values near 100
>>> round(quantile(one, 0.95), 3), distinct_count(bytes([1]) + bytes(16))
(100.495, 2)
"""

from __future__ import annotations

import base64
import math
import struct

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
M = 1 << 14
_SHIFT = 1 << 20


def _bytes(sketch: bytes | str) -> bytes:
    return base64.b64decode(sketch) if isinstance(sketch, str) else bytes(sketch)


def value_of(index: int) -> float:
    """The value a DDSketch bucket stands for (Sketches.valueOf)."""
    if index == 0:
        return 0.0
    k = index - _SHIFT if index > 0 else -index - _SHIFT
    magnitude = 2 * GAMMA ** k / (GAMMA + 1)
    return magnitude if index > 0 else -magnitude


def buckets(sketch: bytes | str) -> list[tuple[int, int]]:
    """A ``dd`` sketch's (bucket, count) pairs, in value order."""
    data = _bytes(sketch)
    return [struct.unpack_from(">iq", data, i) for i in range(0, len(data) - len(data) % 12, 12)]


def quantile(sketch: bytes | str, q: float) -> float | None:
    """The q-quantile of a ``dd`` sketch, as the job reads it (None for an empty sketch)."""
    pairs = buckets(sketch)
    total = sum(count for _, count in pairs)
    if not total:
        return None
    rank, seen = math.floor(q * (total - 1)), 0
    for index, count in pairs:
        seen += count
        if seen > rank:
            return value_of(index)
    return value_of(pairs[-1][0])


def distinct_count(sketch: bytes | str) -> int:
    """An ``hll`` sketch's distinct count, as the job reads it."""
    data = _bytes(sketch)
    if not data:
        return 0
    if data[0] == 1:
        return (len(data) - 1) // 8
    registers = struct.unpack_from(f">{M}b", data, 1)
    total = sum(math.ldexp(1.0, -r) for r in registers)
    zeros = registers.count(0)
    alpha = 0.7213 / (1 + 1.079 / M)
    estimate = alpha * M * M / total
    if estimate <= 2.5 * M and zeros > 0:
        estimate = M * math.log(M / zeros)
    return math.floor(estimate + 0.5)  # Java's Math.round
