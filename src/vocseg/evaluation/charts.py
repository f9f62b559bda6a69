"""PNG charts of one evaluation result: confusion heatmap, per-class IoU bars (the comparison chart is `reports.compare_chart`).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global backend
switch), imported inside the functions so the CLI stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocseg.evaluation.eval_result import EvalResult


def figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


# Names are data: a `$` in a run, file or class name never starts mathtext (two of them crash
# the drawing: "ParseFatalException"), and no TeX runs on them.
TEXT_AS_DATA = {"text.parse_math": False, "text.usetex": False}


def names_as_text(fig: Any) -> None:
    """Every text already on `fig` drawn as written (no mathtext); texts made later (tick labels at
    drawing time) take `TEXT_AS_DATA` from the rc_context the drawing runs in."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
        text.set_usetex(False)


def save_figure(fig: Any, path: Path, *, force: bool = False) -> Path:
    """Save through `vocseg.files.atomic_writer` (recorded temporary file, renamed into place),
    with every name drawn as written (`TEXT_AS_DATA`)."""
    import matplotlib

    from vocseg.files import atomic_writer

    with atomic_writer(path, force=force) as tmp, matplotlib.rc_context(TEXT_AS_DATA):
        names_as_text(fig)
        fig.savefig(tmp, dpi=100, format="png")
    return path


def nan_value(v: Any) -> float:
    return float("nan") if v is None else float(v)


def confusion_heatmap(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path, *, title: str = "", force: bool = False) -> Path:
    """Rows: the true class, normalised to 100% (where its pixels went); columns: the predicted class."""
    return save_figure(confusion_figure(confusion, classes, title=title), path, force=force)


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str = "") -> Any:
    """The figure of `confusion_heatmap`, for callers that embed it (vocseg report)."""
    import numpy as np

    matrix = np.asarray(confusion, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)
    n = len(classes)
    fig = figure(11.5, 10)
    ax = fig.add_axes((0.15, 0.14, 0.72, 0.78))
    cmap = _cmap("Blues").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(share * 100), cmap=cmap, vmin=0, vmax=100)
    ax.set_xticks(range(n), [c for c in classes], rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(n), [f"{c}{'' if totals[i, 0] else ' (absent)'}" for i, c in enumerate(classes)], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (each row sums to 100%)")
    for i in range(n):
        for j in range(n):
            v = share[i, j] * 100
            if not math.isnan(v) and v >= 1:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v > 55 else "black")
    cax = fig.add_axes((0.89, 0.14, 0.02, 0.78))
    fig.colorbar(image, cax=cax, label="% of the true class's pixels")
    ax.set_title(title or "Normalised confusion matrix", fontsize=11)
    return fig


def _cmap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name].copy()


def iou_bar_chart(result: EvalResult, path: Path, *, title: str = "", force: bool = False) -> Path:
    """Per-class IoU bars, best first, with Acc as a dot: a dot far right of its bar means over-filled masks."""
    return save_figure(iou_bar_figure(result, title=title), path, force=force)


def iou_bar_figure(result: EvalResult, *, title: str = "") -> Any:
    """The figure of `iou_bar_chart`. The numbers (IoU, Acc) stand in two columns right of the plot
    area, where no bar, Acc dot or mIoU line can cover them."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    rows = [(name, nan_value(v.get("IoU")), nan_value(v.get("Acc"))) for name, v in result.per_class.items()]
    rows.sort(key=lambda r: math.inf if math.isnan(r[1]) else -r[1])  # best first, undefined last
    height = 0.32 * len(rows) + 1.9
    fig = figure(9, height)
    ax = fig.add_axes((0.17, 0.75 / height, 0.66, 1 - 1.75 / height))
    y = list(range(len(rows)))
    ious = [0.0 if math.isnan(r[1]) else r[1] for r in rows]
    ax.barh(y, ious, color=["#c0392b" if v < 50 else "#2e86c1" for v in ious], height=0.7)
    ax.scatter([r[2] for r in rows], y, color="black", s=14, zorder=3)
    ax.axvline(result.mIoU, color="gray", linestyle="--", linewidth=1)
    column = blended_transform_factory(ax.transAxes, ax.transData)  # x in axes fractions, y in rows
    for x, head in ((1.07, "IoU"), (1.19, "Acc")):
        ax.text(x, -0.9, head, transform=column, ha="right", va="center", fontsize=8, fontweight="bold", clip_on=False)
    for yi, (_, iou, acc) in zip(y, rows):
        ax.text(1.07, yi, "n/a" if math.isnan(iou) else f"{iou:.1f}", transform=column, ha="right", va="center", fontsize=8, clip_on=False)
        ax.text(1.19, yi, "n/a" if math.isnan(acc) else f"{acc:.1f}", transform=column, ha="right", va="center", fontsize=8, color="#444444", clip_on=False)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 102)
    ax.set_xlabel("percent")
    handles = [
        Patch(color="#2e86c1", label="IoU >= 50"),
        Patch(color="#c0392b", label="IoU < 50"),
        Line2D([], [], marker="o", color="black", linestyle="", markersize=4, label="Acc (recall)"),
        Line2D([], [], color="gray", linestyle="--", label=f"mIoU {result.mIoU:.2f}"),
    ]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.55, 1.02), ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or "Per-class IoU", fontsize=11, y=1 - 0.15 / height)
    return fig


def png_bytes(fig: Any) -> bytes:
    """A figure as PNG bytes (for data URIs)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
