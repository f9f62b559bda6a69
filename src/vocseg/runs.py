"""Run folders: where they live, how they are named, and what is in them. No heavy imports.

A run folder holds `config.py` and `recipe.json` (written by vocseg before training starts),
MMEngine's checkpoints (`iter_N.pth`, `best_mIoU_iter_N.pth`), `last_checkpoint` (the path of
the newest complete checkpoint), MMEngine's logs in a timestamped folder, and vocseg's results
(`eval/`, `predict/`).
"""

from __future__ import annotations

import re
from pathlib import Path

from vocseg.errors import VocsegError

RUNS_ROOT = Path("runs")
CONFIG_NAME = "config.py"
RECIPE_NAME = "recipe.json"
_ITER_CKPT = re.compile(r"^iter_(\d+)\.pth$")


def unique_run_dir(root: Path, name: str) -> Path:
    """`root/name`, or `root/name-2`, `-3`, ... when taken: a new run never overwrites an old one."""
    candidate = root / name
    n = 2
    while candidate.exists():
        candidate = root / f"{name}-{n}"
        n += 1
    return candidate


def latest_run_dir(root: Path = RUNS_ROOT) -> Path | None:
    """The most recently modified run folder under `root` that has a config."""
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / CONFIG_NAME).is_file()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _iter_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in work_dir.glob("iter_*.pth"):
        m = _ITER_CKPT.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint `last_checkpoint` names (MMEngine's pointer), else the highest `iter_N.pth`."""
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():
        target = Path(pointer.read_text().strip())
        if not target.is_absolute():
            target = work_dir / target
        if target.is_file():
            return target
    found = _iter_checkpoints(work_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """A checkpoint file or a run folder -> (checkpoint, run folder or None)."""
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise VocsegError(f"{path} has no checkpoint.", "Train it first (`vocseg train`), or pass a .pth file.")
        return ckpt, path
    if path.is_file():
        run = path.parent if (path.parent / CONFIG_NAME).is_file() else None
        return path, run
    raise VocsegError(f"{path} does not exist.", "Pass a run folder or a checkpoint .pth file.")
