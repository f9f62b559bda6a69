"""Resumable, verified downloads: HTTP Range resume, retries with backoff, a hash (md5 for the VOC/SBD
archives, sha256 for checkpoints) with a stamp file so a verified file is not hashed again, and
one-line errors for full disks.

Two callers: `vocseg.data.fetch` (the archives of `prepare`, several sources, md5 as published) and
`fetch_verified` below (pretrained and official checkpoints: one URL, the sha256 prefix their file
names carry)."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from vocseg.errors import VocsegError

# Network behaviour (tests shorten the waits).
ATTEMPTS = 4  # failed attempts in a row, without progress, before a source is given up
BACKOFF_S = 1.0  # first wait; doubles after each failure without progress
MAX_BACKOFF_S = 30.0
TIMEOUT_S = 60.0
CHUNK = 1 << 20
USER_AGENT = "vocseg (PASCAL VOC 2012 prepare)"
SPACE_HINT = "Free some space or pass --cache-dir DIR on a bigger disk"  # prepare's; fetch_verified passes its own


class _Retry(Exception):
    """A transient failure: try the same source again after a wait."""


class SourceFailed(Exception):
    """This source cannot give the archive (HTTP 404, retries exhausted): try the next one."""



# ---------------------------------------------------------------- progress and hashing


@contextmanager
def bytes_progress(console: Console, *, transient: bool = False) -> Iterator[Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    ) as progress:
        yield progress


def hash_of(path: Path, algorithm: str = "md5", progress: Progress | None = None, task: TaskID | None = None) -> str:
    """Hex digest of a file (`algorithm`: a hashlib name, md5 or sha256 here), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))
    return digest.hexdigest()


def stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def stamped_hash(path: Path, algorithm: str = "md5") -> str | None:
    """The `algorithm` digest recorded for `path` when it was verified, if the file has not changed since."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns and stamp.get(algorithm):
        return str(stamp[algorithm])
    return None


def write_stamp(path: Path, digest: str, algorithm: str = "md5") -> None:
    """Record `digest` (of `algorithm`) with the file's size and mtime in `.NAME.verified` beside it."""
    from vocseg.files import owned_write_text

    st = path.stat()
    owned_write_text(stamp_path(path), json.dumps({algorithm: digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}), role="cache")


def verify_file(path: Path, console: Console, *, stamps: bool, algorithm: str = "md5") -> str:
    """`algorithm` digest of `path`; with `stamps`, taken from its stamp when the file is unchanged since it was hashed."""
    if stamps and (known := stamped_hash(path, algorithm)):
        return known
    with bytes_progress(console) as progress:
        task = progress.add_task(f"verify {path.name.split('.md5-')[0]}", total=path.stat().st_size)
        got = hash_of(path, algorithm, progress, task)
    if stamps:
        try:
            write_stamp(path, got, algorithm)
        except OSError:
            pass  # a stamp only saves time
    return got


def disk_error(exc: OSError, where: Path, hint: str) -> VocsegError:
    if exc.errno == errno.ENOSPC:
        return VocsegError(f"Disk full while writing {where}.", hint)
    return VocsegError(f"Could not write {where}: {exc.strerror or exc}.", hint)


def need_space(folder: Path, needed: int, what: str, hint: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise VocsegError(f"Not enough disk space for {what} in {folder}: needs {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free.", hint)


# ---------------------------------------------------------------- download


@dataclass
class PartState:
    """The partial download and the digest of its first `hashed` bytes (kept across attempts).

    The digest's algorithm is whatever `digest` was made with (`hashlib.md5()`, `hashlib.sha256()`);
    a restart starts a fresh one of the same kind.
    """

    path: Path
    digest: hashlib._Hash
    hashed: int = 0
    resumed: bool = False  # some of it came from an earlier request (a resume can splice two files)
    space_hint: str = SPACE_HINT  # what to do when the disk is full: names the caller's own option

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def restart(self) -> None:
        from vocseg.files import owned_delete

        owned_delete(self.path)
        self.digest = hashlib.new(self.digest.name)
        self.hashed = 0
        self.resumed = False

    def catch_up(self) -> int:
        """Hash what is on disk but not hashed yet (a part kept from an earlier run); return its size."""
        size = self.size()
        if size < self.hashed:
            self.digest, self.hashed = hashlib.new(self.digest.name), 0
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


def _attempt(url: str, part: PartState, progress: Progress, task: TaskID, cache: Path) -> None:
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
        raise SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
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
            need_space(cache, total - offset, part.path.name, f"{part.space_hint}; re-run to resume.")
        progress.update(task, total=total, completed=offset)
        received = 0
        from vocseg.files import open_append

        with open_append(part.path) as f:
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
                    raise disk_error(exc, part.path, f"{part.space_hint}, and re-run: the {offset + received} bytes kept resume.") from None
                part.digest.update(chunk)
                part.hashed += len(chunk)
                received += len(chunk)
                progress.advance(task, len(chunk))
    if total is not None and offset + received < total:
        raise _Retry(f"connection closed after {offset + received} of {total} bytes")
    if total is not None and offset + received > total:
        part.restart()
        raise _Retry(f"received {offset + received} bytes, more than the announced {total}; starting over")


def download_from(url: str, part: PartState, progress: Progress, task: TaskID, cache: Path) -> None:
    """Retry `url` with backoff until the file is complete; `SourceFailed` when it gives up."""
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
                raise SourceFailed(str(exc)) from None
            wait = BACKOFF_S if progressed else min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (failures - 1))
            progress.console.print(f"  {url}: {exc}; retrying in {wait:g} s")
            time.sleep(wait)


