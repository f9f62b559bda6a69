"""`vocseg resume`: continue a run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vocseg.commands.launch_options import LAUNCH, LauncherOpt, MasterAddrOpt, MasterPortOpt, MaxRestartsOpt, NodeRankOpt, RequeueOpt
from vocseg.commands.options import LogOpt, command


def register(app: typer.Typer) -> None:
    command(app, "resume")(resume)


def resume(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN", help="The run folder (default: the newest under runs/).", show_default=False)] = None,
    log: LogOpt = False,
    rescale_lr: Annotated[bool, typer.Option("--rescale-lr", help="Allow another total batch than the checkpoint was trained with (another number of GPUs/processes, "
                                             "or batch_size edited in config.py): the LR schedule is rescaled linearly to the new total batch "
                                             "(without it, such a resume is refused).")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids (6,7 / 7 / 0-3) or first:N (default: the run's).")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="CPU processes (default: the run's).")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", min=1, help="Machines taking part (default: the run's); run the same command on each (torchrun).", rich_help_panel=LAUNCH)] = None,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = "127.0.0.1",
    master_port: MasterPortOpt = None,
    launcher: LauncherOpt = "auto",
    log_to: Annotated[Optional[str], typer.Option("--log-to", help="Experiment trackers from this resume on: any of tensorboard,wandb,mlflow, or none "
                                                  "(default: the run's). The same tracker runs continue; recorded in RUN/trackers.json.")] = None,
    max_restarts: MaxRestartsOpt = 0,
    requeue: RequeueOpt = False,
) -> None:
    """Resume from the run's newest complete checkpoint: model, optimizer, LR schedule, data order, RNG.

    Bitwise the same as an uninterrupted run with the same process count (CPU, --deterministic).
    Skipping trained batches costs nothing: the sampler starts at the saved position. Another
    process count or per-process batch is refused unless --rescale-lr.
    """
    from vocseg.commands.render import resume_line
    from vocseg.console import command, console, shown
    from vocseg.recipe.trackers import parse_log_to
    from vocseg.training import LaunchOptions, ResumeOptions
    from vocseg.training import resume as resume_run

    if run_dir is None:  # the newest run that is not finished and not being trained; said so
        from vocseg.training.resuming import pick_unfinished_run

        pick = pick_unfinished_run()
        console.print(pick.line(), soft_wrap=True)
        run_dir = pick.run

    def say_start(target: Any) -> None:
        console.print(resume_line(target), soft_wrap=True)

    launch = LaunchOptions(nnodes=nnodes or 1, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                           launcher=launcher, verbose=log, max_restarts=max_restarts, requeue=requeue)
    options = ResumeOptions(gpus=gpus, nproc=nproc, nnodes=nnodes, rescale_lr=rescale_lr, log_to=parse_log_to(log_to) if log_to is not None else None)
    outcome = resume_run(run_dir, launch, options, on_start=say_start)
    if (target := outcome.finished_before) is not None:
        console.print(
            f"{shown(target.run_dir)} already finished: {target.iteration}/{target.max_iters} iterations "
            f"({target.checkpoint.name}); nothing to resume.", soft_wrap=True,
        )
        console.print(f"next: {shown(command('eval', target.run_dir))}   (to train longer, start a new run with more --iters/--epochs)", soft_wrap=True)
        return
    if outcome.code:
        from vocseg.errors import mark_exit_reported

        mark_exit_reported()  # the training said why it stopped and how to go on
        raise typer.Exit(outcome.code)
