"""`VocsegBatchGuardHook`: records the total batch in checkpoints; a resume with another one is
refused, or (when asked) the LR schedule in the checkpoint is rescaled linearly."""

from __future__ import annotations

from typing import Any

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from vocseg.errors import VocsegError


def scale_lr_state(checkpoint: dict, ratio: float) -> None:
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
            what = [f"processes {saved['world_size']} -> {now['world_size']}"] if saved["world_size"] != now["world_size"] else []
            what += [f"per-process batch {saved['batch']} -> {now['batch']}"] if saved["batch"] != now["batch"] else []
            raise VocsegError(
                f"The checkpoint was trained with total batch {saved['total']} ({saved['world_size']} process(es) x {saved['batch']}); "
                f"this resume has {now['total']} ({now['world_size']} x {now['batch']}: {', '.join(what)}).",
                "Resume with the original process count and batch, or with `vocseg resume RUN --rescale-lr` to rescale the LR linearly to the new total batch.",
            )
        scale_lr_state(checkpoint, now["total"] / saved["total"])
