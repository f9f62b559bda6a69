"""Rich renderings of vocseg's results: the plan, evaluation tables, dataset checks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vocseg.console import console, shown
from vocseg.evaluation.eval_result import format_value

if TYPE_CHECKING:
    from vocseg.data.check import CheckReport
    from vocseg.data.dataset import DatasetSpec
    from vocseg.evaluation.eval_result import EvalResult
    from vocseg.inference.predict import Prediction
    from vocseg.recipe.recipe import Plan, Recipe
    from vocseg.reports.compare import Comparison
    from vocseg.training.resuming import ResumeTarget




def plan_table(recipe: Recipe, plan: Plan) -> Table:
    from vocseg.recipe import schedule as sched

    table = Table(title="Training plan", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("model", f"{recipe.model}, crop {recipe.crop_size}, pretrained: {shown(recipe.pretrained_checkpoint or 'none')}")
    spec = None
    if recipe.is_voc:
        table.add_row("data", f"{'VOC train + SBD aug' if recipe.aug else 'VOC train'}: {plan.train_size} images")
    else:
        from vocseg.recipe.recipe import dataset_spec

        spec = dataset_spec(recipe)
        table.add_row("data", f"{recipe.dataset} ({spec.kind}): {plan.train_size} train images; SBD aug is PASCAL VOC's, so off; split: {spec.split_note}")
        table.add_row("classes", class_shares_text(spec))
    procs = f"{plan.world_size} GPU(s) [{recipe.gpus}]" if recipe.device == "cuda" else f"{plan.world_size} CPU process(es)"
    table.add_row("total batch", f"{procs} x {recipe.batch} = {plan.total_batch}")
    table.add_row("learning rate", f"{plan.lr:g} = {plan.lr_rule}; poly decay per iteration")
    table.add_row("iterations", f"{plan.max_iters} ({plan.iters_per_epoch} per epoch = {plan.epochs:.1f} epochs)")
    if spec is None:
        table.add_row("samples seen", f"{plan.samples:,} = {plan.ratio_to_official:.2f}x the official 40k x {sched.OFFICIAL_BATCH} ({40_000 * sched.OFFICIAL_BATCH:,})")
        table.add_row("official 40k equals", f"{plan.official_equivalent_epochs:.1f} epochs on these {plan.train_size} images = {plan.official_equivalent_iters} iterations at batch {plan.total_batch}")
    else:
        table.add_row("samples seen", f"{plan.samples:,} = {plan.max_iters} iterations x batch {plan.total_batch} = {plan.epochs:.1f} passes over the {plan.train_size} train images "
                      "(VOC's official 40k x 16 schedule is no reference for this dataset)")
    speed = [
        "mixed precision (bf16, fp16 where missing)" if recipe.use_amp else "fp32",
        "channels_last" if recipe.use_channels_last else "",
        "cudnn benchmark" if recipe.use_cudnn_benchmark else "",
        (f"{recipe.workers} loader workers/process" if recipe.num_workers is not None
         else f"loader workers decided where it trains ({recipe.workers}/process on this machine)")
        + (", pinned" if recipe.use_pin_memory else ""),
    ]
    table.add_row("speed", ", ".join(s for s in speed if s))
    table.add_row("validate", interval_text(plan.val_interval_iters, plan.max_iters))
    table.add_row("checkpoint", f"{interval_text(plan.ckpt_interval_iters, plan.max_iters)}; keep the last {recipe.keep} and the best by mIoU")
    for line in plan.weights:  # --pretrained / --load-from tensor counts, class weights
        what, _, detail = line.partition(": ")
        table.add_row("weights" if what.startswith("--") else what, escape(line if what.startswith("--") else detail))
    return table


def interval_text(every: int, max_iters: int) -> str:
    """When something happens every `every` iterations of `max_iters`, in words:
    "every iteration", "every 500 iterations (80 times)", "once, at the end (iteration 2)"."""
    if max_iters <= 0 or every <= 0:
        return "never"
    if every >= max_iters:
        return f"once, at the end (iteration {max_iters})"
    if every == 1:
        return f"every iteration ({max_iters} times)"
    times = max_iters // every + (1 if max_iters % every else 0)
    return f"every {every} iterations ({times} times, and at the end)" if max_iters % every else f"every {every} iterations ({times} times)"


def class_shares_text(spec: DatasetSpec) -> str:
    """The dataset's classes with their share of the labelled train pixels, and an imbalance note."""
    from vocseg.data.dataset import class_pixels

    counts = class_pixels(spec, "train")
    total = sum(counts) or 1
    text = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(spec.classes, counts))
    rare = [name for name, n in zip(spec.classes, counts) if n / total < 0.01]
    if rare:
        text += f"; under 1% of the pixels: {', '.join(rare)} (class imbalance: such classes are learnt last; class weights help)"
    return f"{spec.num_classes}: {text} (share of labelled train pixels)"


def print_plan(recipe: Recipe, plan: Plan, out: Console | None = None) -> None:
    out = out or console
    out.print(plan_table(recipe, plan))
    for warning in plan.warnings:
        out.print(f"[bold yellow]warning:[/] {shown(warning)}", soft_wrap=True)


