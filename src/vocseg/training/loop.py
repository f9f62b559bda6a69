"""`VocsegResumableIterLoop`: MMEngine's iteration loop with an instant, exact resume and a clean stop.

It positions the sampler on resume before the data iterator starts; keeps validation and the
data loader's start-up from drawing on the training RNG streams; on SIGTERM / Ctrl-C it finishes
the iteration (or abandons the validation), saves a checkpoint and stops (`TrainingInterrupted`);
a validation a stop cut off runs first on resume. Loader workers (training and validation) ignore
stop signals sent to the whole process group."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import CheckpointHook
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.runner.utils import calc_dynamic_intervals
from mmseg.registry import LOOPS

from vocseg.stack.checkpoints import VAL_PENDING_KEY
from vocseg.training.checkpoint_hook import SafeCheckpointHook
from vocseg.training.loader_workers import guard_loader_workers, shutdown_loader_workers
from vocseg.training.rng import preserved_rng
from vocseg.training.sampler import sampler_of
from vocseg.training.stop import VAL_STOP_CHECK_EVERY, StopInValidation, StopRequest, TrainingInterrupted
from vocseg.training.trackers import end_trackers


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
        sampler = sampler_of(self.dataloader)
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
            shutdown_loader_workers(self.dataloader, getattr(self.dataloader_iterator, "_iterator", None))
            shutdown_loader_workers(getattr(val_loop, "dataloader", None))
        return self.runner.model

    def _train(self, val_loop: Any) -> None:
        iters_per_epoch = max(1, len(self.dataloader))
        hub = self.runner.message_hub
        with StopRequest() as stop:
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

    def _validate(self, stop: StopRequest) -> None:
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
                    raise StopInValidation(signum)
            return run_iter(idx, data_batch)

        val_loop.run_iter = checked_run_iter
        try:
            with preserved_rng():
                val_loop.run()
        except StopInValidation as cut:
            for metric in getattr(val_loop.evaluator, "metrics", []):
                metric.results.clear()  # half a validation: never evaluated
            self._stop_now(cut.signum, val_pending=True)
        finally:
            del val_loop.run_iter

    def _honour_stop(self, stop: StopRequest, *, val_pending: bool) -> None:
        signum = stop.agreed()
        if signum:
            self._stop_now(signum, val_pending=val_pending)

    def _stop_now(self, signum: int, *, val_pending: bool) -> None:
        if val_pending:
            self.runner.message_hub.update_info(VAL_PENDING_KEY, self._iter)
        # The periodic checkpoint of this iteration (saved before validation) does not say so.
        self._save_now(force=val_pending)
        end_trackers(self.runner, interrupted=True)  # MMEngine closes them only at the end of training
        raise TrainingInterrupted(self._iter, signum, self.runner.work_dir) from None

    def _save_now(self, *, force: bool = False) -> None:
        for hook in self.runner.hooks:
            if isinstance(hook, CheckpointHook):
                if not force and isinstance(hook, SafeCheckpointHook) and hook.saved_step == self._iter:
                    return  # the periodic checkpoint of this very iteration is on disk
                hook._save_checkpoint_with_step(self.runner, self._iter, dict(epoch=self.runner.epoch, iter=self._iter))
                return
