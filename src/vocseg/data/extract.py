"""Extraction of the VOC and SBD archives into a data root.

Extraction goes to a staging folder inside the data root and is moved into place in one rename
when complete, so an interrupted extraction never looks complete.

Nothing is ever written outside the staging folder, whatever the Python version: the genuine VOC
and SBD archives hold only folders and regular files (docs/prepare.md says how that was
established), so a member that is a symbolic link, a hard link, a device, a fifo, or whose path is
absolute, holds `..`, or is longer than a file system takes makes the whole archive refused before
anything of it is used. vocseg then writes each member itself instead of `tarfile.extract`: every
folder on the way is created by vocseg and checked with `lstat` to be a real folder, every file is
opened with `O_NOFOLLOW`, so no path can pass through a link (the chained-link and PATH_MAX tricks
of CVE-2025-4517, which defeat tarfile's `data` filter on Pythons before 3.11.13 / 3.12.11 /
3.13.4, and the hard-link fallback of CPython issue 151558, have nothing to work with).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
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


def foreign_in_tree(root: Path, archive: Archive) -> str | None:
    """None when `root/archive.top` is exactly the tree vocseg extracted there (its recorded marker
    lists every file with its size, and nothing was added, removed or resized); else what differs,
    in words: such a tree is never replaced or deleted."""
    from vocseg.files import OWN_NAMES, recorded

    top = root / archive.top
    marker = extracted_marker(root, archive)
    if marker is None or not recorded(top / EXTRACTED_MARKER) or not isinstance(marker.get("files"), dict):
        return f"{top} is not a tree vocseg extracted (no record of it)"
    listed: dict = dict(marker["files"])
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            path = Path(dirpath) / name
            if name in OWN_NAMES or path == top / EXTRACTED_MARKER:
                continue
            rel = path.relative_to(top).as_posix()
            if path.is_symlink() or (listed.pop(rel, None) != os.lstat(path).st_size and not recorded(path)):
                return f"{top} holds {rel}, which vocseg did not extract (or which was changed)"
    if listed:
        return f"{top} lacks {next(iter(listed))}, which vocseg extracted"
    return None


def extracted_marker(root: Path, archive: Archive) -> dict[str, str] | None:
    """What vocseg recorded when it extracted this tree, or None (a tree the user put there)."""
    try:
        return dict(json.loads((root / archive.top / EXTRACTED_MARKER).read_text()))
    except (OSError, ValueError):
        return None



# ---------------------------------------------------------------- extraction


NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, NTFS)
PATH_LIMIT = 1024  # bytes in a member's path: VOC's longest is under 80; PATH_MAX tricks need ~4096


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting this member could write outside the target (or is not a VOC/SBD member), or None.

    Links of any kind are refused: the genuine archives hold none (docs/prepare.md), and a link,
    even one that points inside, is what chained-link escapes are built from.
    """
    name = member.name
    if "\x00" in name:
        return "a NUL byte in its path"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' in its path"
    if len(name.encode("utf-8", "surrogateescape")) > PATH_LIMIT or any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        return "a path longer than a file system takes"
    if member.issym():
        return f"a symbolic link (to {member.linkname!r}); the genuine archive holds none"
    if member.islnk():
        return f"a hard link (to {member.linkname!r}); the genuine archive holds none"
    if not (member.isfile() or member.isdir()):
        return "device, fifo or other special file"
    return None


def member_parts(name: str) -> list[str]:
    """A member's path as components under the target (`./`, empty parts and `.` dropped)."""
    return [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "/")]


