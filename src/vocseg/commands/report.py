"""`vocseg report`: one self-contained HTML page on why a run's model is good or bad."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.commands.options import LogOpt, command, out_option


def register(app: typer.Typer) -> None:
    command(app, "report")(report)


def report(
    run: Annotated[Optional[Path], typer.Argument(metavar="RUN", help="A run folder (written by `vocseg train`; default: the newest trained run under runs/).", show_default=False)] = None,
    out: Annotated[Optional[Path], out_option("Write the page here (default: RUN/report.html).")] = None,
    photos: Annotated[Optional[Path], typer.Option("--photos", help="A folder of your own photos: the model's predictions on them are added (at most 60, the first by name; `vocseg predict DIR -c RUN` for all).")] = None,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="Another run folder, eval JSON or file of runs, shown side by side as `vocseg compare` does.")] = None,
    log: LogOpt = False,
) -> None:
    """Write one HTML page (inline pictures, no network): recipe and plan, training curves, per-class
    tables with flags, confusion matrix, error galleries of the worst val images per class, and
    optionally predictions on your photos and a comparison. Runs `vocseg eval RUN` first when the
    run has no val result."""
    from vocseg.console import command, console, shown
    from vocseg.reports.report import build_report, latest_evals

    if run is None:
        from vocseg.commands.default_model import default_run

        run = default_run("report", option=None, official=False)
    if run.is_dir() and "val" not in latest_evals(run):
        console.print(f"no val result in {shown(run / 'eval')}: evaluating first (as `{shown(command('eval', run))}`)", soft_wrap=True)
    path, summary = build_report(run, out=out, photos=photos, compare=compare, verbose=log)
    seconds = summary["seconds"]
    console.print(
        f"report: {shown(path)}  ({summary['bytes'] / 1e6:.1f} MB; splits {', '.join(summary['splits']) or 'none'}; "
        f"galleries: {summary['gallery_images']} images for {summary['gallery_classes']} classes; "
        f"{shown(summary['photos_text'])}; {seconds['total']:.1f} s)"
    )
