"""`vocseg resume`: continue a run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.commands.launch_options import LauncherOpt, MasterAddrOpt, MasterPortOpt, MaxRestartsOpt, NodeRankOpt, RequeueOpt


def register(app: typer.Typer) -> None:
    app.command("resume")(resume)


def resume(
    run_dir: Annotated[Optional[Path], typer.Argument(help="The run folder (default: the newest under runs/).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log (progress as plain lines).")] = False,
    rescale_lr: Annotated[bool, typer.Option("--rescale-lr", help="Allow another total batch than the checkpoint was trained with (another number of GPUs/processes, "
                                             "or batch_size edited in config.py): the LR schedule is rescaled linearly to the new total batch "
                                             "(without it, such a resume is refused).")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids (6,7 / 7 / 0-3) or first:N (default: the run's).")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="CPU processes (default: the run's).")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", min=1, help="Machines taking part (default: the run's); run the same command on each (torchrun).", rich_help_panel="Launch")] = None,
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
    import contextlib
    import os

    from vocseg.console import console
    from vocseg.recipe.trackers import check_installed, parse_log_to
    from vocseg.runs.folders import run_lock
    from vocseg.training.launch import LaunchOptions, launch_training, plan_launch
    from vocseg.training.resuming import commit_rescale, fault_context, prepare_resume

    primary = node_rank == 0 and (launcher != "slurm" or os.environ.get("SLURM_PROCID", "0") == "0")
    target = prepare_resume(run_dir, gpus=gpus, nproc=nproc, nnodes=nnodes, rescale_lr=rescale_lr, cleanup=primary)
    if target.finished:
        console.print(
            f"{target.run_dir} already finished: {target.iteration}/{target.max_iters} iterations "
            f"({target.checkpoint.name}); nothing to resume.", soft_wrap=True,
        )
        console.print(f"next: vocseg eval {target.run_dir}   (to train longer, start a new run with more --iters/--epochs)", soft_wrap=True)
        return
    nnodes = nnodes or (target.recipe.nnodes if target.recipe is not None else 1)
    options = LaunchOptions(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                            launcher=launcher, verbose=verbose, rescale_lr=target.rescale_lr, max_restarts=max_restarts, requeue=requeue)
    chosen = parse_log_to(log_to) if log_to is not None else None
    check_installed(chosen if chosen is not None else run_trackers(target.config_path))
    launch_plan = plan_launch(target.recipe, options)  # checked before anything is rewritten
    with run_lock(target.run_dir) if primary else contextlib.nullcontext(), fault_context(target.run_dir):
        commit_rescale(target)
        if chosen is not None and primary:
            from vocseg.training.tracker_state import update_state

            update_state(target.run_dir, log_to=list(chosen))
        if primary:
            at = f" at iteration {target.iteration}/{target.max_iters}" if target.max_iters else f" at iteration {target.iteration}"
            scaled = " (LR rescaled to the new total batch)" if target.rescale_lr else ""
            console.print(f"resuming {target.run_dir}{at} from {target.checkpoint.name}{scaled}", soft_wrap=True)
        code = launch_training(target.config_path, launch_plan, options, resume=True)
    if code:
        raise typer.Exit(code)


def run_trackers(config_path: Path) -> tuple[str, ...]:
    """The trackers a run logs to: a `vocseg resume --log-to` choice, else its config's backends."""
    from vocseg.recipe.trackers import TRACKERS, trackers_of_backends
    from vocseg.training.tracker_state import read_state

    chosen = read_state(config_path.parent).get("log_to")
    if isinstance(chosen, list):
        return tuple(n for n in chosen if n in TRACKERS)
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(config_path), import_custom_modules=False)
    except Exception:  # noqa: BLE001 - prepare_resume has read it already; nothing to check then
        return ()
    visualizer = cfg.get("visualizer") or {}
    return trackers_of_backends(visualizer.get("vis_backends"))
