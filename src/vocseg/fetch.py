"""Get the VOC 2012 and SBD archives into a data root: download (or --from-dir), verify, extract.

Downloads resume where they stopped (HTTP Range), retry with backoff, and are kept in a cache
folder under a name that says what they are: `<name>` for the official archive (md5 as published),
`<name>.md5-<md5>` for any other copy (a mirror's repack, a test archive), which is used only when
the user names that md5 with `--md5 NAME=MD5`. A verified archive is never downloaded again.

Extraction goes to a staging folder inside the data root and is moved into place in one rename
when complete, so an interrupted extraction never looks complete. Members with absolute paths,
`..`, links leading outside the target or special files make the whole archive refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from vocseg.errors import VocsegError
from vocseg.voc import (
    SBD_ARCHIVE,
    SBD_ARCHIVE_MD5,
    SBD_ARCHIVE_URLS,
    SBD_SUBDIR,
    SPLITS_SUBDIR,
    VOC_ARCHIVE,
    VOC_ARCHIVE_MD5,
    VOC_ARCHIVE_URLS,
    VOC_SUBDIR,
)

# Network behaviour (tests shorten the waits).
ATTEMPTS = 4  # failed attempts in a row, without progress, before a source is given up
BACKOFF_S = 1.0  # first wait; doubles after each failure without progress
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 60.0
CHUNK = 1 << 20
USER_AGENT = "vocseg (PASCAL VOC 2012 prepare)"

STAGING_PREFIX = ".vocseg-extract-"
EXTRACTED_MARKER = ".vocseg-extracted.json"


@dataclass(frozen=True)
class Archive:
    key: str  # "voc" or "sbd"
    name: str  # file name of the archive
    md5: str  # the official archive's md5
    urls: tuple[str, ...]
    top: str  # the folder taken out of the archive into the data root
    required: tuple[str, ...]  # what a complete tree holds, relative to the data root
    label: str

    @property
    def flag(self) -> str:
        return "vocseg prepare --aug" if self.key == "sbd" else "vocseg prepare"


ARCHIVES: dict[str, Archive] = {
    "voc": Archive(
        "voc",
        VOC_ARCHIVE,
        VOC_ARCHIVE_MD5,
        VOC_ARCHIVE_URLS,
        VOC_SUBDIR,
        tuple(f"{VOC_SUBDIR}/{p}" for p in (f"{SPLITS_SUBDIR}/train.txt", f"{SPLITS_SUBDIR}/val.txt", "JPEGImages", "SegmentationClass")),
        "PASCAL VOC 2012 trainval",
    ),
    "sbd": Archive(
        "sbd",
        SBD_ARCHIVE,
        SBD_ARCHIVE_MD5,
        SBD_ARCHIVE_URLS,
        SBD_SUBDIR.split("/")[0],
        tuple(f"{SBD_SUBDIR}/{p}" for p in ("cls", "train.txt", "val.txt")),
        "SBD (benchmark.tgz)",
    ),
}


class _Retry(Exception):
    """A transient failure: try the same source again after a wait."""


class _SourceFailed(Exception):
    """This source cannot give the archive (HTTP 404, retries exhausted): try the next one."""


# ---------------------------------------------------------------- what is where


def default_cache_dir() -> Path:
    """$VOCSEG_CACHE_DIR, else the user's platformdirs cache folder; archives go in `archives/`."""
    env = os.environ.get("VOCSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "archives"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vocseg")) / "archives"


def parse_md5_overrides(items: list[str]) -> dict[str, str]:
    """`NAME=MD5` items (NAME: an archive's file name, or voc / sbd) -> {archive key: md5}."""
    out: dict[str, str] = {}
    by_name = {a.name: a.key for a in ARCHIVES.values()} | {k: k for k in ARCHIVES}
    for item in items:
        name, sep, value = item.partition("=")
        value = value.strip().lower()
        if not sep or name.strip() not in by_name:
            raise VocsegError(f"--md5 {item!r}: expected NAME=MD5 with NAME one of {', '.join(sorted(by_name))}.", f"e.g. --md5 {VOC_ARCHIVE}=<32 hex digits>")
        if not re.fullmatch(r"[0-9a-f]{32}", value):
            raise VocsegError(f"--md5 {item!r}: {value!r} is not an md5 (32 hex digits).", "Copy it from `md5sum ARCHIVE`.")
        out[by_name[name.strip()]] = value
    return out


def candidate_urls(archive: Archive, mirror: str | None) -> list[str]:
    """The mirror first (a base URL, or the archive's full URL), then the official sources."""
    urls: list[str] = []
    if mirror:
        urls.append(mirror if mirror.rstrip("/").endswith("/" + archive.name) else mirror.rstrip("/") + "/" + archive.name)
    return urls + [u for u in archive.urls if u not in urls]


def cached_path(cache: Path, archive: Archive, md5: str) -> Path:
    """Where the archive with this md5 lives in the cache (the official one under its own name)."""
    return cache / (archive.name if md5 == archive.md5 else f"{archive.name}.md5-{md5}")


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


# ---------------------------------------------------------------- progress and hashing


