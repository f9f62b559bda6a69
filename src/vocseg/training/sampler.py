"""vocseg's data order: a resumable sampler and per-sample seeding.

- `VocsegResumableSampler`: an endless stream of per-epoch permutations (seed + epoch, as
  DefaultSampler), each epoch padded to whole batches. It can start at any iteration, so a
  resume skips trained batches without loading them (MMEngine's loop replays them all).
- `VocsegSeededDataset`: seeds `random`/`numpy`/`torch` from (seed, global sample position)
  around each sample's pipeline, so augmentation is the same after a resume, with any number
  of workers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmseg.registry import DATA_SAMPLERS, DATASETS
from torch.utils.data import Sampler


@DATA_SAMPLERS.register_module(name="VocsegResumableSampler")
class ResumableSampler(Sampler):
    """Endless, resumable, distributed sampler. Yields encoded ints `position * N + index`."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        dist_rank, dist_world = get_dist_info()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        world_size = self.world_size
        self.dataset_size = len(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = 0 if seed is None else seed
        self.iters_per_epoch = math.ceil(math.ceil(self.dataset_size / world_size) / batch_size)
        self.per_rank = self.iters_per_epoch * batch_size
        self.total = self.per_rank * world_size
        self.start = 0  # samples of this rank already consumed

    def __len__(self) -> int:
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        """Epochs are part of the stream; kept for DistSamplerSeedHook."""

    def set_start_iter(self, iteration: int) -> None:
        self.start = iteration * self.batch_size

    def epoch_order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.dataset_size, generator=g).tolist()
        else:
            order = list(range(self.dataset_size))
        # Pad to whole batches on every rank by wrapping around, as DefaultSampler's round_up.
        return (order * (self.total // self.dataset_size + 1))[: self.total]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        n = self.dataset_size
        while True:
            order = self.epoch_order(epoch)
            base = epoch * self.total
            for j in range(self.rank + offset * self.world_size, self.total, self.world_size):
                yield (base + j) * n + order[j]
            offset = 0
            epoch += 1




@DATASETS.register_module(name="VocsegSeededDataset")
class SeededDataset:
    """Wraps a dataset; item `position * N + index` is item `index` with RNGs seeded by position."""

    def __init__(self, dataset: dict | Any, seed: int = 0) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.seed = seed

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, "full_init"):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int) -> Any:
        n = len(self.dataset)
        position, index = divmod(int(key), n)
        sample_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        # CPU generator only: torch.manual_seed would also reset the CUDA generators (dropout).
        torch.default_generator.manual_seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def sampler_of(dataloader: Any) -> Any:
    sampler = getattr(dataloader, "sampler", None)
    if sampler is None or not hasattr(sampler, "set_start_iter"):
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", sampler)
    return sampler
