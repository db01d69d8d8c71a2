"""The benchmark's figures as a picture (``.headrace/bench/bench.png``): events/s per job and
parallelism (median, with each run as a dot), and the latency distributions of the live runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    latency = {k: v for k, v in results.get("latency", {}).items() if v.get("close_to_row")}
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(14 if latency else 8, 5), squeeze=False)
    left = axes[0][0]
    labels = [f"{c['kind']}\np={c['parallelism']}" for c in cells]
    left.bar(range(len(cells)), [c["rate"] for c in cells], color=["#1f77b4" if c["kind"].startswith("framework")
                                                                  else "#aaaaaa" for c in cells])
    for i, c in enumerate(cells):
        left.scatter([i] * len(c["rates"]), c["rates"], color="black", s=10, zorder=3)
    left.set_xticks(range(len(cells)), labels, fontsize=8)
    left.set_ylabel("events/s (median of runs; dots: each run)")
    left.set_title(f"throughput, {results['events']:,} events ({results['date']})")
    if latency:
        right = axes[0][1]
        for kind, values in latency.items():
            for key, style, what in (("close_to_row", "-", "window close"), ("event_to_row", ":", "event"),
                                     ("watermark_to_row", "--", "watermark past the end")):
                xs = sorted(v * 1000 for v in values.get(key, []))
                if xs:
                    right.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], style, label=f"{kind}: {what} → row")
        right.axvline(200, color="red", linewidth=0.8)
        right.set_xscale("log")
        right.set_xlabel("ms (log scale); red: 200 ms")
        right.set_ylabel("fraction of windows / events")
        right.set_title(f"latency at {results['rate']:,} events/s")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
