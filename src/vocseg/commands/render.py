"""Rich renderings of vocseg's results: the plan, evaluation tables, dataset checks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vocseg.console import console

if TYPE_CHECKING:
    from vocseg.data.check import CheckReport
    from vocseg.evaluation.eval_result import EvalResult
    from vocseg.inference.predict import Prediction
    from vocseg.recipe.recipe import Plan, Recipe
    from vocseg.reports.compare import Comparison




def plan_table(recipe: Recipe, plan: Plan) -> Table:
    from vocseg.recipe import schedule as sched

    table = Table(title="Training plan", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("model", f"{recipe.model}, crop {recipe.crop_size}, pretrained: {recipe.pretrained_checkpoint or 'none'}")
    table.add_row("data", f"{'VOC train + SBD aug' if recipe.aug else 'VOC train'}: {plan.train_size} images")
    procs = f"{plan.world_size} GPU(s) [{recipe.gpus}]" if recipe.device == "cuda" else f"{plan.world_size} CPU process(es)"
    table.add_row("total batch", f"{procs} x {recipe.batch} = {plan.total_batch}")
    table.add_row("learning rate", f"{plan.lr:g} = {plan.lr_rule}; poly decay per iteration")
    table.add_row("iterations", f"{plan.max_iters} ({plan.iters_per_epoch} per epoch = {plan.epochs:.1f} epochs)")
    table.add_row("samples seen", f"{plan.samples:,} = {plan.ratio_to_official:.2f}x the official 40k x {sched.OFFICIAL_BATCH} ({40_000 * sched.OFFICIAL_BATCH:,})")
    table.add_row("official 40k equals", f"{plan.official_equivalent_epochs:.1f} epochs on these {plan.train_size} images = {plan.official_equivalent_iters} iterations at batch {plan.total_batch}")
    speed = [
        "mixed precision (bf16, fp16 where missing)" if recipe.use_amp else "fp32",
        "channels_last" if recipe.use_channels_last else "",
        "cudnn benchmark" if recipe.use_cudnn_benchmark else "",
        (f"{recipe.workers} loader workers/process" if recipe.num_workers is not None
         else f"loader workers decided where it trains ({recipe.workers}/process on this machine)")
        + (", pinned" if recipe.use_pin_memory else ""),
    ]
    table.add_row("speed", ", ".join(s for s in speed if s))
    table.add_row("validate / checkpoint", f"every {plan.val_interval_iters} / {plan.ckpt_interval_iters} iterations, keep {recipe.keep}")
    for line in plan.weights:  # --pretrained / --load-from tensor counts, class weights
        what, _, detail = line.partition(": ")
        table.add_row("weights" if what.startswith("--") else what, escape(line if what.startswith("--") else detail))
    return table


def print_plan(recipe: Recipe, plan: Plan, out: Console | None = None) -> None:
    out = out or console
    out.print(plan_table(recipe, plan))
    for warning in plan.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}")


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def eval_table(result: EvalResult, title: str | None = None) -> Table:
    table = Table(title=title or f"{result.split}: {result.num_images} images", title_justify="left")
    table.add_column("class")
    for key in ("IoU", "Acc", "Dice", "Precision"):
        table.add_column(key, justify="right")
    for name, vals in result.per_class.items():
        iou = vals.get("IoU")
        style = "red" if iou is not None and not math.isnan(iou) and iou < 50 else None
        table.add_row(name, *(_fmt(vals.get(k)) for k in ("IoU", "Acc", "Dice", "Precision")), style=style)
    table.add_section()
    table.add_row("[bold]mean[/]", f"[bold]{result.mIoU:.2f}[/]", f"[bold]{result.mAcc:.2f}[/]", "", "")
    table.caption = f"mIoU {result.mIoU:.2f}   mAcc {result.mAcc:.2f}   aAcc {result.aAcc:.2f}   (percent; red: IoU below 50)"
    return table


def check_table(report: CheckReport) -> Table:
    table = Table(title=f"Dataset check: {report.root}", title_justify="left")
    for col in ("list", "ids", "expected", "pairs checked", "problems"):
        table.add_column(col, justify="right" if col != "list" else "left")
    for s in report.splits:
        table.add_row(s.name, str(s.count), "-" if s.expected is None else str(s.expected), str(s.checked), str(len(s.problems)), style="red" if s.problems else None)
    return table


def _confused_with(result: EvalResult, index: int) -> str:
    """The class that takes the largest share of this class's pixels, other than itself."""
    if not result.confusion:
        return ""
    row = result.confusion[index]
    total = sum(row)
    if not total:
        return ""
    others = [(v, j) for j, v in enumerate(row) if j != index]
    value, j = max(others) if others else (0, index)
    share = 100 * value / total
    return f"{list(result.per_class)[j]} {share:.0f}%" if round(share) >= 1 else ""  # never "bottle 0%"


