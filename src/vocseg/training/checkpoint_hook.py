"""`VocsegCheckpointHook`: saves first, then points `last_checkpoint` at the new file
(atomically), then deletes old ones, the previous best checkpoint included. MMEngine's deletes first.

Every deletion goes through `vocseg.files.owned_delete`: a path read from a checkpoint (the
previous best, which MMEngine stores as an absolute path) is re-rooted to the run folder being
trained (its file name in `out_dir`), never followed; it is deleted only where the record proves
vocseg wrote it there and nobody changed it. Resuming a copied run folder therefore deletes the
copy's old checkpoints, never the original's; a checkpoint naming an outside path deletes nothing.
MMEngine's log folder and checkpoints are recorded as the run's when they are created."""

from __future__ import annotations

import os
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from vocseg.errors import VocsegError
from vocseg.files import owned_delete, owned_write_bytes, record_folder
from vocseg.training.rng import gather_rng_states


@HOOKS.register_module(name="VocsegCheckpointHook")
class SafeCheckpointHook(CheckpointHook):
    """CheckpointHook that never leaves `last_checkpoint` pointing at a deleted or partial file."""

    saved_step: int | None = None

    def before_train(self, runner: Any) -> None:
        super().before_train(runner)
        if is_main_process():
            log_dir = getattr(runner, "log_dir", None)
            if log_dir and os.path.dirname(os.path.abspath(log_dir)) == os.path.abspath(runner.work_dir):
                record_folder(log_dir, role="run")  # MMEngine's timestamped log folder

    def _own(self, path: str | None) -> str | None:
        """`path` (as MMEngine or a checkpoint names it) re-rooted to this run's `out_dir`."""
        if not path:
            return None
        return os.path.join(os.path.abspath(self.out_dir), os.path.basename(os.path.normpath(str(path))))

    def _delete(self, runner: Any, path: str | None) -> bool:
        """Delete the run's own file of that name, when the record proves it is vocseg's and
        unchanged; anything else stays (noted in the log)."""
        own = self._own(path)
        if own is None or not os.path.lexists(own):
            return False
        try:
            return owned_delete(own)
        except VocsegError as exc:
            runner.logger.info(f"Kept {own}: {exc.message}")
            return False

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        gather_rng_states(runner)  # here, on every rank: runner.save_checkpoint runs on rank 0 only
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
        owned_write_bytes(os.path.join(runner.work_dir, "last_checkpoint"), str(self.last_ckpt).encode(), role="run")
        if stale is not None and stale != step:
            self._delete(runner, self.filename_tmpl.format(stale))

    def _save_best_checkpoint(self, runner: Any, metrics: dict) -> None:
        """MMEngine deletes the previous best checkpoint before it writes the new one (a kill in
        between leaves none); here the previous one is deleted after the new one is written."""
        gather_rng_states(runner)
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
            if self._own(path) not in {self._own(p) for p in current.values() if p} and self._delete(runner, path):
                runner.logger.info(f"The previous best checkpoint {self._own(path)} is removed")
