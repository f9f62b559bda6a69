"""Resumable, verified downloads: HTTP Range resume, retries with backoff, md5 with a stamp file
so a verified file is not hashed again, and one-line errors for full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import os
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


class _Retry(Exception):
    """A transient failure: try the same source again after a wait."""


class SourceFailed(Exception):
    """This source cannot give the archive (HTTP 404, retries exhausted): try the next one."""



# ---------------------------------------------------------------- progress and hashing


@contextmanager
def bytes_progress(console: Console) -> Iterator[Progress]:
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


def stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def stamped_md5(path: Path) -> str | None:
    """The md5 recorded for `path` when it was verified, if the file has not changed since."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None
    if stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns:
        return str(stamp.get("md5"))
    return None


def write_stamp(path: Path, md5: str) -> None:
    st = path.stat()
    tmp = stamp_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, stamp_path(path))


def verify_file(path: Path, console: Console, *, stamps: bool) -> str:
    """md5 of `path`; with `stamps`, taken from its stamp when the file is unchanged since it was hashed."""
    if stamps and (known := stamped_md5(path)):
        return known
    with bytes_progress(console) as progress:
        task = progress.add_task(f"verify {path.name.split('.md5-')[0]}", total=path.stat().st_size)
        got = md5_of(path, progress, task)
    if stamps:
        try:
            write_stamp(path, got)
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
            need_space(cache, total - offset, part.path.name, "Free some space or pass --cache-dir DIR on a bigger disk; re-run to resume.")
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
                    raise disk_error(
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


