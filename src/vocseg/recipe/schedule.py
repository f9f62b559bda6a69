"""The schedule and learning-rate arithmetic, as pure functions (unit- and property-tested).

The official mmseg VOC recipe is 4 GPUs x 4 images = batch 16 for 20k or 40k iterations at
LR 0.01. What carries over to another batch size is the number of samples seen, and the LR
scales linearly with the total batch (Goyal et al., 2017).
"""

from __future__ import annotations

import math

OFFICIAL_BATCH = 16
OFFICIAL_LR = 0.01
OFFICIAL_SCHEDULES: dict[str, int] = {"20k": 20_000, "40k": 40_000}
REFERENCE_SCHEDULE = "40k"


def scaled_lr(base_lr: float, base_batch: int, total_batch: int) -> float:
    """Linear scaling rule: LR = base LR x total batch / base batch."""
    if base_lr <= 0 or base_batch <= 0 or total_batch <= 0:
        raise ValueError("base_lr, base_batch and total_batch must be positive")
    return base_lr * total_batch / base_batch


def iters_per_epoch(dataset_size: int, batch_per_gpu: int, world_size: int) -> int:
    """Iterations in one epoch as mmengine's DefaultSampler + DataLoader really yield them.

    DefaultSampler(round_up=True) gives every rank ceil(N / world) indices; the DataLoader
    (drop_last=False) turns them into ceil(that / batch) batches.
    """
    if dataset_size <= 0 or batch_per_gpu <= 0 or world_size <= 0:
        raise ValueError("dataset_size, batch_per_gpu and world_size must be positive")
    per_rank = math.ceil(dataset_size / world_size)
    return math.ceil(per_rank / batch_per_gpu)


def samples_seen(iters: int, total_batch: int) -> int:
    return iters * total_batch


def equivalent_epochs(ref_iters: int, ref_batch: int, dataset_size: int) -> float:
    """Epochs over `dataset_size` images that see as many samples as `ref_iters` x `ref_batch`."""
    if dataset_size <= 0:
        raise ValueError("dataset_size must be positive")
    return ref_iters * ref_batch / dataset_size


def iters_for_samples(samples: int, total_batch: int) -> int:
    """Iterations at `total_batch` that see at least `samples` samples."""
    if total_batch <= 0:
        raise ValueError("total_batch must be positive")
    return math.ceil(samples / total_batch)


def official_schedule_iters(schedule: str, total_batch: int) -> int:
    """An official schedule (`20k`/`40k` at batch 16) at another batch, equal in samples seen."""
    if schedule not in OFFICIAL_SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(OFFICIAL_SCHEDULES)}")
    return iters_for_samples(OFFICIAL_SCHEDULES[schedule] * OFFICIAL_BATCH, total_batch)


def ratio_to_official(iters: int, total_batch: int, schedule: str = REFERENCE_SCHEDULE) -> float:
    """Samples seen relative to an official schedule (1.0 = the same amount of training)."""
    return samples_seen(iters, total_batch) / (OFFICIAL_SCHEDULES[schedule] * OFFICIAL_BATCH)