@contextmanager
def _bytes_progress(console: Console) -> Iterator[Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        yield progress


def md5_of(path: Path, progress: Progress | None = None, task: TaskID | None = None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamped_md5(path: Path) -> str | None:
    """The md5 recorded for `path` when it was verified, if the file has not changed since."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns:
        return str(stamp.get("md5"))
    return None


def _write_stamp(path: Path, md5: str) -> None:
    st = path.stat()
    tmp = _stamp_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, _stamp_path(path))


def verify_file(path: Path, console: Console, *, stamps: bool) -> str:
    """md5 of `path`; with `stamps`, taken from its stamp when the file is unchanged since it was hashed."""
    if stamps and (known := _stamped_md5(path)):
        return known
    with _bytes_progress(console) as progress:
        task = progress.add_task(f"verify {path.name.split('.md5-')[0]}", total=path.stat().st_size)
        got = md5_of(path, progress, task)
    if stamps:
        try:
            _write_stamp(path, got)
        except OSError:
            pass  # a stamp only saves time
    return got


def _disk_error(exc: OSError, where: Path, hint: str) -> VocsegError:
    if exc.errno == errno.ENOSPC:
        return VocsegError(f"Disk full while writing {where}.", hint)
    return VocsegError(f"Could not write {where}: {exc.strerror or exc}.", hint)


def _need_space(folder: Path, needed: int, what: str, hint: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise VocsegError(f"Not enough disk space for {what} in {folder}: needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free.", hint)


# ---------------------------------------------------------------- download


@dataclass
class _PartState:
    """The partial download and the md5 of its first `hashed` bytes (kept across attempts)."""

    path: Path
    digest: hashlib._Hash
    hashed: int = 0
    resumed: bool = False  # some of it came from an earlier request (a resume can splice two files)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest = hashlib.md5()
        self.hashed = 0
        self.resumed = False

    def catch_up(self) -> int:
        """Hash what is on disk but not hashed yet (a part kept from an earlier run); return its size."""
        size = self.size()
        if size < self.hashed:
            self.digest, self.hashed = hashlib.md5(), 0
        if size > self.hashed:
            with open(self.path, "rb") as f:
                f.seek(self.hashed)
                while self.hashed < size and (chunk := f.read(min(CHUNK, size - self.hashed))):
                    self.digest.update(chunk)
                    self.hashed += len(chunk)
        return size


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header ('bytes 10-99/100', 'bytes */100')."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(2)) if m.group(2) != "*" else None)


def _attempt(url: str, part: _PartState, progress: Progress, task: TaskID, cache: Path) -> None:
    """One HTTP request, resuming from what `part` holds. Returns when the whole file is there."""
    import http.client
    import urllib.error
    import urllib.request

    offset = part.catch_up()
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return  # the part already holds the whole file
            part.restart()  # the part does not fit this file: start over
            raise _Retry(f"HTTP 416, the kept part ({offset} bytes) does not fit; starting over") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise _SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retry(f"{type(exc).__name__}: {reason}") from None
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.restart()
                raise _Retry(f"server resumed at byte {start}, not {offset}; starting over")
            part.resumed = part.resumed or offset > 0
        else:  # 200: the whole file (the server ignores Range, or nothing was kept)
            if offset:
                part.restart()
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None:
            _need_space(cache, total - offset, part.path.name, "Free some space or pass --cache-dir DIR on a bigger disk; re-run to resume.")
        progress.update(task, total=total, completed=offset)
        received = 0
        with open(part.path, "ab") as f:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Retry(f"connection lost after {offset + received} bytes ({type(exc).__name__})") from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:
                    raise _disk_error(
                        exc, part.path, f"Free some space (or pass --cache-dir DIR) and re-run: the {offset + received} bytes kept resume."
                    ) from None
                part.digest.update(chunk)
                part.hashed += len(chunk)
                received += len(chunk)
                progress.advance(task, len(chunk))
    if total is not None and offset + received < total:
        raise _Retry(f"connection closed after {offset + received} of {total} bytes")
    if total is not None and offset + received > total:
        part.restart()
        raise _Retry(f"received {offset + received} bytes, more than the announced {total}; starting over")


def download_from(url: str, part: _PartState, progress: Progress, task: TaskID, cache: Path) -> None:
    """Retry `url` with backoff until the file is complete; `_SourceFailed` when it gives up."""
    failures = 0
    while True:
        before = part.size()
        try:
            _attempt(url, part, progress, task, cache)
            return
        except _Retry as exc:
            progressed = part.size() > before
            failures = 0 if progressed else failures + 1
            if failures >= ATTEMPTS:
                raise _SourceFailed(str(exc)) from None
            wait = BACKOFF_S if progressed else min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (failures - 1))
            progress.console.print(f"  {url}: {exc}; retrying in {wait:g} s")
            time.sleep(wait)


def download_archive(archive: Archive, md5: str, cache: Path, mirror: str | None, console: Console) -> Path:
    """Download into the cache (resuming a kept part) until a copy with `md5` is there; return it."""
    part = _PartState(cache / f"{archive.name}.part", hashlib.md5())
    problems: list[str] = []
    wrong: list[tuple[str, str, Path]] = []
    queue = [(url, True) for url in candidate_urls(archive, mirror)]
    while queue:
        url, may_retry = queue.pop(0)
        with _bytes_progress(console) as progress:
            task = progress.add_task(f"download {archive.name}", total=None)
            try:
                download_from(url, part, progress, task, cache)
            except _SourceFailed as exc:
                problems.append(f"{url}: {exc}")
                continue
        got = part.digest.hexdigest()
        if got != md5 and part.resumed and may_retry:
            # The kept part may come from another file or version: fetch it once more, whole.
            console.print(f"  {url}: md5 {got} after resuming; downloading it again from the start")
            part.restart()
            queue.insert(0, (url, False))
            continue
        # Whatever it is, keep it under the name of what it is: a later --md5 can accept it.
        landed = cached_path(cache, archive, got)
        os.replace(part.path, landed)
        _write_stamp(landed, got)
        part.restart()
        if got == md5:
            return landed
        wrong.append((url, got, landed))
        console.print(f"  {url}: md5 {got}, expected {md5}; trying the next source")
    kept = part.size()
    if wrong:
        url, got, landed = wrong[-1]
        accept = f"If you trust this copy (e.g. a mirror's repack), accept it with --md5 {archive.name}={got} (kept as {landed})"
        raise VocsegError(
            f"{archive.name} from {url} has md5 {got}, expected {md5}" + (" (the official one)" if md5 == archive.md5 else "") + ".",
            f"{accept}; or fetch the official archive yourself and pass --from-dir DIR.",
        )
    resume = f"re-run to resume ({kept:,} bytes kept in {part.path})" if kept else "re-run later"
    raise VocsegError(
        f"Could not download {archive.name}: " + "; ".join(problems) + ".",
        f"Check the network and {resume}; or pass --mirror URL, or download {archive.name} yourself and pass --from-dir DIR.",
    )


def locate_archive(archive: Archive, md5: str, *, cache: Path, from_dir: Path | None, mirror: str | None, force: bool, console: Console) -> Path:
    """A local copy of the archive whose md5 is `md5`: from --from-dir, the cache, or a download."""
    official = md5 == archive.md5
    if from_dir is not None:
        path = from_dir.expanduser() / archive.name
        if not path.is_file():
            raise VocsegError(f"{path} does not exist.", f"Put {archive.name} in {from_dir} (or drop --from-dir to download it).")
        got = verify_file(path, console, stamps=False)  # the user's folder: no stamp files there
        if got != md5:
            what = "the official archive's" if official else "the md5 given with --md5"
            raise VocsegError(
                f"{path} has md5 {got}, not {what} ({md5}): a truncated or different file.",
                f"Download {archive.name} again; if you trust this copy, accept it with --md5 {archive.name}={got}.",
            )
        return path
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, cache, "Pass --cache-dir DIR with a writable folder.") from None
    with _cache_lock(cache, archive, console):
        path = cached_path(cache, archive, md5)
        if path.is_file():
            if force:
                _stamp_path(path).unlink(missing_ok=True)  # --force: hash it again
            got = verify_file(path, console, stamps=True)
            if got == md5:
                console.print(f"{archive.name}: verified copy in {cache}")
                return path
            # Changed since it was stored: keep it under the name of what it now is, download again.
            os.replace(path, cached_path(cache, archive, got))
            _write_stamp(cached_path(cache, archive, got), got)
        return download_archive(archive, md5, cache, mirror, console)


@contextmanager
def _cache_lock(cache: Path, archive: Archive, console: Console) -> Iterator[None]:
    """One process at a time downloads an archive into a cache (they would append to one part)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, go on unlocked
        yield
        return
    with open(cache / f".{archive.name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"{archive.name}: another vocseg is fetching it into {cache}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    with open(path, "rb") as raw, _bytes_progress(console) as progress:
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
    _need_space(
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
                raise _disk_error(exc, root, "Free some space and re-run: the verified archive is kept and extraction starts again.") from None
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


def fetch_and_extract(
    root: Path,
    *,
    aug: bool,
    force: bool,
    mirror: str | None,
    cache_dir: Path | None,
    from_dir: Path | None,
    md5_overrides: list[str] | dict[str, str],
    need_voc: bool,
    need_sbd: bool,
    console: Console,
) -> None:
    """Fetch (or take from --from-dir), verify and extract the VOC archive and, with `aug`, SBD's."""
    overrides = md5_overrides if isinstance(md5_overrides, dict) else parse_md5_overrides(md5_overrides)
    cache = (cache_dir or default_cache_dir()).expanduser()
    wanted = [k for k, need in (("voc", need_voc), ("sbd", need_sbd and aug)) if need]
    for key in wanted:
        archive = ARCHIVES[key]
        md5 = overrides.get(key, archive.md5)
        path = locate_archive(archive, md5, cache=cache, from_dir=from_dir, mirror=mirror, force=force, console=console)
        extract_archive(path, archive, md5, root, replace=force, console=console)