def resume_line(target: ResumeTarget) -> str:
    """`resuming RUN at iteration I/N from CKPT`: said by `vocseg resume` and by a requeued `vocseg train`."""
    at = f" at iteration {target.iteration}/{target.max_iters}" if target.max_iters else f" at iteration {target.iteration}"
    scaled = " (LR rescaled to the new total batch)" if target.rescale_lr else ""
    return f"resuming {shown(target.run_dir)}{at} from {target.checkpoint.name}{scaled}"


def check_table(report: CheckReport) -> Table:
    table = Table(title=f"Dataset check: {shown(report.root)}", title_justify="left")
    for col in ("list", "ids", "expected", "pairs checked", "problems"):
        table.add_column(col, justify="right" if col != "list" else "left")
    for s in report.splits:
        table.add_row(shown(s.name), str(s.count), "-" if s.expected is None else str(s.expected), str(s.checked), str(len(s.problems)), style="red" if s.problems else None)
    return table


def eval_report_table(result: EvalResult, title: str | None = None) -> Table:
    """Per-class IoU, Acc, Dice, Precision and what each class is most often mistaken for (from the confusion matrix)."""
    from vocseg.evaluation.eval_result import most_confused_with

    tta = " + TTA" if result.extra.get("tta") else ""
    table = Table(title=title or f"{shown(result.split)}: {result.num_images} images{tta}", title_justify="left")
    table.add_column("class")
    for key in ("IoU", "Acc", "Dice", "Precision"):
        table.add_column(key, justify="right")
    table.add_column("most confused with")
    excluded = absent_classes(result)
    for i, (name, vals) in enumerate(result.per_class.items()):
        iou = vals.get("IoU")
        style = "red" if iou is not None and not math.isnan(iou) and iou < 50 else None
        if name in excluded:
            predicted = vals.get("pred_pixels") or 0
            why = f"not in this split; predicted on {predicted} pixels (IoU 0, counted)" if predicted else "not in this split: excluded from the means"
            table.add_row(shown(name), *(format_value(vals.get(k)) if predicted else "" for k in ("IoU", "Acc", "Dice", "Precision")), why, style="dim")
            continue
        table.add_row(shown(name), *(format_value(vals.get(k)) for k in ("IoU", "Acc", "Dice", "Precision")), shown(most_confused_with(result, i)), style=style)
    table.add_section()
    means = result.extra.get("means", {})
    table.add_row("[bold]mean[/]", f"[bold]{format_value(result.mIoU)}[/]", f"[bold]{format_value(result.mAcc)}[/]", format_value(means.get("mDice")), format_value(means.get("mPrecision")), "")
    caption = f"mIoU {format_value(result.mIoU)}   mAcc {format_value(result.mAcc)}   aAcc {format_value(result.aAcc)}   (percent, as mmseg's IoUMetric; red: IoU below 50; '-': undefined, 0/0)"
    if excluded:
        caption += f"; {len(excluded)} of {len(result.per_class)} classes have no pixel in this split ({', '.join(excluded[:6])}{', ...' if len(excluded) > 6 else ''}): " \
                   "their IoU is undefined and the means leave them out unless they were predicted"
    if math.isnan(result.mIoU):
        caption += "; no labelled pixel at all: every mask is ignore (255), nothing could be scored"
    table.caption = caption
    return table


def absent_classes(result: EvalResult) -> list[str]:
    """Classes with no ground-truth pixel in the evaluated split (eval JSON `excluded`, else gt_pixels == 0)."""
    listed = result.extra.get("excluded")
    if isinstance(listed, list):
        return [str(c) for c in listed]
    return [name for name, vals in result.per_class.items() if isinstance(vals, dict) and vals.get("gt_pixels") == 0]


def _delta(v: float | None) -> str:
    if v is None:
        return ""
    colour = "green" if v > 0 else ("red" if v < 0 else "dim")
    return f"[{colour}]{v:+.2f}[/]"


def compare_table(comparison: Comparison) -> Table:
    """Per-class IoU and Acc of every result, deltas against the first, and flag markers."""
    base = comparison.baseline
    names = "; ".join(f"{k} = {shown(run.label)}" + (f" \\[{shown(run.split)}]" if run.split != "val" and run.split not in run.label else "") for k, run in enumerate(comparison.runs, start=1))
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
                cells += [format_value(iou), format_value(acc)]
            else:
                cells += [format_value(iou), _delta(comparison.delta(run, cls, "IoU")), format_value(acc), _delta(comparison.delta(run, cls, "Acc"))]
        table.add_row(shown(cls), *cells, " ".join(marks.get(cls, [])), style="bold" if cls in marks else None)
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
    table = Table(title=title, title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("classes (share of the image) / problem")
    table.add_column("written as")
    for r in results:
        if r.error:
            reason = r.error[len(str(r.image)) :].strip() if r.error.startswith(str(r.image)) else r.error
            table.add_row(shown(r.image), f"[yellow]skipped:[/] {shown(reason)}", "")
        else:
            top = ", ".join(f"{c} {s:.1f}%" for c, s in list(r.shares.items())[:4])
            written = f"{r.label.name.removesuffix('_label.png')}_*.png" if r.label else (r.overlay.name if r.overlay else "")
            table.add_row(shown(r.image), shown(top), shown(written))
    if any(r.demo_model for r in results):
        from vocseg.runs.provenance import DEMO_CAVEAT

        table.title = f"{title} [bold red](demo model: {shown(DEMO_CAVEAT)})[/]"
    return table