# ---------------------------------------------------------------- one verified file (checkpoints)


@contextmanager
def waiting_lock(lock_path: Path, waiting: str, console: Console) -> Iterator[None]:
    """`vocseg.files.lock` on `lock_path` that waits for its holder (printing `waiting` once): one
    writer of a part file at a time. Created with O_NOFOLLOW, never truncating a file that is not a
    lock, removed when released (no lock file stays in the cache)."""
    from vocseg.files import lock

    with lock(lock_path.parent, lock_path.name, waiting=lambda _holder: console.print(waiting)):
        yield


@contextmanager
def download_lock(target: Path, console: Console) -> Iterator[None]:
    """One process at a time downloads `target`: several nodes or Slurm tasks may fetch the same
    weights into a shared cache at once. The lock is `.STEM.download-lock` beside it."""
    with waiting_lock(target.with_name(f".{target.stem}.download-lock"), f"{target.name}: another vocseg is downloading it into {target.parent}; waiting for it", console):
        yield


def fetch_verified(
    url: str,
    target: Path,
    *,
    expected: str | None,
    what: str,
    hint: str,
    space_hint: str,
    console: Console,
    algorithm: str = "sha256",
) -> Path:
    """`target`, downloaded from `url` unless a verified copy is there, whose `algorithm` digest
    starts with `expected` (a hex prefix, e.g. the 8 digits in mmseg's checkpoint names; None: no check).

    The download is the one `prepare` uses: it resumes a kept `NAME.part` (HTTP Range), retries
    with backoff, and hashes while it writes; the file appears under its name only once verified
    (the digest is stamped in `.NAME.verified`, so a later call does not hash it again). A part
    that was resumed and does not verify is fetched once more from the start. A cached file that
    no longer verifies is downloaded again.

    Errors (VocsegError, one line): the server cannot give it (`what`, the URL and `hint`; the
    bytes kept are named, a re-run resumes), the digest differs (the part is deleted), the disk
    is full or not writable (`space_hint`).
    """
    expected = expected.lower() if expected else None
    folder = target.parent
    from vocseg.files import owned_delete, owned_mkdir, owned_replace

    try:
        owned_mkdir(folder, role="cache")
    except OSError as exc:
        raise disk_error(exc, folder, space_hint) from None
    with download_lock(target, console):
        if target.is_file():
            got = verify_file(target, console, stamps=True, algorithm=algorithm)
            if expected is None or got.startswith(expected):
                return target
            console.print(f"{target}: {algorithm} {got[:8]}..., expected {expected}...: damaged; downloading it again")
            owned_delete(target)
            owned_delete(stamp_path(target))
        part = PartState(folder / f"{target.name}.part", hashlib.new(algorithm), space_hint=space_hint)
        for last_try in (False, True):
            with bytes_progress(console, transient=True) as progress:
                task = progress.add_task(f"download {target.name}", total=None)
                try:
                    download_from(url, part, progress, task, folder)
                except SourceFailed as exc:
                    kept = part.size()
                    resume = f" Re-run to resume ({kept:,} bytes kept in {part.path})." if kept else ""
                    raise VocsegError(f"Could not download {what} from {url}: {exc}.", hint + resume) from None
            got = part.digest.hexdigest()
            if expected is None or got.startswith(expected):
                break
            resumed = part.resumed
            part.restart()  # never keep bytes that do not verify
            if resumed and not last_try:
                # The kept part may come from another file or version: fetch it once more, whole.
                console.print(f"  {url}: {algorithm} {got[:8]}... after resuming; downloading it again from the start")
                continue
            raise VocsegError(
                f"{what} from {url} does not match its published hash ({algorithm} {got[:8]}..., expected {expected}...); deleted.",
                "Try again; if it persists, the server or mirror serves a different file.",
            )
        try:
            owned_replace(part.path, target)
            write_stamp(target, got, algorithm)
        except OSError as exc:
            raise disk_error(exc, target, space_hint) from None
        return target
