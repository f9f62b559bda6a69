"""`vocseg train`: from flags (or a config file) to a trained model in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vocseg.commands.recipe_options import recipe_from_flags, with_recipe_options
from vocseg.display import console, print_plan


def register(app: typer.Typer) -> None:
    app.command("train")(train)


@with_recipe_options
def train(
    flags: dict[str, Any],
    config_file: Annotated[Optional[Path], typer.Argument(help="A config written by `vocseg config` (flags then only pick --work-dir).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log.")] = False,
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Machines taking part (torchrun).", rich_help_panel="Launch")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", min=0, help="This machine's rank among --nnodes.", rich_help_panel="Launch")] = 0,
    master_addr: Annotated[str, typer.Option("--master-addr", help="Address of the rank-0 machine.", rich_help_panel="Launch")] = "127.0.0.1",
    master_port: Annotated[Optional[int], typer.Option("--master-port", help="Port on the rank-0 machine (default: a free port).", rich_help_panel="Launch")] = None,
    launcher: Annotated[str, typer.Option("--launcher", help="auto (torchrun when more than one process), slurm (inside srun), none.", rich_help_panel="Launch")] = "auto",
) -> None:
    """Train: writes config.py and recipe.json to the run folder, then runs MMEngine's Runner."""
    from vocseg.experiment import experiment_from_config_file, plan_experiment, start_run
    from vocseg.launch import LaunchOptions, launch_training

    if config_file is not None:
        experiment = experiment_from_config_file(config_file, flags)
    else:
        experiment = plan_experiment(recipe_from_flags(flags), work_dir=flags.get("work_dir"), check_pretrained=True, new_run=True)
    if experiment.recipe is not None and experiment.plan is not None:
        print_plan(experiment.recipe, experiment.plan)
    options = LaunchOptions(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port, launcher=launcher, verbose=verbose)
    config_path = start_run(experiment)
    console.print(f"run folder: {config_path.parent}")
    launch_training(config_path, experiment.recipe, options, resume=False)
