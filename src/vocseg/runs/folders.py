"""Run folders: where they live, how they are named, and what is in them. No heavy imports.

A run folder holds `config.py` and `recipe.json` (written by vocseg before training starts),
MMEngine's checkpoints (`iter_N.pth`, `best_mIoU_iter_N.pth`), `last_checkpoint` (the path of
the newest complete checkpoint), MMEngine's logs in a timestamped folder, and vocseg's results
(`eval/`, `predict/`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


def numbered_output_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    """A new, empty `root/name`, else `root/name2`, `name3`, ... (as Ultralytics numbers its
    `runs/predict` folders): each call gets its own folder, so no earlier output is overwritten.
    Created here (mkdir without exist_ok), so two commands started at once never share one."""
    from vocseg.files import owned_mkdir

    owned_mkdir(root)
    n = 1
    while True:
        candidate = root / (name if n == 1 else f"{name}{n}")
        try:
            owned_mkdir(candidate, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1


RUN_SEARCH_DEPTH = 4  # runs/NAME/train/... : how deep `latest_run_dir` looks for run folders


def is_run_dir(folder: Path) -> bool:
    """A training run: `config.py` with `recipe.json` or a checkpoint. (An eval results folder also
    holds a `config.py`, MMEngine's copy of the evaluated config: it is not a run.)"""
    if not (folder / CONFIG_NAME).is_file():
        return False
    return (folder / RECIPE_NAME).is_file() or (folder / "last_checkpoint").is_file() or bool(iter_checkpoints(folder))


def find_run_dirs(root: Path = RUNS_ROOT, depth: int = RUN_SEARCH_DEPTH) -> list[Path]:
    """Every run folder (one holding `config.py`) at most `depth` levels under `root`, nested ones
    included (`runs/demo/train`). A run folder's own subfolders (logs, eval/) are not searched."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    level = [root]
    for _ in range(depth):
        below: list[Path] = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:  # unreadable: nothing of ours in it
                continue
            for child in children:
                if is_run_dir(child):
                    found.append(child)
                else:
                    below.append(child)
        level = below
    return found


def latest_run_dir(root: Path = RUNS_ROOT) -> Path | None:
    """The run folder under `root` (nested ones included, e.g. `runs/demo/train`) that trained
    last: newest checkpoint (or config, before the first checkpoint). Not the folder's own time,
    which `vocseg eval` or `predict` also change."""
    runs = find_run_dirs(root)
    return max(runs, key=_last_trained) if runs else None


def _last_trained(run: Path) -> float:
    files = [run / CONFIG_NAME, run / "last_checkpoint", *(p for _, p in iter_checkpoints(run))]
    return max((p.stat().st_mtime for p in files if p.is_file()), default=0.0)


def iter_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in work_dir.glob("iter_*.pth"):
        m = _ITER_CKPT.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint `last_checkpoint` names (MMEngine's pointer), else the highest `iter_N.pth`.

    The pointer holds an absolute path; only the file of that name in `work_dir` is used, so a
    run folder that was moved or copied resumes from its own checkpoint, never the original's.
    """
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():
        text = pointer.read_text().strip()
        if text and (work_dir / Path(text).name).is_file():
            return work_dir / Path(text).name
    found = iter_checkpoints(work_dir)
    return found[-1][1] if found else None


def remove_stale_temp_files(work_dir: Path) -> list[Path]:
    """Delete half-written temporary files a killed process left, only those the record of
    `work_dir` says vocseg created (`vocseg.files.remove_stale_temps`); a user's `.X.N.tmp` stays."""
    from vocseg.files import remove_stale_temps

    return remove_stale_temps(work_dir)


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


LOCK_NAME = ".vocseg.lock"


@contextmanager
def run_lock(work_dir: Path) -> Iterator[None]:
    """Hold the run folder for one training at a time: two would overwrite each other's
    checkpoints and `last_checkpoint`. The lock goes with the process (an flock,
    `vocseg.files.exclusive_lock`, the same as `vocseg prepare`'s data-root lock), so a killed run
    never leaves the folder locked; the lock file is removed when the run ends)."""
    from vocseg.files import LockBusy, lock

    with ExitStack() as stack:
        try:
            fd = stack.enter_context(lock(work_dir, LOCK_NAME))
        except LockBusy as busy:
            raise VocsegError(
                f"{work_dir} is being trained by another process{f' (pid {busy.holder})' if busy.holder.isdigit() else ''}.",
                "Wait for it to finish, or stop it (Ctrl-C or kill PID: it saves a checkpoint) and resume.",
            ) from None
        if fd is not None:
            _HELD_LOCKS.add(fd)
        try:
            yield
        finally:
            _HELD_LOCKS.discard(fd or -1)


_HELD_LOCKS: set[int] = set()


def held_lock_fds() -> tuple[int, ...]:
    """File descriptors of the run locks this process holds, for child processes to keep open:
    an flock is released only when every process holding the file has closed it."""
    return tuple(sorted(_HELD_LOCKS))


def runs_newest_first(root: Path = RUNS_ROOT) -> list[Path]:
    """Every run folder under `root` (`find_run_dirs`), the one that trained last first."""
    return sorted(find_run_dirs(root), key=_last_trained, reverse=True)


def latest_trained_run(root: Path = RUNS_ROOT) -> Path | None:
    """The run folder under `root` that trained last, has a checkpoint to use and is not being
    trained by another process right now (the default model of `predict`, `eval`, `report` and
    `export` when none is named: a run in training is neither done nor ours to write into), or None."""
    return next((run for run in runs_newest_first(root) if latest_checkpoint(run) is not None and run_holder(run) is None), None)


def run_holder(work_dir: Path) -> str | None:
    """Whether another process trains in `work_dir` now: the holder's pid as it wrote it ('' when
    unknown), or None when nobody holds the run lock (`run_lock`). Reads only: the lock file is
    opened read-only and never created."""
    try:
        import fcntl
    except ImportError:  # Windows: no run locks
        return None
    import os
    import stat

    path = work_dir / LOCK_NAME
    try:  # never through a link, never blocking on a FIFO: only a regular file can be vocseg's lock
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        except OSError:  # a file system without locks: nothing to tell
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