def eval_report_table(result: EvalResult, title: str | None = None) -> Table:
    """eval_table plus what each class is most often mistaken for (from the confusion matrix)."""
    tta = " + TTA" if result.extra.get("tta") else ""
    table = Table(title=title or f"{result.split}: {result.num_images} images{tta}", title_justify="left")
    table.add_column("class")
    for key in ("IoU", "Acc", "Dice", "Precision"):
        table.add_column(key, justify="right")
    table.add_column("most confused with")
    for i, (name, vals) in enumerate(result.per_class.items()):
        iou = vals.get("IoU")
        style = "red" if iou is not None and not math.isnan(iou) and iou < 50 else None
        table.add_row(name, *(_fmt(vals.get(k)) for k in ("IoU", "Acc", "Dice", "Precision")), _confused_with(result, i), style=style)
    table.add_section()
    means = result.extra.get("means", {})
    table.add_row("[bold]mean[/]", f"[bold]{result.mIoU:.2f}[/]", f"[bold]{result.mAcc:.2f}[/]", _fmt(means.get("mDice")), _fmt(means.get("mPrecision")), "")
    table.caption = f"mIoU {result.mIoU:.2f}   mAcc {result.mAcc:.2f}   aAcc {result.aAcc:.2f}   (percent, as mmseg's IoUMetric; red: IoU below 50; '-': undefined, 0/0)"
    return table


def _delta(v: float | None) -> str:
    if v is None:
        return ""
    colour = "green" if v > 0 else ("red" if v < 0 else "dim")
    return f"[{colour}]{v:+.2f}[/]"


def compare_table(comparison: Comparison) -> Table:
    """Per-class IoU and Acc of every result, deltas against the first, and flag markers."""
    base = comparison.baseline
    names = "; ".join(f"{k} = {run.label}" + (f" [{run.split}]" if run.split != "val" and run.split not in run.label else "") for k, run in enumerate(comparison.runs, start=1))
    table = Table(title=f"Per-class IoU / Acc, percent ({names}); \u0394 against 1", title_justify="left")
    table.add_column("class", no_wrap=True)
    for k, run in enumerate(comparison.runs, start=1):
        if run is base:
            table.add_column(f"IoU {k}", justify="right", no_wrap=True)
            table.add_column(f"Acc {k}", justify="right", no_wrap=True)
        else:
            for head in (f"IoU {k}", "\u0394", f"Acc {k}", "\u0394"):
                table.add_column(head, justify="right", no_wrap=True)
    table.add_column("flags", no_wrap=True)
    marks = comparison.flagged_classes()
    for cls in comparison.classes:
        cells = []
        for run in comparison.runs:
            iou, acc = run.value(cls, "IoU"), run.value(cls, "Acc")
            if run is base:
                cells += [_fmt(iou), _fmt(acc)]
            else:
                cells += [_fmt(iou), _delta(comparison.delta(run, cls, "IoU")), _fmt(acc), _delta(comparison.delta(run, cls, "Acc"))]
        table.add_row(cls, *cells, " ".join(marks.get(cls, [])), style="bold" if cls in marks else None)
    table.add_section()
    cells = []
    for run in comparison.runs:
        if run is base:
            cells += [f"{run.mIoU:.2f}", f"{run.mAcc:.2f}"]
        else:
            cells += [f"{run.mIoU:.2f}", _delta(round(run.mIoU - base.mIoU, 2)), f"{run.mAcc:.2f}", _delta(round(run.mAcc - base.mAcc, 2))]
    table.add_row("[bold]mean[/]", *cells, "")
    legend = ", ".join(f"{m} {kind}" for m, kind in comparison.flag_legend().items())
    table.caption = f"flags: {legend}" if legend else "no class flagged"
    return table


def print_flags(comparison: Comparison, out: Console | None = None) -> None:
    from rich.markup import escape

    out = out or console
    if not comparison.flags:
        out.print("[green]no known-cause pattern found[/]")
        return
    for flag in comparison.flags:
        out.print(f"[bold yellow]{flag.kind}:[/] {escape(flag.message)}")
        if flag.fix:
            out.print(f"   [dim]-> {escape(flag.fix)}[/]")


def predict_table(results: list[Prediction], title: str = "Predictions") -> Table:
    """One row per input: the main classes and their share, or why it was skipped."""
    from rich.markup import escape

    table = Table(title=title, title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("classes (share of the image) / problem")
    table.add_column("written as")
    for r in results:
        if r.error:
            reason = r.error[len(str(r.image)) :].strip() if r.error.startswith(str(r.image)) else r.error
            table.add_row(escape(str(r.image)), f"[yellow]skipped:[/] {escape(reason)}", "")
        else:
            top = ", ".join(f"{c} {s:.1f}%" for c, s in list(r.shares.items())[:4])
            written = f"{r.label.name.removesuffix('_label.png')}_*.png" if r.label else (r.overlay.name if r.overlay else "")
            table.add_row(escape(str(r.image)), escape(top), escape(written))
    return table
