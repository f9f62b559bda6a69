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
    """The checkpoint `last_checkpoint` names (MMEngine's pointer), else the highest `iter_N.pth`.

    The pointer holds an absolute path; a run folder that was moved or copied uses its own file
    of that name (never the original folder's).
    """
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():
        text = pointer.read_text().strip()
        if text:
            target = Path(text)
            candidates = [work_dir / target.name, target if target.is_absolute() else work_dir / target]
            for candidate in candidates:
                if candidate.is_file():
                    return candidate
    found = _iter_checkpoints(work_dir)
    return found[-1][1] if found else None


_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_temp_files(work_dir: Path) -> list[Path]:
    """Delete half-written `.NAME.PID.tmp` files left by a killed process (never a live one's)."""
    import os

    removed = []
    for p in work_dir.glob(".*.tmp"):
        m = _TEMP.match(p.name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


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
