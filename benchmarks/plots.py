"""Plot helpers shared by the suites (matplotlib with the Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

Metric = tuple[str, str, bool]  # (field, axis label, log scale)
MEMORY: Metric = ("peak_memory_mib", "peak memory above baseline (MiB)", False)
TIME: Metric = ("step_ms", "step time, median (ms)", False)


def families(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The result's variants grouped by model family, in their order of appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in result["variants"]:
        groups.setdefault(v["model"], []).append(v)
    return groups


def title(result: dict[str, Any]) -> str:
    """A figure title naming the suite, the device and whether sizes were shrunk."""
    quick = " (--quick sizes)" if result.get("quick") else ""
    return f"{result['suite']} on {result['device']}{quick}"


def save(fig: plt.Figure, path: Path) -> None:
    """Writes the figure as PNG and closes it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bar_grid(result: dict[str, Any], metrics: Sequence[Metric], path: Path) -> None:
    """One bar chart per (metric, family): rows are metrics and columns families, or, for a
    single family, one row of metrics."""
    groups = families(result)
    single = len(groups) == 1
    rows, cols = (1, len(metrics)) if single else (len(metrics), len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for col, (model, variants) in enumerate(groups.items()):
        names = [v["name"] for v in variants]
        for row, (field, label, log) in enumerate(metrics):
            ax = axes[0][row] if single else axes[row][col]
            values = [v.get(field) for v in variants]
            bars = ax.bar(names, [0 if x is None else x for x in values], color="tab:blue")
            for bar, v in zip(bars, variants):
                if v["name"] == result["reference"]:
                    bar.set_color("tab:orange")
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(model if single or row == 0 else "")
            ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{title(result)}; orange: reference `{result['reference']}`")
    save(fig, path)
