"""`vocseg compare`: eval results side by side, with deltas, known-cause flags and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.commands.options import OUTPUT, ForceOpt, command
from vocseg.reports.thresholds import DEFAULT_THRESHOLDS as T  # light: `vocseg --help` imports it

THRESHOLDS = "Flag thresholds"


def register(app: typer.Typer) -> None:
    command(app, "compare")(compare)


def compare(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Eval JSONs (vocseg eval --json), run folders (their eval/val.json and eval/train.json), or files of runs like seed_runs.json.", show_default=False)],
    chart: Annotated[Optional[Path], typer.Option("--chart", help="Write the per-class IoU chart PNG here (default: runs/compare/compare.png, or runs/compare2/, ... when taken).", show_default=False, rich_help_panel=OUTPUT)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the comparison (values, deltas, flags) as JSON here.", rich_help_panel=OUTPUT)] = None,
    min_change: Annotated[float, typer.Option("--min-change", min=0.0, help="Over-filled: IoU down and Acc up by at least this many points.", rich_help_panel=THRESHOLDS)] = T.min_change,
    area_limit: Annotated[float, typer.Option("--area-limit", min=1.0, help="Over-filled: predicted area at least this many times the true area.", rich_help_panel=THRESHOLDS)] = T.area_limit,
    gap: Annotated[float, typer.Option("--gap", min=0.0, help="Memorisation: train mIoU at least this many points above val.", rich_help_panel=THRESHOLDS)] = T.gap,
    weak_margin: Annotated[float, typer.Option("--weak-margin", min=0.0, help="Weak: class IoU at least this many points below its run's mIoU in every result.", rich_help_panel=THRESHOLDS)] = T.weak_margin,
    force: ForceOpt = False,
) -> None:
    """Compare two or more results: per-class IoU and Acc with deltas against the first, and flags for
    over-filled predictions (IoU down, Acc up), memorisation (train vs val gap), classes weak in every run,
    and settings that differ from the official recipe."""
    import json

    from vocseg.commands.render import compare_table, print_flags
    from vocseg.console import console
    from vocseg.files import check_may_write, owned_write_text
    from vocseg.reports.compare import Thresholds, compare_paths
    from vocseg.reports.compare_chart import compare_chart

    # Inputs are never replaced (a run folder's eval JSONs included); other files only when vocseg wrote them.
    protected = [*inputs, *(p for i in inputs if i.is_dir() for p in i.glob("eval/*.json"))]
    for option, path in (("--chart", chart), ("--json", json_out)):
        if path is not None:
            check_may_write(path, force=force, inputs=protected, option=option)
    if json_out is not None and chart is not None and chart.expanduser().resolve() == json_out.expanduser().resolve():
        from vocseg.errors import VocsegError

        raise VocsegError(f"--chart and --json name the same file {chart}.", "Give them different names.")
    comparison = compare_paths(inputs, Thresholds(min_change=min_change, area_limit=area_limit, gap=gap, weak_margin=weak_margin))
    console.print(compare_table(comparison))
    print_flags(comparison)
    if chart is None:
        from vocseg.runs.folders import numbered_output_dir

        chart = numbered_output_dir("compare") / "compare.png"
    saved = [compare_chart(comparison, chart, force=force)]  # recorded as it is written (vocseg.files)
    if json_out:
        owned_write_text(json_out, json.dumps(comparison.to_json(), indent=1) + "\n", force=force, inputs=protected, option="--json")
        saved.append(json_out)
    from vocseg.console import shown

    console.print("written: " + ", ".join(shown(p) for p in saved), soft_wrap=True)
