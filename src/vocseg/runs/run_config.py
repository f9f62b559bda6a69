"""The MMEngine config behind a run folder, a checkpoint file or an official checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.runs.folders import CONFIG_NAME, resolve_checkpoint


def load_run_config(target: str | Path, config: Path | None, *, quiet: bool = False) -> tuple[Path, Path | None, Any]:
    """(checkpoint, run folder, mmengine Config) for a run folder, a checkpoint file or `official:NAME`."""
    from vocseg.recipe import official

    ref = official.ModelRef(str(target))
    if ref.is_official:
        checkpoint, official_cfg = official.resolve(ref, quiet=quiet)
        run, cfg_path = None, config or official_cfg
    else:
        checkpoint, run = resolve_checkpoint(Path(target))
        cfg_path = config or (run / CONFIG_NAME if run else None)
    if cfg_path is None or not cfg_path.is_file():
        raise VocsegError(f"No config found for {checkpoint}.", "Pass the config it was trained with: --config CFG.py.")
    cfg = read_config(cfg_path, hint="Pass a config written by vocseg or mmseg.")
    # The Runner yapf-formats the config text four times (log, dump): seconds of CPU for nothing here.
    # fromfile(format_python_code=False) only reaches lazy-import configs in mmengine 0.10.7.
    object.__setattr__(cfg, "_format_python_code", False)
    return checkpoint, run, cfg


def read_config(path: Path, *, import_custom_modules: bool = True, hint: str = "Pass a config written by `vocseg config` or an mmseg config.") -> Any:
    """mmengine's `Config` of the file at `path`: the one place vocseg reads a config file.
    `import_custom_modules=False` reads it without importing its `custom_imports` (vocseg's plugin:
    no torch). Errors: `VocsegError` naming the file and its first error line, with `hint` as the fix."""
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config

    try:
        return Config.fromfile(str(path), import_custom_modules=import_custom_modules)
    except Exception as exc:  # noqa: BLE001 - any parse error of a user-edited file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise VocsegError(f"Cannot read config {path}: {first}.", hint) from None
