"""vocseg's MMEngine components: exact, instant resume and safe checkpoints.

- `VocsegResumableSampler`: an endless stream of per-epoch permutations (seed + epoch, as
  DefaultSampler), each epoch padded to whole batches. It can start at any iteration, so a
  resume skips trained batches without loading them (MMEngine's loop replays them all).
- `VocsegSeededDataset`: seeds `random`/`numpy`/`torch` from (seed, global sample position)
  around each sample's pipeline, so augmentation is the same after a resume, with any number
  of workers.
- `VocsegResumableIterLoop`: positions the sampler on resume before the data iterator starts;
  keeps validation and the data loader's start-up from drawing on the training RNG streams; on
  SIGTERM / Ctrl-C it finishes the iteration (or abandons the validation), saves a checkpoint
  and stops (`TrainingInterrupted`); a validation a stop cut off runs first on resume. Loader
  workers (training and validation) ignore stop signals sent to the whole process group.
- `VocsegCheckpointHook`: saves first, then points `last_checkpoint` at the new file
  (atomically), then deletes old ones, the previous best checkpoint included. MMEngine's
  deletes first.
- `VocsegRngStateHook`: stores every process's RNG states in checkpoints and restores them.
- `VocsegBatchGuardHook`: records the total batch in checkpoints; a resume with another one is
  refused, or (when asked) the LR schedule in the checkpoint is rescaled linearly.
- `VocsegPerClassIoUMetric`: mmseg's IoUMetric that also keeps its per-class table.
- `VocsegProgressHook`: one live display on rank 0 (plain lines when not a terminal), and
  `curves.png` in the run folder at each validation.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_dist_info, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.runner.utils import calc_dynamic_intervals
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, METRICS
from torch.utils.data import Sampler

from vocseg.checkpoints import VAL_PENDING_KEY
from vocseg.compat import write_bytes_atomic
from vocseg.errors import VocsegError


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
    """In a forked DataLoader worker, SIGTERM/SIGINT no longer kill it mid-training.

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


def _shutdown_loader_workers(dataloader: Any, *iterators: Any) -> None:
    """Stop the worker processes of `dataloader`'s persistent iterator and of `iterators`."""
    candidates = [*iterators, getattr(dataloader, "_iterator", None)]
    for it in candidates:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            with contextlib.suppress(Exception):  # best effort: never hide how training ended
                shutdown()
    if dataloader is not None and getattr(dataloader, "_iterator", None) is not None:
        dataloader._iterator = None  # a later iteration starts new workers


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


def _sampler_of(dataloader: Any) -> Any:
    sampler = getattr(dataloader, "sampler", None)
    if sampler is None or not hasattr(sampler, "set_start_iter"):
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", sampler)
    return sampler


_outer_rng_states: list[dict[str, Any]] = []  # training RNG states while inside `preserved_rng`


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving this process's training RNG streams (python, numpy, torch, CUDA).

    A checkpoint saved inside the block (MMEngine saves `iter_N.pth` again after a validation
    that found a new best) stores the training streams as they were on entry.
    """
    saved = _rng_state()
    _outer_rng_states.append(saved)
    try:
        yield
    finally:
        _outer_rng_states.pop()
        _set_rng_state(saved)


def training_rng_state() -> dict[str, Any]:
    """The RNG state the training stream continues from (outside any `preserved_rng` block)."""
    return _outer_rng_states[0] if _outer_rng_states else _rng_state()


class _StopRequest:
    """Turns SIGTERM/SIGINT into a flag checked between iterations.

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


VAL_STOP_CHECK_EVERY = 10  # validation batches between stop checks


