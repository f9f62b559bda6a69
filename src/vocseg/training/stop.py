"""Stop requests: SIGTERM / Ctrl-C become a flag that every rank agrees on between iterations."""

from __future__ import annotations

import signal
import time
from typing import Any

import torch
from mmengine.dist import all_reduce, is_distributed

from vocseg.training.protocol import REQUEUE_SIGNAL, requeue_requested


class TrainingInterrupted(Exception):
    """Raised after a stop request was honoured: a checkpoint at `iteration` is on disk."""

    def __init__(self, iteration: int, signum: int, work_dir: str) -> None:
        super().__init__(f"stopped at iteration {iteration}")
        self.iteration = iteration
        self.signum = signum
        self.work_dir = work_dir


class RunUnhealthy(Exception):
    """Raised by `VocsegHealthHook` on every rank at the same iteration: the run cannot be right
    (a non-finite loss or model, nothing to learn). Nothing was saved for `iteration`."""

    def __init__(self, iteration: int, message: str, hint: str, work_dir: str) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.message = message
        self.hint = hint
        self.work_dir = work_dir


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between iterations; with `--requeue`
    (VOCSEG_REQUEUE=1), SIGUSR1 too (Slurm's warning before the time limit).

    A second Ctrl-C more than a second after the first aborts without saving; signals that
    arrive together (the terminal and a launcher both forwarding one Ctrl-C) count once.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signum and signum == signal.SIGINT and now - self._first_at > 1.0:
            raise KeyboardInterrupt
        if not self.signum:
            self.signum, self._first_at = signum, now

    def __enter__(self) -> StopRequest:
        for sig in stop_signals():
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self) -> int:
        """The signal number if any rank was asked to stop (all ranks stop at the same iteration)."""
        if not is_distributed():
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64)
        if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl":
            flag = flag.cuda()
        all_reduce(flag, op="max")
        return int(flag.item())


def stop_signals() -> tuple[int, ...]:
    """The signals that request a stop: SIGTERM, SIGINT, and SIGUSR1 with --requeue."""
    return (signal.SIGTERM, signal.SIGINT, *((REQUEUE_SIGNAL,) if requeue_requested() else ()))


VAL_STOP_CHECK_EVERY = 10  # validation batches between stop checks


class StopInValidation(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
