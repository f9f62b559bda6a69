"""Extraction of the VOC and SBD archives into a data root.

Extraction goes to a staging folder inside the data root and is moved into place in one rename
when complete, so an interrupted extraction never looks complete. Members with absolute paths,
`..`, links leading outside the target or special files make the whole archive refused.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rich.console import Console
from rich.progress import Progress, TaskID

from vocseg.data.download import bytes_progress, disk_error, need_space
from vocseg.data.voc import ARCHIVES, Archive
from vocseg.errors import VocsegError

STAGING_PREFIX = ".vocseg-extract-"
EXTRACTED_MARKER = ".vocseg-extracted.json"



def tree_state(root: Path, archive: Archive) -> str:
    """'complete', 'absent', or 'partial' (the top folder exists without everything it needs)."""
    if all((root / p).exists() for p in archive.required):
        return "complete"
    return "partial" if (root / archive.top).exists() else "absent"


def extracted_marker(root: Path, archive: Archive) -> dict[str, str] | None:
    """What vocseg recorded when it extracted this tree, or None (a tree the user put there)."""
    try:
        return dict(json.loads((root / archive.top / EXTRACTED_MARKER).read_text()))
    except (OSError, ValueError):
        return None



# ---------------------------------------------------------------- extraction


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting this member could write outside the target, or None if it is safe."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in its path"
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            return f"link to an absolute path ({member.linkname})"
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts:
            depth += -1 if part == ".." else 0 if part == "." else 1
            if depth < 0:
                return f"link leading outside the archive ({member.linkname})"
    elif not (member.isfile() or member.isdir()):
        return "device, fifo or other special file"
    return None


def _wanted(name: str, top: str) -> bool:
    name = name.lstrip("./")
    return name == top or name.startswith(top + "/")


class _CountingReader:
    """A read-only file wrapper that tells the progress bar how far into the archive we are."""

    def __init__(self, raw: BinaryIO, progress: Progress, task: TaskID) -> None:
        self.raw, self.progress, self.task = raw, progress, task

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.progress.update(self.task, completed=self.raw.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def _extract_members(path: Path, archive: Archive, staging: Path, console: Console) -> int:
    """Extract the archive's `top` folder into `staging`; return the number of members taken."""
    use_filter = hasattr(tarfile, "data_filter")
    taken = 0
    with open(path, "rb") as raw, bytes_progress(console) as progress:
        task = progress.add_task(f"extract {archive.name}", total=path.stat().st_size)
        try:
            tar = tarfile.open(fileobj=_CountingReader(raw, progress, task), mode="r:*")  # type: ignore[call-overload]
        except tarfile.ReadError:
            raise VocsegError(
                f"{path} is not a tar archive (nor a compressed one).",
                f"Delete it and re-run `{archive.flag}` to download {archive.name} again (or pass --from-dir with the real one).",
            ) from None
        with tar:
            for member in tar:
                why = unsafe_reason(member)
                if why:
                    raise VocsegError(
                        f"{path} has an unsafe member {member.name!r} ({why}); nothing was extracted.",
                        f"This is not a genuine {archive.label} archive: delete it and get the official one.",
                    )
                if not _wanted(member.name, archive.top):
                    continue
                if use_filter:
                    tar.extract(member, staging, filter="data")
                else:
                    tar.extract(member, staging)
                taken += 1
            # tarfile ends quietly at a header cut short: a complete archive ends with a zero block.
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"it ends after {tar.offset:,} bytes without the end-of-archive block")
    return taken


def extract_archive(path: Path, archive: Archive, md5: str, root: Path, *, replace: bool, console: Console) -> None:
    """Extract into a staging folder in `root`, check it, then move `archive.top` into place."""
    import zlib

    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{STAGING_PREFIX}{archive.key}"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    dest = root / archive.top
    if dest.exists() and not replace:
        raise VocsegError(
            f"{dest} already exists but is incomplete.", f"Move it away, or re-run with --force to replace it with a fresh extraction of {archive.name}."
        )
    # Uncompressed tar: about its own size; the SBD .tgz holds mostly JPEGs and .mat files that barely compress.
    size = path.stat().st_size
    need_space(
        root, int(size * (1.0 if path.suffix == ".tar" else 1.3)), f"extracting {path.name}", "Free some space and re-run; the verified archive is kept."
    )
    fail_hint = f"Delete {path} and re-run `{archive.flag}` to download it again (or fix it and pass --from-dir)."
    ok = False
    try:
        staging.mkdir()
        try:
            taken = _extract_members(path, archive, staging, console)
        except tarfile.FilterError as exc:
            raise VocsegError(
                f"{path} has an unsafe member ({exc}); nothing was extracted.", f"This is not a genuine {archive.label} archive: delete it."
            ) from None
        except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as exc:
            raise VocsegError(f"{path} is truncated or damaged ({exc}).", fail_hint) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise disk_error(exc, root, "Free some space and re-run: the verified archive is kept and extraction starts again.") from None
            raise VocsegError(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}).", fail_hint) from None
        missing = [p for p in archive.required if not (staging / p).exists()]
        if missing:
            found = "nothing" if not taken else f"no {missing[0]}"
            raise VocsegError(f"{path} is not the {archive.label} archive: it holds {found} under {archive.top}/.", fail_hint)
        (staging / archive.top / EXTRACTED_MARKER).write_text(json.dumps({"archive": archive.name, "md5": md5, "members": taken}))
        # The one step that makes the tree appear: a rename, complete or not at all.
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            old = root / f"{STAGING_PREFIX}{archive.key}-old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(staging / archive.top, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging / archive.top, dest)
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not ok and (root / f"{STAGING_PREFIX}{archive.key}-old").exists() and not dest.exists():
            os.replace(root / f"{STAGING_PREFIX}{archive.key}-old", dest)  # put the old tree back
    console.print(f"{archive.label}: extracted {taken} entries from {path.name} into {dest}")


def recover_interrupted(root: Path) -> None:
    """Undo what an interrupted extraction left in `root`: staging folders go, a swapped-out tree returns."""
    if not root.is_dir():
        return
    for archive in ARCHIVES.values():
        old = root / f"{STAGING_PREFIX}{archive.key}-old"
        if old.exists():
            if (root / archive.top).exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, root / archive.top)
        shutil.rmtree(root / f"{STAGING_PREFIX}{archive.key}", ignore_errors=True)