class _StopInValidation(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


@LOOPS.register_module(name="VocsegResumableIterLoop")
class ResumableIterLoop(IterBasedTrainLoop):
    """IterBasedTrainLoop whose resume costs the same at any iteration, and that stops cleanly.

    Exactness: the checkpoint of iteration N holds the RNG states of the moment it was saved;
    everything that runs between that moment and iteration N+1 in an uninterrupted run
    (validation, a new data loader iterator) runs under `preserved_rng`, so a resumed run
    draws the same random numbers (dropout) as the uninterrupted one.

    Stopping: a stop request is honoured after the current training iteration, or between two
    validation batches. When it cuts off (or comes before) the validation of iteration N, the
    checkpoint of N records that (`vocseg_val_pending` in the message hub) and the resumed run
    validates first.
    """

    def __init__(
        self,
        runner: Any,
        dataloader: Any,
        max_iters: int,
        val_begin: int = 1,
        val_interval: int = 1000,
        dynamic_intervals: list[tuple[int, int]] | None = None,
    ) -> None:
        # IterBasedTrainLoop.__init__, except the data iterator: MMEngine starts it (workers,
        # prefetching from position 0) here, before a resume has set the position. `run` does.
        BaseLoop.__init__(self, runner, dataloader)
        self._max_iters = int(max_iters)
        if self._max_iters != max_iters:
            raise ValueError(f"max_iters should be an integer, got {max_iters}")
        self._max_epochs = 1
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False
        if hasattr(self.dataloader.dataset, "metainfo"):
            self.runner.visualizer.dataset_meta = self.dataloader.dataset.metainfo
        self.dataloader_iterator: Any = None
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(self.val_interval, dynamic_intervals)

    def run(self) -> Any:
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        val_loop = self.runner.val_loop
        guard_loader_workers(self.dataloader)
        guard_loader_workers(getattr(val_loop, "dataloader", None))
        sampler = _sampler_of(self.dataloader)
        resumable = hasattr(sampler, "set_start_iter")
        if resumable:
            # Constant cost: the sampler starts at the position; nothing is loaded to skip.
            sampler.set_start_iter(self._iter)
        with preserved_rng():
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        if not resumable:  # another sampler (a hand-edited config): MMEngine's slow path
            for _ in range(self._iter):
                next(self.dataloader_iterator)
        try:
            self._train(val_loop)
        finally:
            # Workers end with training, not whenever the garbage collector reaches the loader
            # (from a reference cycle, PyTorch's shutdown then waits seconds per worker).
            _shutdown_loader_workers(self.dataloader, getattr(self.dataloader_iterator, "_iterator", None))
            _shutdown_loader_workers(getattr(val_loop, "dataloader", None))
        return self.runner.model

    def _train(self, val_loop: Any) -> None:
        iters_per_epoch = max(1, len(self.dataloader))
        hub = self.runner.message_hub
        with _StopRequest() as stop:
            if val_loop is not None and self._iter > 0 and hub.get_info(VAL_PENDING_KEY) == self._iter:
                hub.update_info(VAL_PENDING_KEY, None)
                self._validate(stop)
                if self._iter >= self._max_iters:
                    self._save_now(force=True)  # the final checkpoint no longer asks for it
                else:
                    self._honour_stop(stop, val_pending=False)
            while self._iter < self._max_iters and not self.stop_training:
                self.runner.model.train()
                self._epoch = self._iter // iters_per_epoch
                data_batch = next(self.dataloader_iterator)
                self.run_iter(data_batch)
                self._decide_current_val_interval()
                due = (
                    val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
                )
                # At the last iteration with nothing left to validate, finishing is the stop.
                if due or self._iter < self._max_iters:
                    self._honour_stop(stop, val_pending=due)
                if due:
                    self._validate(stop)
                    if self._iter < self._max_iters:
                        self._honour_stop(stop, val_pending=False)
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")

    def _validate(self, stop: _StopRequest) -> None:
        """Validate without moving the training RNG streams; a stop request between two
        validation batches abandons it, and the checkpoint asks the resumed run to validate."""
        val_loop = self.runner.val_loop
        run_iter = val_loop.run_iter

        def checked_run_iter(idx: int, data_batch: Any) -> Any:
            # Every few batches: under NCCL each check is a collective and a host sync. Counted
            # by batch index, so every rank checks at the same batches (equal counts: round_up).
            if idx % VAL_STOP_CHECK_EVERY == 0:
                signum = stop.agreed()
                if signum:
                    raise _StopInValidation(signum)
            return run_iter(idx, data_batch)

        val_loop.run_iter = checked_run_iter
        try:
            with preserved_rng():
                val_loop.run()
        except _StopInValidation as cut:
            for metric in getattr(val_loop.evaluator, "metrics", []):
                metric.results.clear()  # half a validation: never evaluated
            self._stop_now(cut.signum, val_pending=True)
        finally:
            del val_loop.run_iter

    def _honour_stop(self, stop: _StopRequest, *, val_pending: bool) -> None:
        signum = stop.agreed()
        if signum:
            self._stop_now(signum, val_pending=val_pending)

    def _stop_now(self, signum: int, *, val_pending: bool) -> None:
        if val_pending:
            self.runner.message_hub.update_info(VAL_PENDING_KEY, self._iter)
        # The periodic checkpoint of this iteration (saved before validation) does not say so.
        self._save_now(force=val_pending)
        raise TrainingInterrupted(self._iter, signum, self.runner.work_dir) from None

    def _save_now(self, *, force: bool = False) -> None:
        for hook in self.runner.hooks:
            if isinstance(hook, CheckpointHook):
                if not force and isinstance(hook, SafeCheckpointHook) and hook.saved_step == self._iter:
                    return  # the periodic checkpoint of this very iteration is on disk
                hook._save_checkpoint_with_step(self.runner, self._iter, dict(epoch=self.runner.epoch, iter=self._iter))
                return


def _gather_rng_states(runner: Any) -> None:
    """Collect every rank's RNG state (a collective: all ranks call it) for the next save."""
    state = training_rng_state()
    runner._vocseg_rng_states = all_gather_object(state) if is_distributed() else [state]


@HOOKS.register_module(name="VocsegCheckpointHook")
class SafeCheckpointHook(CheckpointHook):
    """CheckpointHook that never leaves `last_checkpoint` pointing at a deleted or partial file."""

    saved_step: int | None = None

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        _gather_rng_states(runner)  # here, on every rank: runner.save_checkpoint runs on rank 0 only
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
        self.saved_step = step
        if not is_main_process():
            return
        write_bytes_atomic(os.path.join(runner.work_dir, "last_checkpoint"), str(self.last_ckpt).encode())
        if stale is not None and stale != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(stale))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)

    def _save_best_checkpoint(self, runner: Any, metrics: dict) -> None:
        """MMEngine deletes the previous best checkpoint before it writes the new one (a kill in
        between leaves none); here the previous one is deleted after the new one is written."""
        _gather_rng_states(runner)
        # MMEngine deletes whatever these name; hide them and delete after its save.
        previous: dict[str | None, str] = {}
        if getattr(self, "best_ckpt_path", None):
            previous[None] = self.best_ckpt_path
            self.best_ckpt_path = None
        for key, path in list(getattr(self, "best_ckpt_path_dict", {}).items()):
            if path:
                previous[key] = path
                self.best_ckpt_path_dict[key] = None
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            current = {None: getattr(self, "best_ckpt_path", None), **getattr(self, "best_ckpt_path_dict", {})}
            stale = []
            for key, path in previous.items():
                if current.get(key) is None:  # not improved (or the save failed): keep it
                    if key is None:
                        self.best_ckpt_path = path
                    else:
                        self.best_ckpt_path_dict[key] = path
                elif current[key] != path:
                    stale.append(path)
        if not is_main_process():
            return
        for path in stale:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)
            else:
                continue
            runner.logger.info(f"The previous best checkpoint {path} is removed")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@HOOKS.register_module(name="VocsegRngStateHook")
