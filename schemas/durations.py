"""Durations as users write them in specs: ``500ms``, ``10s``, ``1m``, ``2h``, ``1d``."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|min|m|h|d)\s*$")


def parse_duration_ms(value: object) -> int:
    """Milliseconds in a duration string.

    >>> parse_duration_ms("1m"), parse_duration_ms("30s"), parse_duration_ms("250ms")
    (60000, 30000, 250)
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit such as '10s' or '1m', got {value!r}")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a duration; write e.g. '500ms', '10s', '1m', '2h' or '1d'")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_duration_ms(ms: int) -> str:
    """Shortest exact spelling of a duration: 60000 -> '1m'."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


#: the longest duration :func:`sql_interval` writes (its day field holds two digits)
MAX_INTERVAL_MS = 100 * 86_400_000


def sql_interval(ms: int) -> str:
    """A Flink SQL interval literal for ``ms`` milliseconds (up to 99 days).

    ``INTERVAL 'n' SECOND`` only holds two digits (SECOND(2)), so every duration is written
    day-to-second: 2 minutes is ``INTERVAL '0 00:02:00.000' DAY TO SECOND(3)``.

    >>> sql_interval(120_000), sql_interval(1_500)
    ("INTERVAL '0 00:02:00.000' DAY TO SECOND(3)", "INTERVAL '0 00:00:01.500' DAY TO SECOND(3)")
    """
    if not 0 <= ms < MAX_INTERVAL_MS:
        raise ValueError(f"durations must be between 0 and 99 days, got {ms} ms")
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"
