"""Get the VOC 2012 and SBD archives into a data root: download (or --from-dir), verify, extract.

Downloads resume where they stopped (HTTP Range), retry with backoff, and are kept in a cache
folder under a name that says what they are: `<name>` for the official archive (md5 as published),
`<name>.md5-<md5>` for any other copy (a mirror's repack, a test archive), which is used only when
the user names that md5 with `--md5 NAME=MD5`. A verified archive is never downloaded again.
The download itself is `vocseg.data.download`; the extraction `vocseg.data.extract`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from vocseg.data.download import (
    PartState,
    SourceFailed,
    bytes_progress,
    disk_error,
    download_from,
    stamp_path,
    verify_file,
    waiting_lock,
    write_stamp,
)
from vocseg.data.extract import extract_archive
from vocseg.data.voc import (
    ARCHIVES,
    VOC_ARCHIVE,
    Archive,
)
from vocseg.errors import VocsegError

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
    """The mirror first (a base URL, or the archive's full URL), then the known sources, HTTPS ones
    first (a plain-http download can be altered on the way; the md5 check then refuses it)."""
    urls: list[str] = []
    if mirror:
        urls.append(mirror if mirror.rstrip("/").endswith("/" + archive.name) else mirror.rstrip("/") + "/" + archive.name)
    known = sorted(archive.urls, key=lambda u: not u.startswith("https://"))  # stable: the listed order otherwise
    return urls + [u for u in known if u not in urls]


def official_source_hint(archive: Archive) -> str:
    """How to get the official archive: HTTPS sources first, then the rest, then --from-dir."""
    https = [u for u in archive.urls if u.startswith("https://")]
    where = f"over HTTPS from {https[0]}" if https else f"from {archive.urls[0]}"
    return (
        f"Get the official {archive.name} {where} (or a copy you trust), check that `md5sum` prints {archive.md5}, "
        f"and pass its folder with --from-dir DIR."
    )


def md5_mismatch_error(archive: Archive, source: str, got: str, expected: str, kept: Path | None) -> VocsegError:
    """The one-line refusal of an archive whose md5 is not the expected one.

    It names no `--md5` value to paste: an archive that differs from the official one may be
    damaged or altered (the official URLs are plain http), and extraction of a crafted archive is
    exactly what an attacker wants; `--md5` is for archives the user made or checked themselves.
    """
    official = expected == archive.md5
    what = "the official archive's" if official else "the md5 given with --md5"
    keep = f" It is kept as {kept}, unused." if kept is not None else ""
    return VocsegError(
        f"{archive.name} from {source} has md5 {got}, not {what} ({expected}): a truncated or damaged download, "
        f"another version, or a tampered copy; it was not extracted.{keep}",
        official_source_hint(archive),
    )


def cached_path(cache: Path, archive: Archive, md5: str) -> Path:
    """Where the archive with this md5 lives in the cache (the official one under its own name)."""
    return cache / (archive.name if md5 == archive.md5 else f"{archive.name}.md5-{md5}")



def download_archive(archive: Archive, md5: str, cache: Path, mirror: str | None, console: Console) -> Path:
    """Download into the cache (resuming a kept part) until a copy with `md5` is there; return it."""
    part = PartState(cache / f"{archive.name}.part", hashlib.md5())
    problems: list[str] = []
    wrong: list[tuple[str, str, Path]] = []
    queue = [(url, True) for url in candidate_urls(archive, mirror)]
    while queue:
        url, may_retry = queue.pop(0)
        with bytes_progress(console) as progress:
            task = progress.add_task(f"download {archive.name}", total=None)
            try:
                download_from(url, part, progress, task, cache)
            except SourceFailed as exc:
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
        from vocseg.files import owned_replace

        owned_replace(part.path, landed)
        write_stamp(landed, got)
        part.restart()
        if got == md5:
            return landed
        wrong.append((url, got, landed))
        console.print(f"  {url}: md5 {got}, expected {md5}; trying the next source")
    kept = part.size()
    if wrong:
        url, got, landed = wrong[-1]
        raise md5_mismatch_error(archive, url, got, md5, landed)
    resume = f"re-run to resume ({kept:,} bytes kept in {part.path})" if kept else "re-run later"
    raise VocsegError(
        f"Could not download {archive.name}: " + "; ".join(problems) + ".",
        f"Check the network and {resume}; or pass --mirror URL, or download {archive.name} yourself and pass --from-dir DIR.",
    )


def locate_archive(archive: Archive, md5: str, *, cache: Path, from_dir: Path | None, mirror: str | None, force: bool, console: Console) -> Path:
    """A local copy of the archive whose md5 is `md5`: from --from-dir, the cache, or a download."""
    if from_dir is not None:
        path = from_dir.expanduser() / archive.name
        if not path.is_file():
            raise VocsegError(f"{path} does not exist.", f"Put {archive.name} in {from_dir} (or drop --from-dir to download it).")
        got = verify_file(path, console, stamps=False)  # the user's folder: no stamp files there
        if got != md5:
            raise md5_mismatch_error(archive, str(path), got, md5, None)
        return path
    from vocseg.files import move_aside, owned_delete, owned_mkdir

    try:
        owned_mkdir(cache, role="cache")
    except OSError as exc:
        raise disk_error(exc, cache, "Pass --cache-dir DIR with a writable folder.") from None
    with _cache_lock(cache, archive, console):
        path = cached_path(cache, archive, md5)
        if path.is_file():
            if force:
                owned_delete(stamp_path(path))  # --redo: hash it again
            got = verify_file(path, console, stamps=True)
            if got == md5:
                console.print(f"{archive.name}: verified copy in {cache}")
                return path
            # Changed since it was stored: keep it under the name of what it now is, download again.
            move_aside(path, cached_path(cache, archive, got))
            write_stamp(cached_path(cache, archive, got), got)
        return download_archive(archive, md5, cache, mirror, console)


@contextmanager
def _cache_lock(cache: Path, archive: Archive, console: Console) -> Iterator[None]:
    """One process at a time downloads an archive into a cache (they would append to one part)."""
    with waiting_lock(cache / f".{archive.name}.lock", f"{archive.name}: another vocseg is fetching it into {cache}; waiting for it", console):
        yield


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
