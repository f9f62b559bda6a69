"""`VocsegHealthHook`: the one guard that decides whether a training run is sane.

After every training iteration, before the checkpoint hook can save and before validation, it
checks on every rank:

- the loss is finite. With fp16 and dynamic loss scaling a non-finite loss is the scaler's
  business: the step was skipped and the scale lowered; the run stops only after
  `MAX_SKIPPED_STEPS` non-finite losses in a row, or when the scale has fallen below
  `MIN_LOSS_SCALE`. With bf16 or fp32 there is no scaler and the optimizer has already stepped
  with non-finite gradients: the run stops at once;
- the weights (parameters and floating-point buffers such as BatchNorm's running statistics) are
  finite, at the iterations after which a checkpoint is saved or a validation runs (and the last),
  so no checkpoint of a non-finite model is written, nor kept as the best (a network of NaNs
  predicts one class everywhere and scores a finite mIoU);
- the batch holds a labelled pixel (a mask value other than the ignore index): after
  `VOID_BATCHES` batches in a row without one, the loss is 0 and there is nothing to learn.

The flags are summed over the ranks (one all-reduce per iteration), so every process stops at the
same iteration, as `vocseg.training.stop` does for Ctrl-C. A stop raises `RunUnhealthy`: no
checkpoint is saved; the newest checkpoint on disk (the last one of a finite model) stays as it
is, and the worker exits non-zero with one line (`vocseg.training.worker`).

After a validation whose mIoU is NaN it says why (no labelled pixel in the val split).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from mmengine.dist import all_reduce, is_distributed, is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from vocseg.data.voc import IGNORE_INDEX
from vocseg.training.stop import RunUnhealthy
from vocseg.training.trackers import end_trackers

MAX_SKIPPED_STEPS = 20  # fp16: non-finite losses in a row the loss scaler may skip (2**-20 of the scale)
MIN_LOSS_SCALE = 1.0  # fp16: below this the scaler cannot make the gradients any smaller usefully
VOID_BATCHES = 20  # batches in a row without a labelled pixel before the run is "nothing to learn"


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and floating-point buffer of `model` is finite (one host sync)."""
    tensors = [t.detach() for t in model.parameters()]
    tensors += [b.detach() for b in model.buffers() if b.is_floating_point()]
    if not tensors:
        return True
    flags = torch.stack([torch.isfinite(t).all() for t in tensors])
    return bool(flags.all())


def save_or_validation_due(runner: Any, iteration: int) -> bool:
    """Whether the checkpoint hook saves or the loop validates after `iteration` (1-based), or it is
    the last one. The same answer on every rank (it depends on the iteration only)."""
    from mmengine.hooks import CheckpointHook

    if iteration >= runner.max_iters:
        return True
    loop = runner.train_loop
    val_interval = int(getattr(loop, "val_interval", 0) or 0)
    if val_interval and iteration >= int(getattr(loop, "val_begin", 1) or 1) and iteration % val_interval == 0:
        return True
    return any(isinstance(h, CheckpointHook) and h.interval > 0 and iteration % h.interval == 0 for h in runner.hooks)


def labelled_pixels(data_batch: Any, ignore_index: int = IGNORE_INDEX) -> int:
    """Pixels of the batch's masks whose value is a class (not `ignore_index`); -1 when the batch
    carries no masks (a hand-edited pipeline): then nothing is concluded."""
    samples = data_batch.get("data_samples") if isinstance(data_batch, dict) else None
    total, seen = 0, False
    for sample in samples or []:
        seg = getattr(sample, "gt_sem_seg", None)
        data = getattr(seg, "data", None)
        if data is None:
            continue
        seen = True
        total += int((data != ignore_index).sum())
    return total if seen else -1


def loss_value(outputs: Any) -> float | None:
    """The total loss of an iteration's outputs (MMEngine's log_vars), or None."""
    if not isinstance(outputs, dict) or "loss" not in outputs:
        return None
    loss = outputs["loss"]
    return float(loss.detach().float()) if isinstance(loss, torch.Tensor) else float(loss)


