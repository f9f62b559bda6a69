"""Starting and resuming a run: the one call behind `vocseg train` (`start`) and `vocseg resume` (`resume`).

Both decide which process writes the run folder (`primary_process`), check the trackers the run
logs to (`run_trackers`), take the run folder's lock, mark the data as checked for the training
processes and launch them (`vocseg.training.launch`). A Slurm job requeued by `--requeue` runs the
same `vocseg train` command again; `start` then sees its own run folder and resumes it.
The commands only parse flags and print: what to show goes through `on_plan` / `on_start`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocseg.errors import VocsegError

if TYPE_CHECKING:
    from vocseg.recipe.recipe import Plan, Recipe
    from vocseg.training.experiment import Experiment
    from vocseg.training.launch import LaunchOptions, LaunchPlan
    from vocseg.training.resuming import ResumeTarget


@dataclass(frozen=True)
class RunOutcome:
    """What a start or resume did. `code`: 0 done (or nothing to do), 130/143 stopped with a checkpoint."""

    run_dir: Path
    code: int
    finished_before: ResumeTarget | None = None  # resume: the run had already finished; nothing was launched


@dataclass(frozen=True)
class ResumeOptions:
    """`vocseg resume`'s choices beside the launch: another process count, trackers from now on."""

    gpus: str | None = None
    nproc: int | None = None
    nnodes: int | None = None  # None: the run's
    rescale_lr: bool = False
    log_to: tuple[str, ...] | None = None  # None: the run's


def primary_process(options: LaunchOptions) -> bool:
    """The one process that writes the run folder: node rank 0, and under `--launcher slurm` task 0
    only (every other launcher, on each machine or Slurm task, writes only what is missing there)."""
    return options.node_rank == 0 and (options.launcher != "slurm" or os.environ.get("SLURM_PROCID", "0") == "0")


def run_trackers(recipe: Recipe | None, config_path: Path | None, *, recorded: bool) -> tuple[str, ...]:
    """The trackers a run logs to: with `recorded`, a `vocseg resume --log-to` choice recorded in
    the run folder of `config_path`; else the recipe's `--log-to` and the config file's visualizer backends."""
    from vocseg.recipe.trackers import TRACKERS, trackers_of_backends
    from vocseg.runs.run_config import read_config
    from vocseg.training.tracker_state import read_state

    if recorded and config_path is not None and config_path.is_file():
        chosen = read_state(config_path.parent).get("log_to")
        if isinstance(chosen, list):
            return tuple(n for n in chosen if n in TRACKERS)
    names = list(recipe.log_to) if recipe is not None else []
    if config_path is not None:
        try:
            cfg = read_config(config_path, import_custom_modules=False)
        except VocsegError:
            return tuple(names)  # read (and refused) where the run is planned; nothing to check here
        visualizer = cfg.get("visualizer") or {}
        names += [n for n in trackers_of_backends(visualizer.get("vis_backends")) if n not in names]
    return tuple(names)


def start(launch: LaunchOptions, *, recipe: Recipe | None, config_file: Path | None, flags: dict[str, Any],
          on_plan: Callable[[Recipe, Plan], None] | None = None, on_resume: Callable[[ResumeTarget], None] | None = None) -> RunOutcome:
    """Train a recipe (from the flags) or a config file: plan, write the run folder, check the data,
    launch the processes. `flags`: the recipe flags as given (None: not given); a config file takes
    only `work_dir` beside it. A requeued Slurm job's second start resumes its run instead (`on_resume` as `resume`'s `on_start`).
    Errors: `VocsegError` (one line) for everything the user can fix; nothing is written then."""
    experiment, launch_plan = plan_start(launch, recipe=recipe, config_file=config_file, flags=flags)
    from vocseg.console import console, shown
    from vocseg.data.precheck import CHECKED_ENV, check_before_training
    from vocseg.recipe.trackers import check_installed
    from vocseg.runs.folders import run_lock
    from vocseg.training.experiment import check_run_folder
    from vocseg.training.launch import launch_training, plan_launch
    from vocseg.training.resuming import fault_context

    if launch.requeue and is_this_run(experiment):
        # The same command in a requeued Slurm job: its run folder holds this very run; continue it.
        return resume(experiment.work_dir, launch, ResumeOptions(nnodes=launch.nnodes), on_start=on_resume)
    check_installed(run_trackers(experiment.recipe, config_file, recorded=False))
    if launch_plan is None:  # GPUs, port and launcher are checked before anything is written
        launch_plan = plan_launch(experiment.recipe, launch)
    if experiment.recipe is None and "VocsegResumableIterLoop" not in experiment.config_text:
        console.print(
            f"[bold yellow]warning:[/] {config_file} uses MMEngine's own training loop: a resume replays every trained "
            "batch, and Ctrl-C/SIGTERM stop without a checkpoint. Configs written by `vocseg config` use vocseg's loop.",
            soft_wrap=True,
        )
    primary = primary_process(launch)
    if primary and on_plan is not None and experiment.recipe is not None and experiment.plan is not None:
        on_plan(experiment.recipe, experiment.plan)
    # Broken data never reaches the Runner, and refusing it writes nothing (each node checks its own disk).
    if launch_plan.primary:  # every machine's launcher; Slurm task 0 only
        check_before_training(training_lists(experiment, config_file), console=console)
    if primary:
        check_run_folder(experiment)  # a folder of the user's own files: refused before the lock file is made
        from vocseg.files import owned_mkdir

        owned_mkdir(experiment.work_dir, role="run")
    # Locked before anything is written: --work-dir may name a folder that is training right now.
    # From the first file of the run folder on, a full disk, a killed loader worker or an interruption
    # (Ctrl-C, SIGTERM) names the command that continues this folder (`vocseg train RUN/config.py`,
    # `vocseg resume RUN`): the same `vocseg train` command line would start a new folder.
    with run_lock(experiment.work_dir) if primary else contextlib.nullcontext(), _set_env(CHECKED_ENV), fault_context(experiment.work_dir, interruptions=True):
        config_path = start_run_on_this_node(experiment, primary)
        if primary:
            console.print(f"run folder: {shown(config_path.parent)}", soft_wrap=True)
        code = launch_training(config_path, launch_plan, launch, resume=False)
    return RunOutcome(config_path.parent, code)


