"""How many CPU threads and loader workers a training process uses, decided on the machine that
runs it. No heavy imports: the recipe (light) and the config's runtime hooks (heavy) share it.

Configs written by `vocseg config` carry `num_workers='auto'` / `persistent_workers='auto'`: a
config planned on a laptop and trained on an 8-GPU node gets the node's numbers, not the laptop's.
`resolve_loader_cfg` turns them into numbers when the Runner builds the loaders (the stack fix
in `vocseg.stack.speed` applies it in any process that imports `vocseg.mmseg_plugin`, mmseg's
own `tools/train.py` included).

Threads. A CPU-bound training process on a shared machine slows down far more than its share of
the cores explains when it runs more threads than it has cores to itself: PyTorch's OpenMP
intra-op threads wait for each other at the end of every parallel operator (spinning, then
sleeping), so one of them pre-empted by another job stalls all of them. vocseg gives the loader
workers a core each and the training process's intra-op threads the rest, at least one
(`intra_op_threads`); OpenCV runs single-threaded (MMEngine's `opencv_num_threads=0`) and each
loader worker runs one torch thread (PyTorch sets that in its workers). An OMP_NUM_THREADS the user
set is respected. The figures are in docs/performance.md (benchmarks/train_under_load.py).
"""

from __future__ import annotations

import os
import re
from typing import Any

AUTO = "auto"
WORKERS_CAP = 8  # past ~8 workers per process, decoding VOC crops stops being the limit


def machine_cpu_count() -> int:
    """Cores this process may use (the affinity mask, as a shared server's scheduler sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(cpu_count: int, procs_per_node: int, cap: int = WORKERS_CAP) -> int:
    """Data-loader workers per process: the node's cores shared by its processes, one left for the
    training process itself, at most `cap`. 2 cores, 1 process -> 1; 16 cores, 2 GPUs -> 7."""
    per_proc = max(1, cpu_count // max(1, procs_per_node))
    return max(0, min(cap, per_proc - 1))


def intra_op_threads(cpu_count: int, procs_per_node: int, workers: int) -> int:
    """torch intra-op threads of one training process: its share of the node's cores minus one
    per loader worker, at least 1. 2 cores, 1 process, 2 workers -> 1; 16 cores, 1 process,
    8 workers -> 8."""
    per_proc = max(1, cpu_count // max(1, procs_per_node))
    return max(1, per_proc - max(0, workers))


def local_processes() -> int:
    """Training processes on this machine, from the launcher's environment (torchrun's
    LOCAL_WORLD_SIZE, Slurm's SLURM_NTASKS_PER_NODE), else 1."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        m = re.match(r"\s*(\d+)", os.environ.get(var, ""))
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    return 1


def resolve_loader_cfg(loader: Any) -> Any:
    """A dataloader config dict with `num_workers='auto'` / `persistent_workers='auto'` resolved
    for this machine (a copy); anything else is returned as it is."""
    if not isinstance(loader, dict) or AUTO not in (loader.get("num_workers"), loader.get("persistent_workers")):
        return loader
    resolved = dict(loader)
    if resolved.get("num_workers") == AUTO:
        resolved["num_workers"] = loader_workers(machine_cpu_count(), local_processes())
    if resolved.get("persistent_workers") == AUTO:
        resolved["persistent_workers"] = int(resolved.get("num_workers") or 0) > 0
    return resolved


def workers_value(value: Any) -> int:
    """A config's `num_workers` as a number on this machine ('auto' resolved)."""
    if value == AUTO:
        return loader_workers(machine_cpu_count(), local_processes())
    return int(value or 0)
