"""vocseg's MMEngine components: exact, instant resume and safe checkpoints.

- `VocsegResumableSampler`: an endless stream of per-epoch permutations (seed + epoch, as
  DefaultSampler), each epoch padded to whole batches. It can start at any iteration, so a
  resume skips trained batches without loading them (MMEngine's loop replays them all).
- `VocsegSeededDataset`: seeds `random`/`numpy`/`torch` from (seed, global sample position)
  around each sample's pipeline, so augmentation is the same after a resume, with any number
  of workers.
- `VocsegResumableIterLoop`: positions the sampler on resume; on SIGTERM / Ctrl-C it finishes
  the iteration, saves a checkpoint and stops (`TrainingInterrupted`).
- `VocsegCheckpointHook`: saves first, then points `last_checkpoint` at the new file
  (atomically), then deletes old ones. MMEngine's deletes first.
- `VocsegRngStateHook`: stores every process's RNG states in checkpoints and restores them.
- `VocsegPerClassIoUMetric`: mmseg's IoUMetric that also keeps its per-class table.
"""

from __future__ import annotations

import math
import os
import random
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_dist_info, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import IterBasedTrainLoop
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, METRICS
from torch.utils.data import Sampler

from vocseg.compat import write_bytes_atomic


class TrainingInterrupted(Exception):
    """Raised after a stop request was honoured: a checkpoint at `iteration` is on disk."""

    def __init__(self, iteration: int, signum: int, work_dir: str) -> None:
        super().__init__(f"stopped at iteration {iteration}")
        self.iteration = iteration
        self.signum = signum
        self.work_dir = work_dir


@DATA_SAMPLERS.register_module(name="VocsegResumableSampler")
class ResumableSampler(Sampler):
    """Endless, resumable, distributed sampler. Yields encoded ints `position * N + index`."""

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool = True, seed: int | None = None) -> None:
        rank, world_size = get_dist_info()
        self.rank, self.world_size = rank, world_size
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
        torch.manual_seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def _sampler_of(dataloader: Any) -> Any:
    sampler = getattr(dataloader, "sampler", None)
    if sampler is None or not hasattr(sampler, "set_start_iter"):
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", sampler)
    return sampler


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between iterations; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
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


@LOOPS.register_module(name="VocsegResumableIterLoop")
class ResumableIterLoop(IterBasedTrainLoop):
    """IterBasedTrainLoop whose resume costs the same at any iteration, and that stops cleanly."""

    def run(self) -> Any:
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        sampler = _sampler_of(self.dataloader)
        if hasattr(sampler, "set_start_iter"):
            sampler.set_start_iter(self._iter)
            self.dataloader_iterator = iter(self.dataloader)
        else:  # another sampler (a hand-edited config): MMEngine's slow path
            for _ in range(self._iter):
                next(self.dataloader_iterator)
        iters_per_epoch = max(1, len(self.dataloader))
        with _StopRequest() as stop:
            while self._iter < self._max_iters and not self.stop_training:
                self.runner.model.train()
                self._epoch = self._iter // iters_per_epoch
                data_batch = next(self.dataloader_iterator)
                self.run_iter(data_batch)
                signum = stop.agreed()
                if signum:
                    self._save_now()
                    raise TrainingInterrupted(self._iter, signum, self.runner.work_dir)
                self._decide_current_val_interval()
                if (
                    self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
                ):
                    self.runner.val_loop.run()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model

    def _save_now(self) -> None:
        for hook in self.runner.hooks:
            if isinstance(hook, CheckpointHook):
                hook._save_checkpoint_with_step(self.runner, self._iter, dict(epoch=self.runner.epoch, iter=self._iter))
                return


@HOOKS.register_module(name="VocsegCheckpointHook")
class SafeCheckpointHook(CheckpointHook):
    """CheckpointHook that never leaves `last_checkpoint` pointing at a deleted or partial file."""

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        stale = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        write_bytes_atomic(os.path.join(runner.work_dir, "last_checkpoint"), str(self.last_ckpt).encode())
        if stale is not None and stale != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@HOOKS.register_module(name="VocsegRngStateHook")
