"""Process pools whose workers never outlive the process that started them.

`concurrent.futures` workers are plain children: when `vocseg prepare` is killed with SIGKILL (or
its terminal closes), they keep converting or checking as orphans. Each worker here asks the
kernel for SIGKILL when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`), and also watches its
parent's pid from a thread (other systems; and the case where the parent died before the worker
set the signal). Workers write only through temporary names and renames, so a killed worker leaves
no half file. An interruption of the parent (Ctrl-C, SIGTERM as vocseg's `Terminated`) leaving the
pool's `with` block cancels the jobs not yet handed to a worker and waits for the others (at most
workers + 1): the command ends within the time of those, not of every submitted one, and only
once no worker writes any more.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL_S = 0.5


def _exit_when_orphaned(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)  # noqa: SLF001 - no cleanup to run: the parent is gone
        time.sleep(WATCH_INTERVAL_S)


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when process `parent` ends."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="vocseg-parent-watch").start()


class _StoppablePool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose `with` block, left by an exception (Ctrl-C, vocseg's
    `Terminated` on SIGTERM, a failed job), cancels the jobs not yet handed to a worker and waits
    only for those that were (at most workers + 1), instead of every submitted one
    (`ProcessPoolExecutor.__exit__` waits for all): the command ends within their time. Their
    files stay complete (temporary name + rename); a re-run converts or checks only what is missing."""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is not None:
            # Wait for the jobs already handed to a worker (at most workers + 1): until they end,
            # their files are being written, so the command's lock and its "no half-written file"
            # line must wait for them; only the ones never started are dropped.
            self.shutdown(wait=True, cancel_futures=True)
            return False
        return bool(super().__exit__(exc_type, exc, tb))


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` processes that exit when this process dies; leaving its
    `with` block by an exception cancels the pending jobs (`_StoppablePool`)."""
    return _StoppablePool(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
