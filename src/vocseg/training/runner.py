"""Run training (fresh or resumed) in this process through MMEngine's Runner.

One process per GPU: `vocseg.training.launch` starts this code under torchrun when several are used.
MMEngine's console log goes to the run's log file only (it is long); the person at the terminal
sees vocseg's progress display. `--verbose` shows MMEngine's log as well (and plain progress
lines, which mix with it better than a live display).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.console import quiet_stdout
from vocseg.errors import VocsegError, interruption_behind
from vocseg.recipe.mmconfig import COLLECT_DIR
from vocseg.runs.folders import latest_checkpoint
from vocseg.stack.instance_names import unique_instance_names
from vocseg.training.protocol import launcher_from_env


@dataclass(frozen=True)
class TrainOutcome:
    work_dir: Path
    iterations: int
    checkpoint: Path | None


def _init_cpu_process_group(launcher: str, cfg: Any) -> None:
    """MMEngine's init_dist always calls torch.cuda.set_device: on a CPU-only process it fails.
    Start the gloo process group here (the Runner then skips its own), and let DDP wrap a CPU
    module (device_ids=None)."""
    import torch
    import torch.distributed as dist

    if launcher == "none" or torch.cuda.is_available():
        return
    if launcher == "slurm":
        raise VocsegError("--launcher slurm runs one task per GPU, but this task sees no GPU.", "Request GPUs from Slurm (--gres), or use --device cpu --nproc N without Slurm.")
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper["device_ids"] = None
    wrapper.setdefault("broadcast_buffers", False)
    wrapper.setdefault("find_unused_parameters", cfg.get("find_unused_parameters", False))
    cfg.model_wrapper_cfg = wrapper


def _check_data(cfg: Any) -> None:
    """The data pre-check (`vocseg.data.precheck`) before the Runner is built, unless the launching
    `vocseg train` has just run it; under torchrun, once per machine (local rank 0)."""
    import os

    from vocseg.data.precheck import CHECKED_ENV, check_before_training, specs_from_config

    if os.environ.get(CHECKED_ENV) == "1" or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    from vocseg.console import console

    check_before_training(specs_from_config(cfg), console=console)


def build_runner(
    config_path: Path,
    *,
    resume: bool,
    verbose: bool,
    rescale_lr: bool = False,
    cfg_options: dict[str, Any] | None = None,
) -> Any:
    from vocseg.runs.run_config import read_config
    from vocseg.stack.compat import fix_class_weight_loss

    cfg = read_config(config_path)  # after ensure_stack: the Runner below comes from the patched stack
    fix_class_weight_loss()  # also for a config without vocseg's custom_imports
    from mmengine.runner import Runner

    from vocseg.training.trackers import apply_log_to_override

    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    _check_data(cfg)
    # The run folder is where the config lives (a moved or copied run keeps working).
    work_dir = config_path.resolve().parent
    cfg.work_dir = str(work_dir)
    _collect_in(cfg, work_dir / COLLECT_DIR)
    cfg.launcher = launcher_from_env()
    unique_instance_names(cfg, work_dir.name)
    cfg.resume = resume
    if not resume:
        cfg.load_from = cfg.get("load_from") or None  # --load-from: fine-tuning (MMEngine's non-strict load)
    else:
        cfg.load_from = None
    if resume:
        checkpoint = latest_checkpoint(work_dir)
        if checkpoint is None:
            raise VocsegError(f"Run folder {work_dir} has no checkpoint to resume from.", "Start it with `vocseg train` instead.")
        cfg.load_from = str(checkpoint)  # with resume=True: resume from exactly this file
    hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") not in ("VocsegProgressHook", "VocsegBatchGuardHook")]
    if not any(h.get("type") == "VocsegHealthHook" for h in hooks):
        hooks.append(dict(type="VocsegHealthHook"))  # configs not written by vocseg are guarded too
    hooks.append(dict(type="VocsegProgressHook", display="plain" if verbose else "auto", priority="VERY_LOW"))
    hooks.append(dict(type="VocsegBatchGuardHook", rescale_lr=rescale_lr, priority="VERY_LOW"))
    cfg.custom_hooks = hooks
    apply_log_to_override(cfg, work_dir)  # `vocseg resume --log-to`; config.py stays as written
    _init_cpu_process_group(cfg.launcher, cfg)
    # Nothing a vocseg user can act on: mmseg's visualization hook is off on purpose.
    warnings.filterwarnings("ignore", message=".*The draw is False.*")
    # MMEngine's DDP wrapper passes the argument itself; the user cannot change it.
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated.*")
    # MMLogger binds sys.stdout when it is created: route it away unless asked for.
    class VocsegRunner(Runner):
        def setup_env(self, env_cfg: Any) -> None:
            """MMEngine's, then its timestamped log folder noted in the run folder's record before
            MMEngine creates it (right after this): a run stopped before its first checkpoint then
            holds only vocseg's entries, and `vocseg train RUN/config.py` continues it."""
            super().setup_env(env_cfg)
            from mmengine.dist import is_main_process

            from vocseg.files import record_folder_made_here

            if is_main_process():
                record_folder_made_here(Path(self._work_dir) / self._timestamp, role="run")

        def dump_config(self) -> None:
            """Keep vocseg's config.py as written: MMEngine would overwrite it with runtime settings
            (resume, load_from, launcher). The effective config still goes to the log folder
            (`<timestamp>/vis_data/config.py`)."""

    with quiet_stdout(verbose):
        runner = VocsegRunner.from_cfg(cfg)
    return runner


