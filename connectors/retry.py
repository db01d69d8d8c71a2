"""Bounded exponential backoff with jitter, shared by the sinks that write from Python."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from headrace.schemas.durations import format_duration_ms

T = TypeVar("T")


def with_backoff(attempt: Callable[[], T], *, retry_for_ms: int, transient: tuple[type[BaseException], ...],
                 what: str, first_delay_s: float = 0.2, max_delay_s: float = 5.0) -> T:
    """``attempt()`` until it succeeds; a transient error is retried after 0.2, 0.4, … (at most
    ``max_delay_s``) seconds, each shortened by up to half at random so that writers do not retry
    in step. Past ``retry_for_ms`` it raises one line naming ``what`` and the last error, and the
    job fails over to its last checkpoint.

    >>> calls = []
    >>> with_backoff(lambda: calls.append(1) or len(calls), retry_for_ms=1000, transient=(OSError,), what="x")
    1
    """
    deadline = time.monotonic() + retry_for_ms / 1000
    delay = first_delay_s
    while True:
        try:
            return attempt()
        except transient as exc:
            if time.monotonic() + delay > deadline:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise RuntimeError(f"{what} did not answer for {format_duration_ms(retry_for_ms)}: "
                                   f"{type(exc).__name__}: {detail}") from None
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, max_delay_s)
