"""One training process: `python -m vocseg.training.worker CONFIG [--resume] [--rescale-lr]` (what torchrun starts).

Also called in-process for single-process runs and Slurm tasks. Returns 0, or 130/143 after a
clean stop on Ctrl-C/SIGTERM (a checkpoint is on disk), with the command that resumes; a stop of
the run health guard (`vocseg.training.health`) is a VocsegError with exit code 3. Under
vocseg's own torchrun launch (`VOCSEG_STOP_FILE` set) a clean stop exits 0 (torchrun would
report any other code as a crash) and local rank 0 leaves a note for the launcher instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vocseg.errors import VocsegError
from vocseg.training.protocol import EXIT_SIGNAL, EXIT_UNHEALTHY, REQUEUE_SIGNAL, STOP_FILE_ENV, launcher_from_env, requeue_job, stop_message

RESTART_COUNT_ENV = "TORCHELASTIC_RESTART_COUNT"  # set by torchrun's elastic agent in every process it starts


def _is_rank0() -> bool:
    launcher = launcher_from_env()
    if launcher == "none":
        return True
    return os.environ.get("SLURM_PROCID" if launcher == "slurm" else "RANK", "0") == "0"


def restart_resumes(config_path: Path, resume: bool) -> bool:
    """After torchrun's agent restarted the processes (`--max-restarts`), each resumes from the
    run's last complete checkpoint (none yet: it trains from the start again)."""
    from vocseg.console import console
    from vocseg.runs.folders import latest_checkpoint, remove_stale_temp_files

    restarts = int(os.environ.get(RESTART_COUNT_ENV, "0") or 0)
    if restarts < 1:
        return resume
    work_dir = config_path.resolve().parent
    if os.environ.get("LOCAL_RANK", "0") == "0":
        remove_stale_temp_files(work_dir)  # half-written files of the processes that died
    checkpoint = latest_checkpoint(work_dir)
    if _is_rank0():
        source = f"resuming from {checkpoint.name}" if checkpoint is not None else "no checkpoint yet: training from the start"
        console.print(f"[yellow]restart {restarts}[/] after a failed process: {source}", soft_wrap=True)
    return resume or checkpoint is not None


def run_worker(config_path: Path, *, resume: bool, verbose: bool, rescale_lr: bool = False) -> int:
    from vocseg.console import console
    from vocseg.training.runner import train
    from vocseg.training.stop import RunUnhealthy, TrainingInterrupted

    resume = restart_resumes(config_path, resume)
    try:
        outcome = train(config_path, resume=resume, verbose=verbose, rescale_lr=rescale_lr)
    except RunUnhealthy as unhealthy:
        # The health guard's stop: under vocseg's torchrun launch a note for the launcher and exit 0
        # (a non-zero exit would make torchrun restart the processes into the same failure).
        stop_file = os.environ.get(STOP_FILE_ENV)
        if stop_file:
            if os.environ.get("LOCAL_RANK", "0") == "0":
                from vocseg.files import owned_write_bytes

                note = {"iteration": unhealthy.iteration, "error": unhealthy.message, "hint": unhealthy.hint}
                owned_write_bytes(stop_file, json.dumps(note).encode())
            return 0
        raise VocsegError(unhealthy.message, unhealthy.hint, exit_code=EXIT_UNHEALTHY) from None
    except TrainingInterrupted as stop:
        stop_file = os.environ.get(STOP_FILE_ENV)
        if stop_file:
            if os.environ.get("LOCAL_RANK", "0") == "0":
                from vocseg.files import owned_write_bytes

                owned_write_bytes(stop_file, json.dumps({"iteration": stop.iteration, "signal": stop.signum}).encode())
            return 0
        if stop.signum == REQUEUE_SIGNAL:  # --requeue: in-process or one Slurm task per GPU
            if _is_rank0():
                console.print(requeue_job(Path(stop.work_dir), stop.iteration), soft_wrap=True)
            return 0
        if _is_rank0():
            console.print(stop_message(Path(stop.work_dir), stop.iteration), soft_wrap=True)
        return EXIT_SIGNAL.get(stop.signum, 130)
    if _is_rank0():
        from vocseg.console import command, shown

        console.print(f"[green]done:[/] {outcome.iterations} iterations; checkpoint {shown(outcome.checkpoint)}", soft_wrap=True)
        next_commands = f"{command('eval', outcome.work_dir)}   |   {command('predict', 'IMAGE', '-c', outcome.work_dir)}"
        console.print(f"next: {shown(next_commands)}", soft_wrap=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vocseg.training.worker")
    parser.add_argument("config", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--rescale-lr", action="store_true")
    args = parser.parse_args(argv)
    from vocseg.training.resuming import fault_context

    try:
        with fault_context(args.config.resolve().parent):  # what is kept and the command that continues
            code = run_worker(args.config, resume=args.resume, verbose=args.verbose, rescale_lr=args.rescale_lr)
    except VocsegError as exc:
        if _is_rank0():
            print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except (OSError, RuntimeError) as exc:
        # Under torchrun the launcher's CLI never sees this process's exception: the same one line
        # (full disk, read-only folder, a killed loader worker) as a one-process run prints.
        from vocseg.errors import describe_os_error, describe_worker_death

        line = describe_worker_death(exc, []) or (describe_os_error(exc, []) if isinstance(exc, OSError) else None)
        if line is None or args.verbose:
            raise
        if _is_rank0():
            print(f"error: {line}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
