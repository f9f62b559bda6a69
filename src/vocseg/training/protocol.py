"""How vocseg's launcher and its training processes talk: environment variables, exit codes and
the stop message. Imported by both sides; imports nothing heavy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from vocseg.errors import VocsegError

EXIT_SIGNAL = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}  # shell convention: 128 + signal
# The run health guard stopped training (`vocseg.training.health`): a non-finite loss or model, or
# nothing to learn. Distinct from 1 (a crash) and 2 (a refused input) for scripts that retry.
EXIT_UNHEALTHY = 3
STOP_FILE_ENV = "VOCSEG_STOP_FILE"
# How the training processes were started, told to them rather than guessed from variables such
# as SLURM_NTASKS or WORLD_SIZE that an enclosing job may have set for something else.
LAUNCHER_ENV = "VOCSEG_LAUNCHER"
# `--requeue`: SIGUSR1 (Slurm's warning before the time limit) is a stop request too, and the
# stop ends with `scontrol requeue $SLURM_JOB_ID`.
REQUEUE_ENV = "VOCSEG_REQUEUE"
REQUEUE_SIGNAL = signal.SIGUSR1


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
    from vocseg.console import command, shown

    return f"[yellow]stopped{at}; checkpoint saved.[/] Continue with: {shown(command('resume', work_dir))}"


def requeue_requested() -> bool:
    return os.environ.get(REQUEUE_ENV) == "1"


def check_requeue_possible() -> str:
    """`--requeue` needs a Slurm job and `scontrol`: checked before anything is written. Returns the job id."""
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        raise VocsegError("--requeue: this is not a Slurm job (no SLURM_JOB_ID).", "Use --requeue inside an sbatch job (see docs/restarts.md), or drop it.")
    if shutil.which("scontrol") is None:
        raise VocsegError("--requeue: `scontrol` is not on PATH, so the job cannot requeue itself.", "Run it where the Slurm client tools are installed, or drop --requeue.")
    return job


def requeue_job(work_dir: Path, iteration: int | None) -> str:
    """`scontrol requeue $SLURM_JOB_ID` after a stop on SIGUSR1; the message to print. Raises a
    VocsegError (exit 143, the checkpoint is saved) when Slurm refuses."""
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    at = f" at iteration {iteration}" if iteration is not None else ""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        failure = (done.stderr or done.stdout).strip().splitlines()[:1] if done.returncode else None
    except (OSError, subprocess.SubprocessError) as exc:
        failure = [str(exc)]
    if failure is not None:
        reason = failure[0] if failure else "no message"
        raise VocsegError(
            f"Stopped{at} for the Slurm time limit and saved a checkpoint, but `scontrol requeue {job}` failed: {reason}.",
            f"Submit the job again, or continue with: vocseg resume {work_dir}", exit_code=143,
        )
    return f"[yellow]stopped{at} before the Slurm time limit; checkpoint saved; job {job} requeued.[/] It resumes when it starts again."