def _real_folder(path: Path) -> None:
    """Create `path` (one component) or check that what is there is a real folder, never a link."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise tarfile.ReadError(f"{path.name!r} is both a file and a folder in it")


def write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
    """Write one checked folder or regular-file member under `staging`, never through a link."""
    parts = member_parts(member.name)
    if not parts:
        return
    here = staging
    folders = parts if member.isdir() else parts[:-1]
    for part in folders:
        here = here / part
        _real_folder(here)
    if member.isdir():
        return
    target = here / parts[-1]
    source = tar.extractfile(member)
    if source is None:
        raise tarfile.ReadError(f"no data for {member.name!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as out, source:
        shutil.copyfileobj(source, out, 1 << 20)


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
    taken = 0
    from vocseg.files import OWN_NAMES

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
                    shown = member.name if len(member.name) <= 120 else f"{member.name[:60]}...{member.name[-40:]}"
                    raise VocsegError(
                        f"{path} has an unsafe member {shown!r} ({why[:200]}); nothing was extracted.",
                        f"This is not a genuine {archive.label} archive: delete it and get the official one.",
                    )
                if not _wanted(member.name, archive.top) or PurePosixPath(member.name).name in OWN_NAMES:
                    continue  # an archive's own "record" would claim files as vocseg's: never taken
                write_member(tar, member, staging)
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

    from vocseg.files import OWN_NAMES, STAGING_ROLE, owned_mkdir, owned_replace, owned_write_text, place_tree, remove_staging

    owned_mkdir(root, role="data")
    staging = root / f"{STAGING_PREFIX}{archive.key}"
    remove_staging(staging)  # what an interrupted run left
    dest = root / archive.top
    if os.path.lexists(dest):
        foreign = foreign_in_tree(root, archive)
        if foreign is not None:
            raise VocsegError(f"{foreign}; it is left as it is (--force included).", f"Move it away (e.g. mv {dest} {dest}.mine) and re-run, or use it as it is.")
        if not replace:
            raise VocsegError(f"{dest} already exists.", f"Re-run with --redo to replace it with a fresh extraction of {archive.name}.")
    # Uncompressed tar: about its own size; the SBD .tgz holds mostly JPEGs and .mat files that barely compress.
    size = path.stat().st_size
    need_space(
        root, int(size * (1.0 if path.suffix == ".tar" else 1.3)), f"extracting {path.name}", "Free some space and re-run; the verified archive is kept."
    )
    fail_hint = f"Delete {path} and re-run `{archive.flag}` to download it again (or fix it and pass --from-dir)."
    ok = False
    try:
        owned_mkdir(staging, role=STAGING_ROLE, exist_ok=False)
        try:
            taken = _extract_members(path, archive, staging, console)
        except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as exc:
            raise VocsegError(f"{path} is truncated or damaged ({exc}).", fail_hint) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO):
                raise disk_error(exc, root, "Free some space and re-run: the verified archive is kept and extraction starts again.") from None
            raise VocsegError(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}).", fail_hint) from None
        missing = [p for p in archive.required if not (staging / p).exists()]
        if missing:
            found = "nothing" if not taken else f"no {missing[0]}"
            raise VocsegError(f"{path} is not the {archive.label} archive: it holds {found} under {archive.top}/.", fail_hint)
        built = staging / archive.top
        files = {p.relative_to(built).as_posix(): p.stat().st_size for p in sorted(built.rglob("*")) if p.is_file() and not p.is_symlink() and p.name not in OWN_NAMES}
        owned_write_text(built / EXTRACTED_MARKER, json.dumps({"archive": archive.name, "md5": md5, "members": taken, "files": files}), role="data")
        # The one step that makes the tree appear: a rename, complete or not at all. A tree vocseg
        # extracted before (checked above: unchanged) is moved into the staging folder first.
        owned_mkdir(dest.parent, role="data")
        if os.path.lexists(dest):
            old = staging / "old"
            owned_replace(dest, old)
            place_tree(built, dest)
        else:
            place_tree(built, dest)
        ok = True
    finally:
        old = staging / "old"
        if not ok and os.path.isdir(old) and not os.path.lexists(dest):
            place_tree(old, dest)  # put the old tree back
        remove_staging(staging)
    console.print(f"{archive.label}: extracted {taken} entries from {path.name} into {dest}")


def recover_interrupted(root: Path) -> None:
    """Undo what an interrupted extraction left in `root`: a tree moved aside returns to its place,
    then the staging folders (only those the record names as vocseg's) go."""
    from vocseg.files import place_tree, remove_staging

    if not root.is_dir():
        return
    for archive in ARCHIVES.values():
        staging = root / f"{STAGING_PREFIX}{archive.key}"
        if (staging / "old").is_dir() and not os.path.lexists(root / archive.top):
            place_tree(staging / "old", root / archive.top)
        remove_staging(staging)