class RngStateHook(Hook):
    """Every rank's RNG state (dropout and the like) travels with the checkpoint."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        states = all_gather_object(_rng_state()) if is_distributed() else [_rng_state()]
        checkpoint["vocseg_rng"] = states

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        states = checkpoint.get("vocseg_rng")
        rank, world = get_dist_info()
        if not states or len(states) != world:
            return
        state = states[rank]
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@METRICS.register_module(name="VocsegPerClassIoUMetric")
class PerClassIoUMetric(IoUMetric):
    """IoUMetric, keeping the per-class values (percent) and the raw areas of the last evaluation."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("iou_metrics", ["mIoU", "mDice", "mFscore"])
        super().__init__(**kwargs)
        self.last_per_class: dict[str, dict[str, float]] = {}
        self.last_areas: dict[str, np.ndarray] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        columns = tuple(zip(*results))
        areas = [sum(c) for c in columns]
        self.last_areas = {
            name: (a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a))
            for name, a in zip(("intersect", "union", "pred", "label"), areas)
        }
        per_metric = self.total_area_to_metrics(*areas, self.metrics, self.nan_to_num, self.beta)
        per_metric.pop("aAcc", None)
        classes = self.dataset_meta["classes"]
        self.last_per_class = {
            name: {key: round(float(values[i]) * 100, 2) for key, values in per_metric.items()}
            for i, name in enumerate(classes)
        }
        return super().compute_metrics(results)


@HOOKS.register_module(name="VocsegProgressHook")
class ProgressHook(Hook):
    """Compact progress for the person at the terminal (rank 0): iteration, loss, LR, speed, ETA, val mIoU."""

    priority = "VERY_LOW"

    def __init__(self, interval: int | None = None) -> None:
        self.interval = interval
        self._t0 = 0.0
        self._start_iter = 0
        self._images = 0
        self.best_miou: float | None = None

    def _console(self) -> Any:
        import sys

        from rich.console import Console

        # sys.stdout may be routed away from MMEngine's console log; print to the real one.
        return Console(file=sys.__stdout__, highlight=False)

    def before_train(self, runner: Any) -> None:
        import time

        self._t0 = time.perf_counter()
        self._start_iter = runner.iter
        if self.interval is None:
            self.interval = max(1, min(50, runner.max_iters // 20))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        import time
        from datetime import timedelta

        if data_batch is not None:
            self._images += len(data_batch["inputs"]) * get_dist_info()[1]
        done = runner.iter + 1
        if not is_main_process() or (done % self.interval and done != runner.max_iters):
            return
        elapsed = time.perf_counter() - self._t0
        per_iter = elapsed / max(1, done - self._start_iter)
        eta = timedelta(seconds=int(per_iter * (runner.max_iters - done)))
        loss = float(outputs["loss"]) if outputs and "loss" in outputs else float("nan")
        lr = runner.optim_wrapper.get_lr()["lr"][0]
        speed = self._images / max(elapsed, 1e-9)
        ipe = max(1, len(runner.train_dataloader))
        self._console().print(
            f"iter {done}/{runner.max_iters}  epoch {done / ipe:.1f}  loss {loss:.4f}  lr {lr:.2e}  "
            f"{speed:.1f} img/s  ETA {eta}"
        )

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not is_main_process() or not metrics or "mIoU" not in metrics:
            return
        miou = float(metrics["mIoU"])
        self.best_miou = miou if self.best_miou is None else max(self.best_miou, miou)
        self._console().print(f"[bold]val[/] iter {runner.iter}: mIoU {miou:.2f}  mAcc {float(metrics.get('mAcc', 0)):.2f}  aAcc {float(metrics.get('aAcc', 0)):.2f}  (best {self.best_miou:.2f})")
