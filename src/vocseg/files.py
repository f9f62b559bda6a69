"""Writing files: atomically, never over what vocseg did not write, one process at a time.

Atomic: write a temporary file beside the target, fsync, rename over it. The temporary name
`.NAME.PID.tmp` lets a later run remove what a killed process left
(`vocseg.runs.folders.remove_stale_temp_files`).

Ownership: `check_may_write` is the one rule every command applies before writing an output a
user named (eval --json/--csv/-o, compare --chart/--json, config -o, train --work-dir, predict
-o): a file vocseg did not write, or one the user changed since, is never replaced without
--force, and an input of the command never. What vocseg wrote is recorded per folder in
`.vocseg-written.json` (name -> sha256), by `record_written` / `write_owned_*`.

Locks: `exclusive_lock` (fcntl flock naming the holder's pid) for run folders and data roots.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A process killed at any moment leaves either the old file or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """`write_bytes_atomic` for text (UTF-8)."""
    write_bytes_atomic(path, text.encode("utf-8"))


# ---------------------------------------------------------------- what vocseg wrote

# One hidden file per folder vocseg writes results into:
#   {"files": {name: {"sha256": hash of what vocseg wrote, "role": who wrote it ("run", "output", ...)}}}
# A file may be replaced when it does not exist, when it holds exactly what vocseg wrote there
# (the hash still matches: the user has not changed it), or when the user says so (--force).
MANIFEST_NAME = ".vocseg-written.json"
_HASH_LIMIT = 256 * 1024 * 1024  # larger files (checkpoints) are never recorded or hashed


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    import json

    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        files = data.get("files", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {str(k): {"sha256": str(v.get("sha256")), "role": str(v.get("role", ""))} for k, v in files.items() if isinstance(v, dict)}


def written_by_vocseg(path: str | Path, role: str | None = None) -> bool:
    """Whether `path` holds exactly what vocseg last wrote there (its folder's manifest says so),
    and, with `role`, wrote it in that role (e.g. "run": by `vocseg train` as a run folder's file)."""
    target = Path(path)
    try:
        if not target.is_file() or target.is_symlink() or target.stat().st_size > _HASH_LIMIT:
            return False
        entry = _manifest(target.parent).get(target.name)
        if entry is None or (role is not None and entry["role"] != role):
            return False
        return entry["sha256"] == _sha256(target)
    except OSError:
        return False


def record_written(*paths: str | Path, role: str = "output") -> None:
    """Note in each folder's manifest that vocseg wrote these files (as they are now), in `role`."""
    import json

    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        target = Path(p)
        if target.is_file() and target.stat().st_size <= _HASH_LIMIT:
            by_folder.setdefault(target.parent, []).append(target)
    for folder, files in by_folder.items():
        entries = {name: entry for name, entry in _manifest(folder).items() if (folder / name).is_file()}
        entries.update({f.name: {"sha256": _sha256(f), "role": role} for f in files})
        write_text_atomic(folder / MANIFEST_NAME, json.dumps({"files": dict(sorted(entries.items()))}, indent=1) + "\n")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_may_write(
    path: str | Path,
    *,
    force: bool = False,
    inputs: tuple[str | Path, ...] | list[str | Path] = (),
    data: bytes | None = None,
    option: str = "",
    force_option: str | None = "--force",
) -> None:
    """Refuse (one line) to write `path` over a file vocseg did not write, or over an input.

    Allowed: a new name; an output file vocseg wrote there and nobody changed since; a file that
    already holds exactly `data`; anything but an input with `force`. Never allowed: an input of
    this command (`inputs`; for a folder, the files in it, e.g. a run folder's), a folder. `option` names the flag that chose the path and `force_option`
the command's flag that allows replacing (None: it has none), for the message.
    """
    from vocseg.errors import VocsegError

    target = Path(path)
    named = f"{option} {target}" if option else str(target)
    protected = [Path(p) for p in inputs]
    protected += [f for p in protected if p.is_dir() for f in p.iterdir() if f.is_file()]  # a run folder's files
    for given in protected:
        if _same(target, given):
            raise VocsegError(f"{named} is one of this command's inputs; it would be replaced.", "Pass another output path.")
    if target.is_dir():
        raise VocsegError(f"{named} is a folder, not a file name.", f"Pass a file name, e.g. {target / 'out'}{target.suffix}.")
    if not (target.exists() or target.is_symlink()) or force:
        return
    if target.is_symlink():
        raise VocsegError(f"{named} is a link vocseg did not make; writing would replace what it points to.", "Pass another output path.")
    if data is not None:
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return
        except OSError:
            pass
    if written_by_vocseg(target, role="output"):  # a run folder's config.py / recipe.json are the run's, not outputs
        return
    more = f" or {force_option} to replace it" if force_option else ""
    raise VocsegError(
        f"{named} exists and was not written by vocseg (or was changed since); it is left as it is.",
        f"Pass another path{more}.",
    )


def check_output_folder(folder: str | Path, *, force: bool = False, option: str = "", own_dirs: str = "", may_write: Callable[[str], bool] | None = None) -> None:
    """Refuse (one line) an output folder that holds files vocseg did not write there as outputs.

    With `may_write` (a name -> bool), only entries whose names the command could write count:
    the user's other files in the folder are left alone and do not stop it.

    A new or empty folder is fine; so is one where every file is a recorded, unchanged vocseg
    output and every folder matches the regular expression `own_dirs` (folders vocseg or MMEngine
    make there, e.g. timestamped log folders). `force` accepts any folder (files vocseg writes
    may then replace files of the same name).
    """
    import re

    from vocseg.errors import VocsegError

    target = Path(folder)
    named = f"{option} {target}" if option else str(target)
    if target.exists() and not target.is_dir():
        raise VocsegError(f"{named} is a file, not a folder; it is left as it is.", "Pass a folder (a new one is created).")
    if force or not target.is_dir():
        return
    foreign = []
    for entry in sorted(target.iterdir()):
        if entry.name == MANIFEST_NAME:
            continue
        if may_write is not None and not may_write(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink() and own_dirs and re.fullmatch(own_dirs, entry.name):
            continue
        if entry.is_file() and written_by_vocseg(entry, role="output"):
            continue
        foreign.append(entry.name)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise VocsegError(
            f"{named} holds files vocseg did not write ({shown}); nothing was written there.",
            "Pass a new or empty folder, or --force to write into it anyway (files of the same name are replaced).",
        )


def write_owned_bytes(path: str | Path, data: bytes, *, force: bool = False, inputs: tuple[str | Path, ...] = (), option: str = "") -> None:
    """`check_may_write`, then `write_bytes_atomic`, then record the file as vocseg's."""
    check_may_write(path, force=force, inputs=inputs, data=data, option=option)
    write_bytes_atomic(path, data)
    record_written(path)


def write_owned_text(path: str | Path, text: str, *, force: bool = False, inputs: tuple[str | Path, ...] = (), option: str = "") -> None:
    """`write_owned_bytes` for text (UTF-8)."""
    write_owned_bytes(path, text.encode("utf-8"), force=force, inputs=inputs, option=option)


# ---------------------------------------------------------------- one process at a time


class LockBusy(Exception):
    """Another process holds the lock; `holder` is its pid as it wrote it (or '')."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[int | None]:
    """Hold `lock_path` (an fcntl flock; the file records the holder's pid) or raise `LockBusy`.

    The lock goes with the process: a killed holder never leaves it locked. Yields the lock
    file's descriptor (child processes that keep it open keep the lock), or None where the
    platform or the file system has no locks (then nothing is guarded).
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield None
        return
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise LockBusy(f.read().strip()) from None
        except OSError:  # a file system without locks (some network mounts): go on unguarded
            yield None
            return
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield f.fileno()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
