"""Run training (fresh or resumed) in this process through MMEngine's Runner.

One process per GPU: `vocseg.launch` starts this code under torchrun when several are used.
MMEngine's console log goes to the run's log file only (it is long); the person at the terminal
sees vocseg's progress lines. `--verbose` shows MMEngine's log as well.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.runs import latest_checkpoint


@dataclass(frozen=True)
class TrainOutcome:
    work_dir: Path
    iterations: int
    checkpoint: Path | None


def launcher_from_env() -> str:
    """'pytorch' under torchrun, 'slurm' under srun, else 'none'."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return "pytorch"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    return "none"


class _Discard(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def build_runner(config_path: Path, *, resume: bool, verbose: bool, cfg_options: dict[str, Any] | None = None) -> Any:
    from vocseg.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(config_path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher_from_env()
    cfg.resume = resume
    cfg.load_from = None
    hooks = list(cfg.get("custom_hooks", []))
    if not any(h.get("type") == "VocsegProgressHook" for h in hooks):
        hooks.append(dict(type="VocsegProgressHook", priority="VERY_LOW"))
    cfg.custom_hooks = hooks
    # MMLogger binds sys.stdout when it is created: route it away unless asked for.
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_Discard()):
        runner = Runner.from_cfg(cfg)
    return runner


def train(config_path: Path, *, resume: bool = False, verbose: bool = False) -> TrainOutcome:
    """Train from a vocseg/mmseg config file; with `resume`, continue from the work dir's newest checkpoint."""
    from vocseg.engine import TrainingInterrupted

    runner = build_runner(config_path, resume=resume, verbose=verbose)
    work_dir = Path(runner.work_dir)
    if resume and latest_checkpoint(work_dir) is None:
        raise VocsegError(f"Run folder {work_dir} has no checkpoint to resume from.", "Start it with `vocseg train` instead.")
    try:
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_Discard()):
            runner.train()
    except TrainingInterrupted:
        raise
    return TrainOutcome(work_dir=work_dir, iterations=runner.iter, checkpoint=latest_checkpoint(work_dir))
