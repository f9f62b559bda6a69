"""The MMEngine config behind a run folder, a checkpoint file or an official checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.runs.folders import CONFIG_NAME, resolve_checkpoint


def load_run_config(target: str | Path, config: Path | None, *, quiet: bool = False) -> tuple[Path, Path | None, Any]:
    """(checkpoint, run folder, mmengine Config) for a run folder, a checkpoint file or `official:NAME`."""
    from vocseg.recipe import official
    from vocseg.stack.compat import ensure_stack

    if official.is_official(target):
        checkpoint, official_cfg = official.resolve(target, quiet=quiet)
        run, cfg_path = None, config or official_cfg
    else:
        checkpoint, run = resolve_checkpoint(Path(target))
        cfg_path = config or (run / CONFIG_NAME if run else None)
    if cfg_path is None or not cfg_path.is_file():
        raise VocsegError(f"No config found for {checkpoint}.", "Pass the config it was trained with: --config CFG.py.")
    ensure_stack()
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(cfg_path))
    except Exception as exc:
        raise VocsegError(f"Cannot read config {cfg_path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.", "Pass a config written by vocseg or mmseg.") from None
    # The Runner yapf-formats the config text four times (log, dump): seconds of CPU for nothing here.
    # fromfile(format_python_code=False) only reaches lazy-import configs in mmengine 0.10.7.
    object.__setattr__(cfg, "_format_python_code", False)
    return checkpoint, run, cfg
