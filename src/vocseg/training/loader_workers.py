"""DataLoader workers that survive a stop request sent to the whole process group, and that end
with training (not whenever the garbage collector reaches the loader)."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
from typing import Any

# Set by the training process when its interpreter exits; forked DataLoader workers read it.
_MAIN_PID = os.getpid()
_MAIN_EXITING = multiprocessing.RawValue("b", 0)
atexit.register(lambda: setattr(_MAIN_EXITING, "value", 1))
_loader_handlers_in: int | None = None


def _loader_worker_signal(signum: int, frame: Any) -> None:
    if _MAIN_EXITING.value or os.getppid() == 1:
        os._exit(0)  # the training process is exiting (multiprocessing terminates its workers)
    # Otherwise a signal to the whole process group (Ctrl-C, torchrun, Slurm, kill -- -PGID):
    # keep serving batches; the training process finishes its iteration, saves and stops.


def _guard_loader_worker() -> None:
    """In a forked DataLoader worker, SIGTERM/SIGINT/SIGUSR1 no longer kill it mid-training.

    A worker killed by a signal makes PyTorch abort the training process (or fail its next
    batch), so a stop request sent to the whole process group could not save a checkpoint.
    """
    global _loader_handlers_in
    pid = os.getpid()
    if _loader_handlers_in == pid:
        return
    _loader_handlers_in = pid
    from torch.utils.data import get_worker_info

    if pid != _MAIN_PID and get_worker_info() is not None:  # forked: it shares _MAIN_EXITING
        signal.signal(signal.SIGTERM, _loader_worker_signal)
        signal.signal(signal.SIGINT, _loader_worker_signal)
        signal.signal(signal.SIGUSR1, _loader_worker_signal)  # Slurm's time-limit warning (--requeue)


class _GuardedWorkerInit:
    """A DataLoader `worker_init_fn` that guards the worker first, then runs the loader's own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        _guard_loader_worker()
        if self.inner is not None:
            self.inner(worker_id)


def guard_loader_workers(dataloader: Any) -> None:
    """Make the workers `dataloader` starts from now on ignore stop signals while training runs
    (training and validation loaders alike: any killed worker aborts the training process)."""
    if dataloader is None or not getattr(dataloader, "num_workers", 0):
        return
    if not isinstance(dataloader.worker_init_fn, _GuardedWorkerInit):
        dataloader.worker_init_fn = _GuardedWorkerInit(dataloader.worker_init_fn)


def shutdown_loader_workers(dataloader: Any, *iterators: Any) -> None:
    """Stop the worker processes of `dataloader`'s persistent iterator and of `iterators`."""
    candidates = [*iterators, getattr(dataloader, "_iterator", None)]
    for it in candidates:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):  # best effort: never hide how training ended
                shutdown()
    if dataloader is not None and getattr(dataloader, "_iterator", None) is not None:
        dataloader._iterator = None  # a later iteration starts new workers