def _progress_hooks(runner: Any) -> list[Any]:
    from vocseg.training.progress import ProgressHook

    return [h for h in runner.hooks if isinstance(h, ProgressHook)]


def train(config_path: Path, *, resume: bool = False, verbose: bool = False, rescale_lr: bool = False) -> TrainOutcome:
    """Train from a vocseg/mmseg config file; with `resume`, continue from the run folder's newest checkpoint."""
    from vocseg.training.stop import RunUnhealthy, TrainingInterrupted

    def build() -> Any:
        built = build_runner(config_path, resume=resume, verbose=verbose, rescale_lr=rescale_lr)
        with quiet_stdout(verbose):
            built.train_loop  # noqa: B018 - builds the loop, its dataset and loader: config mistakes show here
            built.val_loop  # noqa: B018
        return built

    runner = _config_errors_in_one_line(config_path, build, verbose=verbose)
    work_dir = Path(runner.work_dir)
    try:
        with quiet_stdout(verbose):
            runner.train()
    except (TrainingInterrupted, RunUnhealthy):
        _close_process_group()  # every rank stopped at the same iteration
        raise
    finally:
        for hook in _progress_hooks(runner):
            hook.close()
    _close_process_group()
    return TrainOutcome(work_dir=work_dir, iterations=runner.iter, checkpoint=latest_checkpoint(work_dir))


def _config_errors_in_one_line(config_path: Path, build: Any, *, verbose: bool) -> Any:
    """A hand-edited config that MMEngine cannot build (a wrong argument, an unknown type) is the
    user's to fix: one line naming it. --verbose keeps the traceback. A Ctrl-C or SIGTERM that a
    library turned into its own error on the way (MMEngine formats the config inside a bare
    `except:` and raises SyntaxError) is raised again as the interruption it was."""
    try:
        return build()
    except VocsegError:
        raise
    except Exception as exc:
        interrupt = interruption_behind(exc)
        if interrupt is not None:
            raise interrupt from None
        if verbose:
            raise
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else ""
        raise VocsegError(
            f"Cannot build the training run from {config_path}: {type(exc).__name__}: {first}.",
            "Fix the config (or write one with `vocseg config`); `vocseg --verbose train ...` shows the traceback.",
        ) from None


def _close_process_group() -> None:
    """Leave the process group together: a process that exits with it open can abort in
    c10d's teardown ("terminate called without an active exception") and fail the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _collect_in(cfg: Any, folder: Path) -> None:
    """vocseg's metrics gather a multi-process validation's results in `folder` (the run folder's
    .dist_test/, also for a moved run or a config written without collect_dir), never in the
    current folder. Other metric types are left as configured: not every one accepts collect_dir."""
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
            if isinstance(metric, dict) and str(metric.get("type", "")).startswith("Vocseg") and metric.get("collect_device", "cpu") == "cpu":
                metric["collect_dir"] = str(folder)