def resume(run_dir: Path | None, launch: LaunchOptions, options: ResumeOptions,
           on_start: Callable[[ResumeTarget], None] | None = None) -> RunOutcome:
    """Continue a run from its newest complete checkpoint (`run_dir` None: the newest run).
    `launch.nnodes` is replaced by `options.nnodes`, else the run's. Nothing is launched when the
    run had already finished (`RunOutcome.finished_before`). Errors: `VocsegError`."""
    import dataclasses

    from vocseg.recipe.trackers import check_installed
    from vocseg.runs.folders import run_lock
    from vocseg.training.launch import cpu_way_for, launch_training, plan_launch
    from vocseg.training.resuming import commit_rescale, fault_context, prepare_resume

    primary = primary_process(launch)
    target = prepare_resume(run_dir, gpus=options.gpus, nproc=options.nproc, nnodes=options.nnodes, rescale_lr=options.rescale_lr, cleanup=primary)
    if target.finished:
        return RunOutcome(target.run_dir, 0, finished_before=target)
    nnodes = options.nnodes or (target.recipe.nnodes if target.recipe is not None else 1)
    launch = dataclasses.replace(launch, nnodes=nnodes, rescale_lr=target.rescale_lr, cpu_way=cpu_way_for(run_dir=target.run_dir))
    check_installed(options.log_to if options.log_to is not None else run_trackers(None, target.config_path, recorded=True))
    launch_plan = plan_launch(target.recipe, launch)  # checked before anything is rewritten
    with run_lock(target.run_dir) if primary else contextlib.nullcontext(), fault_context(target.run_dir):
        commit_rescale(target)
        if options.log_to is not None and primary:
            from vocseg.training.tracker_state import update_state

            update_state(target.run_dir, log_to=list(options.log_to))
        if primary and on_start is not None:
            on_start(target)
        code = launch_training(target.config_path, launch_plan, launch, resume=True)
    return RunOutcome(target.run_dir, code)


def plan_start(launch: LaunchOptions, *, recipe: Recipe | None, config_file: Path | None, flags: dict[str, Any]) -> tuple[Experiment, LaunchPlan | None]:
    """The experiment to train, and its launch plan where it had to come first (a recipe's: a
    missing GPU is said before the pretrained weights are fetched, a download of minutes that the
    run could not use). Writes nothing."""
    import dataclasses

    from vocseg.recipe.recipe import validate
    from vocseg.training.experiment import experiment_from_config_file, plan_experiment
    from vocseg.training.launch import plan_launch

    work_dir = flags.get("work_dir")
    if launch.requeue and config_file is None and work_dir is None:
        raise VocsegError("--requeue: the requeued job must find the same run folder, so --work-dir is required.", "Pass --work-dir RUN (the same in the requeued job).")
    if (launch.launcher == "slurm" or launch.nnodes > 1) and config_file is None and work_dir is None:
        raise VocsegError("Several launchers write one run folder: --work-dir is required with --launcher slurm or --nnodes > 1.", "Pass the same --work-dir on every machine/task (a shared folder for resuming).")
    if config_file is not None:
        experiment = experiment_from_config_file(config_file, flags)
        if experiment.recipe is not None and experiment.recipe.nnodes != launch.nnodes:
            raise VocsegError(f"{config_file} is planned for {experiment.recipe.nnodes} machine(s), not --nnodes {launch.nnodes}.", "Train it with its --nnodes, or write a new config.")
        return experiment, None
    if recipe is None:
        raise ValueError("start: a recipe or a config file")
    # --gpus/--nproc count per machine; the total batch (and so the LR) spans every machine.
    recipe = dataclasses.replace(recipe, nnodes=launch.nnodes)
    validate(recipe)
    launch_plan = plan_launch(recipe, launch)
    return plan_experiment(recipe, work_dir=work_dir, check_pretrained=True, new_run=True), launch_plan


def start_run_on_this_node(experiment: Experiment, primary: bool) -> Path:
    """The primary process writes the run folder; the others (node rank > 0, Slurm tasks > 0)
    write the same files only where they are missing or differ (a folder not shared between
    machines), each through its own temporary file."""
    from vocseg.console import command
    from vocseg.files import owned_write_bytes
    from vocseg.runs.folders import CONFIG_NAME, RECIPE_NAME, latest_checkpoint
    from vocseg.training.experiment import start_run

    if primary:
        return start_run(experiment)
    work_dir = experiment.work_dir
    if latest_checkpoint(work_dir) is not None:
        raise VocsegError(f"{work_dir} already holds a run with checkpoints.", f"Continue it with `{command('resume', work_dir)}`, or pass another --work-dir.")
    files = {CONFIG_NAME: experiment.config_text}
    if experiment.recipe is not None:
        files[RECIPE_NAME] = experiment.recipe.to_json() + "\n"
    for name, text in files.items():
        path = work_dir / name
        if not path.is_file() or path.read_text() != text:
            owned_write_bytes(path, text.encode())
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
def _set_env(name: str) -> Iterator[None]:
    """`name`=1 in the environment while training is launched (the processes skip the check just done)."""
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