def fix_hint(initial_lr: float, *, amp: bool, max_iters: int) -> str:
    """What to try after a non-finite loss: a lower LR (a tenth of the run's initial one), a warm-up, fp32."""
    warmup = max(1, min(1000, max_iters // 20))
    tries = f"a lower --lr or --base-lr (e.g. --lr {initial_lr / 10:.3g}), --warmup-iters {warmup}"
    return f"Start a new run with {tries}{', or --no-amp' if amp else ''}."


def loss_verdict(*, bad_loss: bool, bad_weights: bool, scale: float | None, skipped: int, max_skipped: int = MAX_SKIPPED_STEPS,
                 min_scale: float = MIN_LOSS_SCALE) -> tuple[str, int]:
    """'ok', 'skip' (fp16: the loss scaler skipped the step and may go on) or 'stop', and the
    non-finite losses in a row under loss scaling so far.

    `scale`: the fp16 loss scale after this step's update, None without a scaler (fp32, bf16).
    Non-finite weights always stop: the scaler never skipped that (BatchNorm's running statistics
    are updated in the forward pass, whatever the scaler decides).
    """
    if bad_weights:
        return "stop", skipped + int(bad_loss)
    if not bad_loss:
        return "ok", 0
    if scale is None:
        return "stop", 0
    skipped += 1
    return ("skip" if skipped < max_skipped and scale >= min_scale else "stop"), skipped


def nan_metric_reason(areas: dict[str, Any]) -> str:
    """Why a validation's mIoU is NaN, from the metric's summed areas (`label`: pixels per class)."""
    label = areas.get("label")
    if label is None:
        return "no class had a defined IoU"
    if float(sum(label)) == 0:
        return "the val split has no labelled pixel (every mask is the ignore value 255): there is nothing to score"
    return "every class is absent from the val split and never predicted"


@HOOKS.register_module(name="VocsegHealthHook")
class HealthHook(Hook):
    """Stops training at the first sign that the run cannot be right (see the module docstring)."""

    priority = "ABOVE_NORMAL"  # after RuntimeInfoHook, before the scheduler, logger and checkpoint hooks

    def __init__(self, max_skipped_steps: int = MAX_SKIPPED_STEPS, min_loss_scale: float = MIN_LOSS_SCALE,
                 void_batches: int = VOID_BATCHES) -> None:
        self.max_skipped_steps = max_skipped_steps
        self.min_loss_scale = min_loss_scale
        self.void_batches = void_batches
        self.skipped = 0  # non-finite losses in a row under fp16 loss scaling
        self.void = 0  # batches in a row without a labelled pixel

    @staticmethod
    def _scaler(runner: Any) -> Any:
        scaler = getattr(runner.optim_wrapper, "loss_scaler", None)
        return scaler if scaler is not None and getattr(scaler, "is_enabled", lambda: False)() else None

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        from mmengine.model import is_model_wrapper

        loss = loss_value(outputs)
        bad_loss = loss is not None and not math.isfinite(loss)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        iteration = runner.iter + 1
        # The weights only where something reads them next (a checkpoint, a validation, the end):
        # a check costs a pass over every tensor (docs/training.md), and non-finite weights make
        # the next loss non-finite anyway.
        bad_weights = save_or_validation_due(runner, iteration) and not weights_finite(model)
        labelled = labelled_pixels(data_batch)
        flags = torch.tensor([int(bad_loss), int(bad_weights), max(labelled, 0), int(labelled < 0)], dtype=torch.float64)
        if is_distributed():
            if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl":
                flags = flags.cuda()
            all_reduce(flags, op="sum")
        bad_loss, bad_weights = bool(flags[0] > 0), bool(flags[1] > 0)
        no_labels = flags[2] == 0 and flags[3] == 0
        scaler = self._scaler(runner)
        scale = float(scaler.get_scale()) if scaler is not None else None
        verdict, self.skipped = loss_verdict(bad_loss=bad_loss, bad_weights=bad_weights, scale=scale, skipped=self.skipped,
                                             max_skipped=self.max_skipped_steps, min_scale=self.min_loss_scale)
        if verdict == "skip":
            runner.logger.warning(f"iteration {iteration}: non-finite loss; the fp16 loss scaler skipped the step (scale now {scale:g})")
            return
        if verdict == "stop":
            if bad_loss and not bad_weights and scale is not None:
                why = f"{self.skipped} non-finite losses in a row" if self.skipped >= self.max_skipped_steps else f"the loss scale is down to {scale:g}"
                what = f"the loss stayed non-finite under fp16 loss scaling ({why})"
            elif bad_loss:
                what = f"the loss became {loss}" if loss is not None and not math.isfinite(loss) else "the loss became NaN/inf (in another process)"
            else:
                what = "the weights became NaN/inf"
            self._stop(runner, iteration, what, fix=True)
        self.void = self.void + 1 if no_labels else 0
        if self.void >= min(self.void_batches, runner.max_iters):
            self._stop(
                runner, iteration,
                f"none of the last {self.void} batches had a labelled pixel (every mask value is the ignore value "
                f"{IGNORE_INDEX}): the loss is 0 and there is nothing to learn",
                fix=False,
            )

    def _stop(self, runner: Any, iteration: int, what: str, *, fix: bool) -> None:
        from vocseg.runs.folders import latest_checkpoint

        lr_values = runner.optim_wrapper.get_lr().get("lr") or [float("nan")]
        lr = float(lr_values[0])  # the LR of this iteration: the scheduler steps after this hook
        groups = getattr(runner.optim_wrapper, "param_groups", None) or [{}]
        initial_lr = float(groups[0].get("initial_lr", lr))
        checkpoint = latest_checkpoint(Path(runner.work_dir))
        kept = (f"the last checkpoint, {checkpoint.name}, is of a finite model and kept" if checkpoint is not None
                else "and there is no earlier checkpoint")
        amp = getattr(runner.optim_wrapper, "cast_dtype", None) is not None or hasattr(runner.optim_wrapper, "loss_scaler")
        message = f"Training stopped at iteration {iteration} (LR {lr:.3g}): {what}; no checkpoint of it was saved, {kept}."
        if fix:
            hint = fix_hint(initial_lr, amp=amp, max_iters=runner.max_iters)
        else:
            hint = "Check the masks of the training split: `vocseg prepare --check`."
        runner.logger.error(f"{message} {hint}")
        end_trackers(runner, interrupted=True)
        raise RunUnhealthy(iteration, message, hint, str(runner.work_dir))

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        """After MMEngine's `load_from` (not a resume): how many tensors loaded, in the log and on
        the terminal; none is a stop (the run would train from random weights unknowingly)."""
        if getattr(runner, "_resume", False) or not getattr(runner, "_load_from", None):
            return
        from mmengine.model import is_model_wrapper

        from vocseg.training.finetune import runtime_load_line

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        loaded, line = runtime_load_line(model, checkpoint, Path(str(runner._load_from)).name)
        runner.logger.info(line)
        if loaded == 0:
            raise RunUnhealthy(0, f"load_from {runner._load_from}: no tensor of it fits the model; training would start from random weights.",
                               "Pass a checkpoint of the same model (vocseg train --load-from RUN|CKPT|official:NAME checks it before starting).",
                               str(runner.work_dir))
        if is_main_process():
            from rich.console import Console
            from rich.markup import escape

            Console(file=sys.__stdout__, highlight=False).print(escape(line), soft_wrap=True)

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not metrics or "mIoU" not in metrics or not is_main_process():
            return
        try:
            miou = float(metrics["mIoU"])
        except (TypeError, ValueError):
            return
        if not math.isnan(miou):
            return
        areas: dict[str, Any] = {}
        for metric in getattr(runner.val_evaluator, "metrics", []):
            areas = getattr(metric, "last_areas", None) or areas
        line = f"validation at iteration {runner.iter}: mIoU is undefined (NaN): {nan_metric_reason(areas)}."
        runner.logger.warning(line)
        from rich.console import Console
        from rich.markup import escape

        Console(file=sys.__stderr__, highlight=False).print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
