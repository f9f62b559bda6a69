"""How vocseg's launcher and its training processes talk: environment variables, exit codes and
the stop message. Imported by both sides; imports nothing heavy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

EXIT_SIGNAL = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}  # shell convention: 128 + signal
STOP_FILE_ENV = "VOCSEG_STOP_FILE"
# How the training processes were started, told to them rather than guessed from variables such
# as SLURM_NTASKS or WORLD_SIZE that an enclosing job may have set for something else.
LAUNCHER_ENV = "VOCSEG_LAUNCHER"


def launcher_from_env() -> str:
    """'pytorch' under torchrun, 'slurm' under srun, else 'none'.

    vocseg's launcher says which (VOCSEG_LAUNCHER): a one-process run inside an sbatch job or
    under an outer torchrun must not take the job's SLURM_NTASKS/WORLD_SIZE as its own and wait
    for processes that never come. Without it (mmseg-style use of the worker) it is inferred.
    """
    told = os.environ.get(LAUNCHER_ENV)
    if told in ("pytorch", "slurm", "none"):
        return told
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return "pytorch"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    return "none"


def stop_message(work_dir: Path, iteration: int | None) -> str:
    at = f" at iteration {iteration}" if iteration is not None else ""
    return f"[yellow]stopped{at}; checkpoint saved.[/] Continue with: vocseg resume {work_dir}"