class RngStateHook(Hook):
    """Every rank's RNG state (dropout and the like) travels with the checkpoint."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        # Gathered by VocsegCheckpointHook on all ranks; this method runs on rank 0 only.
        states = getattr(runner, "_vocseg_rng_states", None)
        runner._vocseg_rng_states = None
        checkpoint["vocseg_rng"] = states if states else [training_rng_state()]

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        states = checkpoint.get("vocseg_rng")
        rank, world = get_dist_info()
        if not states or len(states) != world:
            return  # another process count: the streams cannot continue one-to-one
        _set_rng_state(states[rank])


def _scale_lr_state(checkpoint: dict, ratio: float) -> None:
    """Scale the LR a checkpoint carries (optimizer groups, schedulers) by `ratio`."""
    optimizer = checkpoint.get("optimizer") or {}
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    for group in groups or []:
        for key in ("lr", "initial_lr"):
            if key in group:
                group[key] = group[key] * ratio
    for scheduler in checkpoint.get("param_schedulers") or []:
        if scheduler.get("param_name", "lr") != "lr":
            continue
        for key in ("base_values", "_last_value"):
            if key in scheduler:
                scheduler[key] = [v * ratio for v in scheduler[key]]


@HOOKS.register_module(name="VocsegBatchGuardHook")
class BatchGuardHook(Hook):
    """Checkpoints record the total batch; resuming with another one is an error unless
    `rescale_lr`, which scales the LR schedule in the checkpoint linearly to the new batch."""

    priority = "VERY_LOW"

    def __init__(self, rescale_lr: bool = False) -> None:
        self.rescale_lr = rescale_lr

    @staticmethod
    def _batch(runner: Any) -> dict[str, int]:
        world = get_dist_info()[1]
        batch = int(getattr(runner.train_dataloader, "batch_size", 0) or 0)
        return dict(world_size=world, batch=batch, total=world * batch)

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        checkpoint["vocseg_batch"] = self._batch(runner)

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        saved = checkpoint.get("vocseg_batch")
        if not saved or not getattr(runner, "_resume", False):
            return
        now = self._batch(runner)
        if saved["total"] == now["total"] or not now["total"]:
            return
        if not self.rescale_lr:
            raise VocsegError(
                f"The checkpoint was trained with total batch {saved['total']} ({saved['world_size']} process(es) x {saved['batch']}); "
                f"this resume has {now['total']} ({now['world_size']} x {now['batch']}).",
                "Resume with the original process count, or pass --rescale-lr to rescale the LR linearly.",
            )
        _scale_lr_state(checkpoint, now["total"] / saved["total"])


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


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


@HOOKS.register_module(name="VocsegProgressHook")
class ProgressHook(Hook):
    """Progress for the person at the terminal (rank 0): iteration, epoch, loss, LR, images/s,
    ETA and the last validation mIoU, as one rich live display on a terminal, or as plain lines
    every `interval` iterations when the output is a file or pipe (CI logs). Writes
    `curves.png` (loss, LR, val mIoU) to the run folder at each validation."""

    priority = "VERY_LOW"

    def __init__(self, interval: int | None = None, display: str = "auto", curves: bool = True) -> None:
        if display not in ("auto", "live", "plain"):
            raise ValueError(f"display must be auto, live or plain, got {display!r}")
        self.interval = interval
        self.display = display
        self.curves = curves
        self.live: Any = None
        self.console: Any = None
        self.best_miou: float | None = None
        self.last_val: tuple[int, float] | None = None
        self.iter = 0
        self.max_iters = 0
        self.iters_per_epoch = 1
        self.images_per_iter = 0
        self.loss = float("nan")
        self.lr = float("nan")
        self.iter_time: float | None = None  # moving average, seconds, validation excluded
        self.val_time = 0.0
        self.val_interval = 0
        self.val_progress: tuple[int, int] | None = None
        self._last_t = 0.0
        self._paused = 0.0
        self._val_t0 = 0.0
        self._seen = 0

    # -- rendering -------------------------------------------------------------------------
    def _speed(self) -> str:
        return f"{self.images_per_iter / self.iter_time:.1f}" if self.iter_time else "-"

    def _status_line(self) -> str:
        epoch = self.iter / self.iters_per_epoch
        return (
            f"iter {self.iter}/{self.max_iters}  epoch {epoch:.2f}  loss {self.loss:.4f}  lr {self.lr:.2e}  "
            f"{self._speed()} img/s  ETA {_fmt_eta(self.eta())}"
        )

    def _val_text(self) -> str:
        if self.last_val is None:
            return "val mIoU -"
        it, miou = self.last_val
        return f"val mIoU {miou:.2f} @ iter {it} (best {self.best_miou:.2f})"

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        bar = Table.grid(padding=(0, 1))
        bar.add_column(no_wrap=True)
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        bar.add_row(
            "[bold]train[/]",
            ProgressBar(total=max(1, self.max_iters), completed=self.iter),
            f"{self.iter}/{self.max_iters}  epoch {self.iter / self.iters_per_epoch:.2f}",
        )
        stats = (
            f"loss [bold]{self.loss:.4f}[/]  lr {self.lr:.2e}  {self._speed()} img/s  "
            f"ETA [bold]{_fmt_eta(self.eta())}[/]  {self._val_text()}"
        )
        parts: list[Any] = [bar, stats]
        if self.val_progress is not None:
            done, total = self.val_progress
            parts.append(f"[cyan]validating {done}/{total}[/]")
        return Group(*parts)

    def eta(self) -> float:
        if self.iter_time is None:
            return float("inf")
        remaining = max(0, self.max_iters - self.iter)
        vals = 0
        if self.val_interval:
            vals = self.max_iters // self.val_interval - self.iter // self.val_interval
            vals += 1 if self.max_iters % self.val_interval else 0
        return remaining * self.iter_time + max(0, vals) * self.val_time

    def _print(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text)
        elif self.console is not None:
            self.console.print(text, soft_wrap=True)  # one line per event in logs, never wrapped

    # -- hooks -----------------------------------------------------------------------------
    def before_train(self, runner: Any) -> None:
        if not is_main_process():
            return
        import sys

        from rich.console import Console

        # sys.stdout may be routed away from MMEngine's console log; print to the real one.
        self.console = Console(file=sys.__stdout__, highlight=False)
        self.iter = runner.iter
        self.max_iters = runner.max_iters
        self.iters_per_epoch = max(1, len(runner.train_dataloader))
        self.images_per_iter = int(getattr(runner.train_dataloader, "batch_size", 1) or 1) * get_dist_info()[1]
        self.val_interval = int(getattr(runner.train_loop, "val_interval", 0) or 0)
        best = runner.message_hub.get_info("best_score")
        self.best_miou = float(best) if best is not None else None
        if self.interval is None:
            self.interval = max(1, min(50, runner.max_iters // 20))
        self._last_t = time.perf_counter()
        live = self.display == "live" or (self.display == "auto" and self.console.is_terminal)
        if live:
            from rich.live import Live

            self.live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2,
                             redirect_stdout=False, redirect_stderr=True)
            self.live.start()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not is_main_process():
            return
        now = time.perf_counter()
        dt = now - self._last_t - self._paused
        self._last_t, self._paused = now, 0.0
        # Moving average of the iteration time; the first one after start-up is not counted.
        self._seen += 1
        if self._seen > 1 and dt > 0:
            self.iter_time = dt if self.iter_time is None else 0.9 * self.iter_time + 0.1 * dt
        self.iter = runner.iter + 1
        if outputs and "loss" in outputs:
            loss = outputs["loss"]
            self.loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        # The LR this iteration used (logged before the scheduler stepped), not the next one.
        logged = runner.message_hub.log_scalars.get("train/lr")
        self.lr = float(logged.current()) if logged is not None else float(runner.optim_wrapper.get_lr()["lr"][0])
        if self.live is None and (self.iter % self.interval == 0 or self.iter == self.max_iters):
            self._print(self._status_line())

    def before_val_epoch(self, runner: Any) -> None:
        if not is_main_process():
            return
        self._val_t0 = time.perf_counter()
        try:
            total = len(runner.val_dataloader)
        except Exception:  # noqa: BLE001 - a length is only for display
            total = 0
        self.val_progress = (0, total) if self.live is not None else None

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.val_progress is not None:
            self.val_progress = (batch_idx + 1, self.val_progress[1])

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not is_main_process():
            return
        if self._val_t0:
            spent = time.perf_counter() - self._val_t0
            self._paused += spent
            self.val_time = spent
            self._val_t0 = 0.0
        self.val_progress = None
        if not metrics or "mIoU" not in metrics:
            return
        miou = float(metrics["mIoU"])
        self.best_miou = miou if self.best_miou is None else max(self.best_miou, miou)
        self.last_val = (runner.iter, miou)
        self._print(
            f"[bold]val[/] iter {runner.iter}: mIoU {miou:.2f}  mAcc {float(metrics.get('mAcc', 0)):.2f}  "
            f"aAcc {float(metrics.get('aAcc', 0)):.2f}  (best {self.best_miou:.2f})"
        )
        self._write_curves(runner)

    def _write_curves(self, runner: Any) -> None:
        if not self.curves:
            return
        from vocseg.curves import write_curves

        t0 = time.perf_counter()
        try:
            write_curves(runner.work_dir)
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            self._print(f"[yellow]curves.png not updated: {type(exc).__name__}: {exc}[/]")
        self._paused += time.perf_counter() - t0

    def after_train(self, runner: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (also called when training ends with an exception)."""
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()
