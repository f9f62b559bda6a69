"""The comparison chart: per-class IoU of several results side by side, flagged classes marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from vocseg.evaluation.charts import figure, nan_value, save_figure

if TYPE_CHECKING:
    from vocseg.reports.compare import Comparison


def compare_chart_title(comparison: Comparison) -> str:
    """The chart's title: which markers mean what, or that nothing is flagged."""
    legend = comparison.flag_legend()
    if not legend:
        return "Per-class IoU; no class flagged"
    return "Per-class IoU; red classes are flagged (" + ", ".join(f"{m}: {d}" for m, d in legend.items()) + ")"


def compare_chart(comparison: Comparison, path: Path, *, force: bool = False) -> Path:
    """Grouped per-class IoU bars, one colour per result; flagged classes marked on the axis."""
    import numpy as np

    runs = comparison.runs
    classes = comparison.classes
    flagged = comparison.flagged_classes()
    n, k = len(classes), len(runs)
    fig = figure(max(12, 0.62 * n + 2), 6.4)
    ax = fig.add_axes((0.06, 0.22, 0.92, 0.64))
    width = 0.8 / k
    x = np.arange(n)
    palette = ["#2e86c1", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#7f8c8d"]
    for r, run in enumerate(runs):
        vals = [nan_value(run.per_class.get(c, {}).get("IoU")) for c in classes]
        ax.bar(x - 0.4 + width * (r + 0.5), [0 if math.isnan(v) else v for v in vals], width, color=palette[r % len(palette)], label=f"{run.label}: mIoU {run.mIoU:.2f}")
        accs = [nan_value(run.per_class.get(c, {}).get("Acc")) for c in classes]
        ax.scatter(x - 0.4 + width * (r + 0.5), accs, marker="_", s=60, color="black", zorder=3)
    labels = []
    for c in classes:
        marks = flagged.get(c, [])
        labels.append(c + (f" [{','.join(marks)}]" if marks else ""))
    ax.set_xticks(x, labels, rotation=55, ha="right", fontsize=9)
    for tick, c in zip(ax.get_xticklabels(), classes):
        if c in flagged:
            tick.set_color("#c0392b")
            tick.set_fontweight("bold")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("IoU % (bars); Acc % (black ticks)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=9, ncol=min(k, 3), frameon=False)
    fig.suptitle(compare_chart_title(comparison), fontsize=11, y=0.98)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, force=force)
