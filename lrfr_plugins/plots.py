"""Plots of protocol results: accuracy against resolution, the picture people look at first in LRFR."""

from __future__ import annotations

import io
import pathlib
import re
from typing import Any

from .engine.checkpoint import atomic_write_bytes


def _pixels(label: str) -> int | None:
    match = re.fullmatch(r"(\d+)px", str(label))
    return int(match.group(1)) if match else None


def plot_accuracy_vs_resolution(evaluations: list[dict[str, Any]], path: pathlib.Path, title: str) -> bool:
    """One line per protocol whose rows are resolutions ('112px'...); error bars from its std. False: nothing to plot."""
    series = []
    for ev in evaluations:
        points = [(_pixels(r.get("resolution", "")), r.get("accuracy"), r.get("sem", r.get("std", 0.0)))
                  for r in ev["rows"]]
        points = [p for p in points if p[0] is not None and p[1] is not None]
        if points:
            series.append((ev["protocol"], sorted(points, reverse=True)))
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in series:
        sizes, accuracy, spread = zip(*points)
        ax.errorbar(sizes, accuracy, yerr=spread, marker="o", capsize=3, label=name)
        for x, y in zip(sizes, accuracy):
            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    all_sizes = sorted({x for _, pts in series for x, _, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_sizes, [str(s) for s in all_sizes])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_ylim(0.45, 1.02)
    ax.set_xlabel("face resolution (px, both images degraded)")
    ax.set_ylabel("verification accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True
