"""Rich renderings of vocseg's results: the plan, evaluation tables, dataset checks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from vocseg.check import CheckReport
    from vocseg.evaluation import EvalResult
    from vocseg.recipe import Plan, Recipe

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def plan_table(recipe: Recipe, plan: Plan) -> Table:
    from vocseg import schedule as sched

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
    table.add_row("validate / checkpoint", f"every {plan.val_interval_iters} / {plan.ckpt_interval_iters} iterations, keep {recipe.keep}")
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
