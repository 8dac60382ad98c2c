"""Plots of protocol results: accuracy against resolution (the picture people look at first in LRFR), ROC and
CMC curves. Every function writes one PNG atomically and returns False when there is nothing to draw."""

from __future__ import annotations

import io
import math
import pathlib
import re
from typing import Any, Sequence

from .atomic import atomic_write_bytes

#: (label, [(size_px, accuracy, spread), ...]) for one line of an accuracy-vs-resolution plot.
Series = tuple[str, list[tuple[int, float, float]]]


def _pixels(label: str) -> int | None:
    match = re.fullmatch(r"(\d+)(px)?", str(label))
    return int(match.group(1)) if match else None


def resolution_points(evaluation: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(size, accuracy, std) of a protocol result whose rows are resolutions ('112px', ...), largest first."""
    points = [(_pixels(r.get("resolution", "")), r.get("accuracy"), r.get("sem", r.get("std", 0.0)) or 0.0)
              for r in evaluation.get("rows", [])]
    return sorted([p for p in points if p[0] is not None and p[1] is not None], reverse=True)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: pathlib.Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_resolution_series(series: Sequence[Series], path: pathlib.Path, title: str,
                           xlabel: str = "face resolution (px, both images degraded)") -> bool:
    """One line per series (a protocol, or a method in a report), error bars from its std, values annotated."""
    series = [(name, points) for name, points in series if points]
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    annotate = len(series) <= 2
    values = [{x: y for x, y, _ in points} for _, points in series]
    for index, (name, points) in enumerate(series):
        sizes, accuracy, spread = zip(*points)
        line = ax.errorbar(sizes, accuracy, yerr=spread, marker="o", capsize=3, label=name)
        if annotate:  # the higher of two lines is labelled above its point, the lower below: close lines stay legible
            other = values[1 - index] if len(series) == 2 else {}
            for x, y in zip(sizes, accuracy):
                above = x not in other or y > other[x] or (y == other[x] and index == 0)
                ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 7) if above else (0, -13),
                            ha="center", fontsize=8, color=line[0].get_color())
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    all_sizes = sorted({x for _, pts in series for x, _, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_sizes, [str(s) for s in all_sizes])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_ylim(0.45, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("verification accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)
    return True


def plot_gain_series(series: Sequence[Series], path: pathlib.Path, title: str, reference: str) -> bool:
    """Accuracy minus ``reference``'s against resolution, one line per method with its std as error bars, the lines
    a little apart so the bars stay readable, the legend beside the axes."""
    series = [(name, points) for name, points in series if points]
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 4.4), dpi=120)
    for i, (name, points) in enumerate(series):
        sizes, gain, spread = zip(*points)
        ax.errorbar([x * (1 + 0.03 * (i - len(series) / 2)) for x in sizes], gain, yerr=spread, marker="o", capsize=3,
                    label=name)
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1, label=reference)
    all_sizes = sorted({x for _, pts in series for x, _, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_sizes, [str(s) for s in all_sizes])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("face resolution (px, both images degraded)")
    ax.set_ylabel(f"accuracy minus {reference}'s (same seed)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def plot_accuracy_vs_resolution(evaluations: list[dict[str, Any]], path: pathlib.Path, title: str, *,
                                before_finetune: Sequence[dict[str, Any]] = ()) -> bool:
    """A run's (or one evaluation's) accuracy against resolution, one line per protocol; with ``before_finetune``,
    the starting model's line beside each fine-tuned one."""
    if not before_finetune:
        return plot_resolution_series([(ev["protocol"], resolution_points(ev)) for ev in evaluations], path, title)
    series = [(f"{ev['protocol']}, before fine-tuning", resolution_points(ev)) for ev in before_finetune]
    series += [(f"{ev['protocol']}, fine-tuned", resolution_points(ev)) for ev in evaluations]
    return plot_resolution_series(series, path, title)


def plot_curve_panels(panels: Sequence[tuple[str, Sequence[tuple[str, dict[str, list[float]]]]]],
                      path: pathlib.Path, title: str, *, kind: str) -> bool:
    """A grid of panels (e.g. one per resolution or distance), one curve per method in each.

    ``kind`` "roc": curves {"fpr", "tpr"} on a log-FAR axis; "cmc": curves {"rank", "rate"}.
    """
    panels = [(name, curves) for name, curves in panels if curves]
    if not panels:
        return False
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), dpi=110, squeeze=False)
    for ax, (name, curves) in zip(axes.flat, panels):
        for label, curve in curves:
            if kind == "roc":
                ax.plot(curve["fpr"], curve["tpr"], label=label)
            else:
                ax.plot(curve["rank"], curve["rate"], marker=".", label=label)
        if kind == "roc":
            ax.set_xscale("log")
            ax.set_xlim(1e-3, 1.0)
            ax.set_xlabel("false accept rate")
            ax.set_ylabel("true accept rate")
        else:
            ax.set_xlabel("rank")
            ax.set_ylabel("identification rate")
        ax.set_ylim(0.0, 1.02)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    _save(fig, path)
    return True
