"""`vocseg train`: from flags (or a config file) to a trained model in a run folder."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from vocseg.commands.launch_options import LauncherOpt, MasterAddrOpt, MasterPortOpt, MaxRestartsOpt, NnodesOpt, NodeRankOpt, RequeueOpt
from vocseg.commands.recipe_options import recipe_from_flags, with_recipe_options

if TYPE_CHECKING:
    from vocseg.training.experiment import Experiment
    from vocseg.training.launch import LaunchOptions, LaunchPlan


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def start_run_on_this_node(experiment: Experiment, launch_plan: LaunchPlan, options: LaunchOptions) -> Path:
    """The primary launcher writes the run folder; the others (node rank > 0, Slurm tasks > 0)
    write the same files only where they are missing or differ (a folder not shared between
    machines), each through its own temporary file."""
    from vocseg.errors import VocsegError
    from vocseg.files import write_bytes_atomic
    from vocseg.runs.folders import CONFIG_NAME, RECIPE_NAME, latest_checkpoint
    from vocseg.training.experiment import start_run

    if launch_plan.primary and options.node_rank == 0:
        return start_run(experiment)
    work_dir = experiment.work_dir
    if latest_checkpoint(work_dir) is not None:
        raise VocsegError(f"{work_dir} already holds a run with checkpoints.", f"Continue it with `vocseg resume {work_dir}`, or pass another --work-dir.")
    files = {CONFIG_NAME: experiment.config_text}
    if experiment.recipe is not None:
        files[RECIPE_NAME] = experiment.recipe.to_json() + "\n"
    for name, text in files.items():
        path = work_dir / name
        if not path.is_file() or path.read_text() != text:
            write_bytes_atomic(path, text.encode())
    return work_dir / CONFIG_NAME


def training_lists(experiment: Experiment, config_file: Path | None) -> list[Any]:
    """The split lists (`vocseg.data.precheck.ListSpec`) the run will read: train and val."""
    from vocseg.data.precheck import specs_from_config, specs_from_dataset

    if config_file is None and experiment.recipe is not None:
        from vocseg.recipe.mmconfig import train_dataset, val_dataloader

        return specs_from_dataset(train_dataset(experiment.recipe)) + specs_from_dataset(val_dataloader(experiment.recipe)["dataset"])
    from vocseg.training.experiment import load_mmengine_config

    return specs_from_config(load_mmengine_config(Path(config_file or experiment.work_dir / "config.py")))


@contextlib.contextmanager
def checked_env(name: str) -> Any:
    """`name`=1 in the environment while training is launched (the processes skip the check just done)."""
    import os

    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def is_this_run(experiment: Experiment) -> bool:
    """Whether the run folder already holds checkpoints of exactly this config (a requeued job's second start)."""
    from vocseg.runs.folders import CONFIG_NAME, latest_checkpoint

    config = experiment.work_dir / CONFIG_NAME
    return latest_checkpoint(experiment.work_dir) is not None and config.is_file() and config.read_text() == experiment.config_text


def check_trackers(experiment: Experiment, config_file: Path | None) -> None:
    """The trackers a run logs to (its recipe's --log-to, or a config file's backends) must be installed."""
    from vocseg.recipe.trackers import check_installed, trackers_of_backends

    names = list(experiment.recipe.log_to) if experiment.recipe is not None else []
    if config_file is not None:
        from vocseg.training.experiment import load_mmengine_config

        visualizer = load_mmengine_config(config_file).get("visualizer") or {}
        names += [n for n in trackers_of_backends(visualizer.get("vis_backends")) if n not in names]
    check_installed(names)


@with_recipe_options
def train(
    flags: dict[str, Any],
    config_file: Annotated[Optional[Path], typer.Argument(help="A config written by `vocseg config` (flags then only pick --work-dir).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log (progress as plain lines).")] = False,
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
    from vocseg.commands.render import print_plan
    from vocseg.console import console
    from vocseg.errors import VocsegError
    from vocseg.recipe.recipe import validate
    from vocseg.runs.folders import run_lock
    from vocseg.training.experiment import check_run_folder, experiment_from_config_file, plan_experiment
    from vocseg.training.launch import LaunchOptions, launch_training, plan_launch
    from vocseg.training.resuming import fault_context

    options = LaunchOptions(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port, launcher=launcher, verbose=verbose,
                            max_restarts=max_restarts, requeue=requeue)
    if requeue and config_file is None and flags.get("work_dir") is None:
        raise VocsegError("--requeue: the requeued job must find the same run folder, so --work-dir is required.", "Pass --work-dir RUN (the same in the requeued job).")
    if (launcher == "slurm" or nnodes > 1) and config_file is None and flags.get("work_dir") is None:
        raise VocsegError("Several launchers write one run folder: --work-dir is required with --launcher slurm or --nnodes > 1.", "Pass the same --work-dir on every machine/task (a shared folder for resuming).")
    if config_file is not None:
        experiment = experiment_from_config_file(config_file, flags)
        if experiment.recipe is not None and experiment.recipe.nnodes != nnodes:
            raise VocsegError(f"{config_file} is planned for {experiment.recipe.nnodes} machine(s), not --nnodes {nnodes}.", "Train it with its --nnodes, or write a new config.")
    else:
        # --gpus/--nproc count per machine; the total batch (and so the LR) spans every machine.
        recipe = dataclasses.replace(recipe_from_flags(flags), nnodes=nnodes)
        validate(recipe)
        # GPUs, port and launcher first: a missing GPU is said before the pretrained weights are
        # fetched (a download of minutes that the run could not use).
        launch_plan = plan_launch(recipe, options)
        experiment = plan_experiment(recipe, work_dir=flags.get("work_dir"), check_pretrained=True, new_run=True)
    if requeue and is_this_run(experiment):
        # The same command in a requeued Slurm job: its run folder holds this very run; continue it.
        from vocseg.commands.resume import resume

        resume(experiment.work_dir, verbose=verbose, rescale_lr=False, gpus=None, nproc=None, nnodes=nnodes, node_rank=node_rank,
               master_addr=master_addr, master_port=master_port, launcher=launcher, log_to=None, max_restarts=max_restarts, requeue=True)
        return
    check_trackers(experiment, config_file)
    if config_file is not None:  # GPUs, port and launcher are checked before anything is written
        launch_plan = plan_launch(experiment.recipe, options)
    if experiment.recipe is None and "VocsegResumableIterLoop" not in experiment.config_text:
        console.print(
            f"[bold yellow]warning:[/] {config_file} uses MMEngine's own training loop: a resume replays every trained "
            "batch, and Ctrl-C/SIGTERM stop without a checkpoint. Configs written by `vocseg config` use vocseg's loop.",
            soft_wrap=True,
        )
    primary = launch_plan.primary and node_rank == 0
    if primary and experiment.recipe is not None and experiment.plan is not None:
        print_plan(experiment.recipe, experiment.plan)
    # Broken data never reaches the Runner, and refusing it writes nothing (each node checks its own disk).
    from vocseg.data.precheck import CHECKED_ENV, check_before_training

    if launch_plan.primary:  # every machine's launcher; Slurm task 0 only
        check_before_training(training_lists(experiment, config_file), console=console)
    if primary:
        check_run_folder(experiment)  # a folder of the user's own files: refused before the lock file is made
        from vocseg.files import owned_mkdir

        owned_mkdir(experiment.work_dir, role="run")
    # Locked before anything is written: --work-dir may name a folder that is training right now.
    with run_lock(experiment.work_dir) if primary else contextlib.nullcontext(), checked_env(CHECKED_ENV):
        config_path = start_run_on_this_node(experiment, launch_plan, options)
        if primary:
            console.print(f"run folder: {config_path.parent}", soft_wrap=True)
        with fault_context(config_path.parent):  # a full disk or a killed loader worker: one line, what is kept, how to go on
            code = launch_training(config_path, launch_plan, options, resume=False)
    if code:
        raise typer.Exit(code)
