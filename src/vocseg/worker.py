"""One training process: `python -m vocseg.worker CONFIG [--resume]` (what torchrun starts).

Also called in-process for single-process runs. Returns 0, or 130/143 after a clean stop on
Ctrl-C/SIGTERM (a checkpoint is on disk), with the command that resumes.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from vocseg.errors import VocsegError

EXIT_SIGNAL = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def run_worker(config_path: Path, *, resume: bool, verbose: bool) -> int:
    from vocseg.display import console
    from vocseg.engine import TrainingInterrupted
    from vocseg.training import train

    try:
        outcome = train(config_path, resume=resume, verbose=verbose)
    except TrainingInterrupted as stop:
        if _is_rank0():
            console.print(f"[yellow]stopped at iteration {stop.iteration}; checkpoint saved.[/] Continue with: vocseg resume {stop.work_dir}")
        return EXIT_SIGNAL.get(stop.signum, 130)
    if _is_rank0():
        console.print(f"[green]done:[/] {outcome.iterations} iterations; checkpoint {outcome.checkpoint}")
        console.print(f"next: vocseg eval {outcome.work_dir}   |   vocseg predict IMAGE --checkpoint {outcome.work_dir}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vocseg.worker")
    parser.add_argument("config", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        code = run_worker(args.config, resume=args.resume, verbose=args.verbose)
    except VocsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    sys.exit(code)


if __name__ == "__main__":
    main()
