"""A Python user-defined aggregate: one pandas Series per field, a window's values; one value back.

In a job: ``score: udaf(headrace.operators.examples.scores.weighted_score, latency_ms, bytes)``
(your own: ``udaf(mypkg.aggs.weighted_score, ...)``, with ``mypkg/`` in the job's project).
"""

from __future__ import annotations

import pandas as pd


def weighted_score(latency_ms: pd.Series, bytes: pd.Series) -> float:  # noqa: A002 (the field's name)
    """The mean latency weighted by the bytes of each record (records without bytes weigh 0);
    the plain mean when no record has bytes."""
    known = latency_ms.notna()  # a record without a latency does not count
    latency = latency_ms[known].astype("float64")
    weight = bytes[known].fillna(0).astype("float64")
    total = float(weight.sum())
    return float((latency * weight).sum() / total) if total > 0 else float(latency.mean())


def slow_share(latency_ms: pd.Series) -> float:
    """The share of records slower than 500 ms."""
    return float((latency_ms > 500).mean())
