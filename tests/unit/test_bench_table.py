"""The benchmark's table: CPU ratios to the fastest and to the leanest baseline, short job names
with a legend, the gateway threads' CPU as the machine-speed control."""

from __future__ import annotations

import io
import math

from rich.console import Console

from tests.bench.run import Cell, leanest, stronger, throughput_table


def render(table: object) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(table)
    return out.getvalue()


def cells() -> dict[tuple[str, int], Cell]:
    # (a′) is the fastest by events/s, (a′)-JIT takes the least CPU per event: the case of 2026-12-07
    return {("framework", 1): Cell("framework", 1, 3_000_000, [109_000, 112_000, 106_000], [24.4, 24.0, 25.0],
                                   gateway=[13.7, 12.0, 12.5], running=[15.0, 15.2, 14.8]),
            ("sql-tvf", 1): Cell("sql-tvf", 1, 3_000_000, [128_000, 137_000, 120_000], [21.5, 21.0, 22.0],
                                 gateway=[8.9, 8.5, 9.0], running=[13.0, 12.8, 13.4]),
            ("sql-tvf-jit", 1): Cell("sql-tvf-jit", 1, 3_000_000, [124_000, 143_000, 115_000], [18.6, 18.0, 19.0],
                                     gateway=[9.3, 8.1, 8.8], running=[12.5, 12.0, 13.1])}


def row_of(text: str, name: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("│ " + name + " "))
    return [c.strip() for c in line.strip("│").split("│")]


def test_cpu_is_compared_with_the_fastest_and_with_the_leanest_baseline() -> None:
    group = cells()
    assert stronger(group, 1) is group[("sql-tvf", 1)]
    assert leanest(group, 1) is group[("sql-tvf-jit", 1)]
    text = render(throughput_table("t", group, {}))
    head = [c.strip() for c in next(x for x in text.splitlines() if "job" in x).strip("┃").split("┃")]
    row = dict(zip(head, row_of(text, "Headrace"), strict=True))
    assert row["× stronger SQL"] == "0.85"  # 109,000 / 128,000
    assert row["CPU × stronger"] == "1.13"  # 24.4 / 21.5
    assert row["CPU × leanest"] == "1.31"  # 24.4 / 18.6
    assert row["CPU-s/M running"] == "15.0"
    assert row["running × leanest"] == "1.20"  # 15.0 / 12.5, (a′)-JIT's median while running
    assert row["gateway CPU-s"] == "13.7 12.0 12.5"
    assert "event→row p50 / p99" not in head  # no latency runs, no empty latency columns


def test_short_names_have_a_legend_and_latency_columns_come_with_latency_runs() -> None:
    lat = {"framework": {"p50": 3.4, "p99": 6.0, "close_p50": 0.09, "close_p99": 0.187}}
    group = {k: c for k, c in cells().items()}
    for c in group.values():
        c.gateway = []
    text = render(throughput_table("t", group, lat))
    assert "gateway CPU-s" not in text  # threads not sampled
    assert "close→row p50 / p99" in text
    assert row_of(text, "(a′)-JIT")[0] == "(a′)-JIT"
    assert "(a′)-JIT: (a′) with Headrace's JIT thresholds" in text  # the legend under the table
    assert "Headrace: Headrace (jobs/page_activity.yaml)" in text


def test_a_failed_baseline_is_left_out_of_both_ratios() -> None:
    group = cells()
    group[("sql-tvf-jit", 1)].rates = [math.nan] * 3
    assert leanest(group, 1) is group[("sql-tvf", 1)]
