"""`vocseg train`: from flags (or a config file) to a trained model in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vocseg.commands.launch_options import LauncherOpt, MasterAddrOpt, MasterPortOpt, MaxRestartsOpt, NnodesOpt, NodeRankOpt, RequeueOpt
from vocseg.commands.options import LogOpt, command
from vocseg.commands.recipe_options import recipe_from_flags, with_recipe_options


def register(app: typer.Typer) -> None:
    command(app, "train")(train)


@with_recipe_options
def train(
    flags: dict[str, Any],
    config_file: Annotated[Optional[Path], typer.Argument(metavar="CONFIG", help="A config written by `vocseg config` (flags then only pick --work-dir).", show_default=False)] = None,
    log: LogOpt = False,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = "127.0.0.1",
    master_port: MasterPortOpt = None,
    launcher: LauncherOpt = "auto",
    max_restarts: MaxRestartsOpt = 0,
    requeue: RequeueOpt = False,
) -> None:
    """Train: writes config.py and recipe.json to the run folder, then runs MMEngine's Runner.

    --gpus 6,7 trains on exactly those GPUs (nvidia-smi numbering), one process each through
    torchrun; --device cpu --nproc N runs N CPU processes over gloo. Ctrl-C or SIGTERM finishes
    the iteration, saves a checkpoint and prints the `vocseg resume` command.
    """
    from vocseg.commands.render import print_plan, resume_line
    from vocseg.console import console
    from vocseg.training import LaunchOptions, start

    options = LaunchOptions(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port, launcher=launcher, verbose=log,
                            max_restarts=max_restarts, requeue=requeue)
    if config_file is not None:  # its device is fixed: the way to the CPU is another config
        import dataclasses

        from vocseg.training.launch import cpu_way_for

        options = dataclasses.replace(options, cpu_way=cpu_way_for(config_file=config_file))
    recipe = recipe_from_flags(flags) if config_file is None else None
    outcome = start(options, recipe=recipe, config_file=config_file, flags=flags, on_plan=print_plan,
                    on_resume=lambda target: console.print(resume_line(target), soft_wrap=True))  # a requeued job's second start
    if outcome.code:
        from vocseg.errors import mark_exit_reported

        mark_exit_reported()  # the training said why it stopped and how to go on
        raise typer.Exit(outcome.code)
