"""Where `vocseg predict` writes, under which names, and never over a file vocseg did not write.

What vocseg wrote there, and nobody changed since, is what the record of `vocseg.files` proves
(`previous_outputs`); only those may be replaced. An output name taken by
anything else, or by one of the batch's inputs, is not used: the next free stem is.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vocseg.inference.inputs import real_path

REPORT_NAME = "predictions.json"
WRITTEN_BY = "vocseg predict"
MAX_STEM_BYTES = 180  # + "_overlay.png" + the atomic write's ".NAME.PID.tmp" stays below 255 bytes


def short_stem(stem: str) -> str:
    """`stem`, or (longer than MAX_STEM_BYTES in UTF-8) its start + `~` + 8 hex digits of its sha1."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha1(raw).hexdigest()[:8]
    head = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def output_stems(paths: list[Path]) -> list[str]:
    """Predictable, distinct output names: the file stem; `<parent>_<stem>` where stems collide; then `-N`."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems, used = [], set()
    for p in paths:
        stem = short_stem(p.stem if counts[p.stem] == 1 else f"{p.parent.name or 'root'}_{p.stem}")
        candidate, n = stem, 2
        while candidate in used:
            candidate = f"{stem}-{n}"
            n += 1
        used.add(candidate)
        stems.append(candidate)
    return stems


class OutputFolder:
    """The output folder and what vocseg may write there: names it wrote before (its
    `predictions.json`), never a file it did not write, never one of this batch's inputs."""

    def __init__(self, folder: Path, inputs: Iterable[Path]) -> None:
        self.folder = folder
        self.previous = previous_outputs(folder)
        self.inputs = {real_path(p) for p in inputs}
        self.claimed: set[str] = set()

    def is_vocseg_output(self, path: Path) -> bool:
        return real_path(path.parent) == real_path(self.folder) and path.name in self.previous

    def claim(self, stem: str, suffixes: tuple[str, ...]) -> tuple[str, str | None]:
        """A stem whose output names are all free to write, and a note when it is not `stem`."""
        candidate, n = stem, 2
        while any(self._blocked(f"{candidate}{suffix}") for suffix in suffixes):
            candidate = f"{stem}-{n}"
            n += 1
        self.claimed.update(f"{candidate}{suffix}" for suffix in suffixes)
        if candidate == stem:
            return stem, None
        taken = next(f"{stem}{s}" for s in suffixes if self._blocked(f"{stem}{s}"))
        return candidate, f"{taken} exists and is not vocseg's: written as {candidate}{suffixes[0]} instead"

    def _blocked(self, name: str) -> bool:
        path = self.folder / name
        if name in self.claimed or real_path(path) in self.inputs:
            return True
        return os.path.lexists(path) and name not in self.previous


def previous_outputs(folder: Path) -> set[str]:
    """Names of the files vocseg wrote into `folder` before and nobody changed since (the record of
    `vocseg.files`); a predictions.json of the user's (or a link, a FIFO there) is refused (one
    line) rather than overwritten."""
    from vocseg.files import check_may_write, recorded

    check_may_write(folder / REPORT_NAME, option="-o", force_option=None)
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    return {name for name in names if recorded(folder / name)}


def save_png_atomic(image: Any, path: Path) -> None:
    """A PIL image as PNG, written whole or not at all."""
    from vocseg.files import owned_write_bytes

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    owned_write_bytes(path, buffer.getvalue())

