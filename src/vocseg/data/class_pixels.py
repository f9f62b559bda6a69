"""Pixels per class in a training split, and class weights from them (`--class-weight auto`).

`class_pixel_counts` reads every mask the lists name once (over all cores) and caches the counts
beside the pre-check's cache (`VOCdevkit/VOC2012/.vocseg-cache/`), keyed by the list and every
listed file's size and modification time (`vocseg.data.precheck.files_stamp`): a second run reads
no mask. A read-only data root is counted every time.

`median_frequency_weights` is median-frequency balancing (Eigen & Fergus, "Predicting Depth,
Surface Normals and Semantic Labels with a Common Multi-Scale Convolutional Architecture",
ICCV 2015, section 4.3): w_c = median(freq) / freq_c, where freq_c is the pixels of class c
divided by the labelled pixels of the images in which c is present.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES
from vocseg.errors import VocsegError

if TYPE_CHECKING:
    from vocseg.data.precheck import ListSpec

CACHE_VERSION = 1
CHUNK = 64  # masks per task in the process pool


@dataclass(frozen=True)
class ClassPixels:
    """Per-class counts over a set of masks (ignore-index pixels excluded).

    pixels[c]: pixels of class c; present_pixels[c]: labelled pixels of the images in which c
    occurs; images[c]: images in which c occurs; masks: masks read.
    """

    pixels: tuple[int, ...]
    present_pixels: tuple[int, ...]
    images: tuple[int, ...]
    masks: int

    def shares(self) -> tuple[float, ...]:
        """Each class's share of all labelled pixels (0..1)."""
        total = sum(self.pixels)
        return tuple(p / total if total else 0.0 for p in self.pixels)


def count_mask(mask: np.ndarray, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixels per class id 0..num_classes-1 of one mask (H x W class ids); other values are not counted."""
    values = mask[(mask != ignore_index) & (mask < num_classes)]
    return np.bincount(values.ravel().astype(np.int64), minlength=num_classes)[:num_classes]


def _count_chunk(args: tuple[list[str], int]) -> list[list[int]]:
    from vocseg.data.images import read_mask

    paths, num_classes = args
    return [count_mask(read_mask(Path(p)), num_classes).tolist() for p in paths]


def _sum_counts(per_mask: Iterable[Sequence[int]], num_classes: int) -> ClassPixels:
    pixels = np.zeros(num_classes, np.int64)
    present = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    masks = 0
    for counts in per_mask:
        row = np.asarray(counts, np.int64)
        here = row > 0
        pixels += row
        present[here] += int(row.sum())
        images[here] += 1
        masks += 1
    return ClassPixels(tuple(map(int, pixels)), tuple(map(int, present)), tuple(map(int, images)), masks)


def class_pixel_counts(specs: Sequence[ListSpec], *, num_classes: int = NUM_CLASSES, workers: int | None = None, use_cache: bool = True) -> ClassPixels:
    """Per-class pixel counts over the masks of the lists (`vocseg.data.precheck.ListSpec`), each
    distinct mask once; cached per list beside the pre-check cache."""
    from vocseg.data.dataset import OWN_DIR
    from vocseg.data.images import FolderIndex
    from vocseg.data.precheck import CACHE_DIR, files_stamp, list_pairs

    indexes: dict[Path, FolderIndex] = {}
    per_mask: dict[str, list[int]] = {}
    for spec in specs:
        pairs = list_pairs(spec, indexes)
        key = json.dumps([CACHE_VERSION, num_classes, str(spec.list_path), files_stamp(pairs)])
        name = f"class-pixels-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
        own = spec.image_dir.parent / OWN_DIR  # an own dataset: vocseg's folder, never beside the user's files
        cache = own / "precheck" / name if own.is_dir() else spec.image_dir.parent / CACHE_DIR / name
        cached = _read(cache) if use_cache else None
        masks = [m for _, m in pairs]
        if cached is not None and len(cached) == len(masks):
            per_mask.update(zip(masks, cached))
            continue
        todo = [m for m in masks if m not in per_mask]
        counts = _per_mask_counts(todo, num_classes, workers)
        per_mask.update(zip(todo, counts))
        if use_cache:
            _write(cache, [per_mask[m] for m in masks])
    return _sum_counts(per_mask.values(), num_classes)


def _per_mask_counts(mask_paths: Sequence[str], num_classes: int, workers: int | None) -> list[list[int]]:
    chunks = [(list(mask_paths[i : i + CHUNK]), num_classes) for i in range(0, len(mask_paths), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    if workers == 1:
        return [c for chunk in chunks for c in _count_chunk(chunk)]
    from vocseg.data.pool import process_pool

    with process_pool(workers) as pool:
        return [c for part in pool.map(_count_chunk, chunks) for c in part]


def _read(path: Path) -> list[list[int]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) and all(isinstance(row, list) for row in data) else None


def _write(path: Path, rows: list[list[int]]) -> None:
    from vocseg.files import owned_write_text

    try:
        owned_write_text(path, json.dumps(rows, separators=(",", ":")) + "\n")
    except (OSError, VocsegError):
        pass  # a read-only data root, or a file there that vocseg did not write: counted again next time


def median_frequency_weights(counts: ClassPixels, digits: int = 4) -> tuple[float, ...]:
    """w_c = median(freq) / freq_c over the classes present (see the module docstring); a class
    absent from the split gets 0 (it has no pixel to weigh). Rounded to `digits` decimals, so the
    weights written into a config and recipe.json read back exactly."""
    freq = [p / t if t else 0.0 for p, t in zip(counts.pixels, counts.present_pixels)]
    present = [f for f in freq if f > 0]
    if not present:
        from vocseg.errors import VocsegError

        raise VocsegError("--class-weight auto: the training split has no labelled pixel.", "Check the masks: `vocseg prepare --check`.")
    median = float(np.median(present))
    return tuple(round(median / f, digits) if f > 0 else 0.0 for f in freq)
