"""`vocseg resume`: continue a run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.display import console


def register(app: typer.Typer) -> None:
    app.command("resume")(resume)


def resume(
    run_dir: Annotated[Optional[Path], typer.Argument(help="The run folder (default: the newest under runs/).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log.")] = False,
    rescale_lr: Annotated[bool, typer.Option("--rescale-lr", help="Allow another number of GPUs/processes than the run had: the LR is rescaled to the new total batch (linear rule).")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids or count (default: the run's).")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="CPU processes (default: the run's).")] = None,
) -> None:
    """Resume from the run's newest complete checkpoint: model, optimizer, LR schedule, data order, RNG."""
    from vocseg.launch import LaunchOptions, launch_training
    from vocseg.resuming import prepare_resume

    config_path, recipe = prepare_resume(run_dir, gpus=gpus, nproc=nproc, rescale_lr=rescale_lr)
    console.print(f"resuming {config_path.parent}")
    launch_training(config_path, recipe, LaunchOptions(verbose=verbose), resume=True)
