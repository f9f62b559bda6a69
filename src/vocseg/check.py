"""Verify a prepared data root: every listed id has its image and mask, sizes match, labels are
valid, and split sizes are the known ones (or the demo dataset's own)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vocseg.demo_data import demo_split_sizes
from vocseg.voc import IGNORE_INDEX, NUM_CLASSES, SPLIT_SIZES, SPLITS_SUBDIR, VOC_SUBDIR

# list name -> folder of its masks
LIST_MASKS: dict[str, str] = {
    "train": "SegmentationClass",
    "val": "SegmentationClass",
    "trainval": "SegmentationClass",
    "aug": "SegmentationClassAug",
    "trainaug": "SegmentationClassAug",
}


@dataclass
class SplitReport:
    name: str
    count: int
    expected: int | None
    checked: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    root: Path
    splits: list[SplitReport]

    @property
    def problems(self) -> list[str]:
        return [p for s in self.splits for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pair(image_path: str, mask_path: str) -> str | None:
    """None if the pair is sound, else what is wrong with it."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(image_path):
        return f"missing image {image_path}"
    if not os.path.isfile(mask_path):
        return f"missing mask {mask_path}"
    try:
        with Image.open(image_path) as im:
            image_size = im.size
            im.verify()
        with Image.open(mask_path) as m:
            mask_size = m.size
            mask = np.asarray(m)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return f"unreadable {image_path if 'image_size' not in locals() else mask_path}: {exc}"
    if image_size != mask_size:
        return f"size mismatch: {image_path} is {image_size}, {mask_path} is {mask_size}"
    if mask.ndim != 2:
        return f"mask {mask_path} is not single-channel (shape {mask.shape})"
    bad = np.unique(mask[(mask >= NUM_CLASSES) & (mask != IGNORE_INDEX)])
    if bad.size:
        return f"mask {mask_path} has labels {bad[:5].tolist()} outside 0..{NUM_CLASSES - 1} and {IGNORE_INDEX}"
    return None


def _mask_path(voc: Path, split: str, image_id: str) -> Path:
    """trainaug mixes SBD ids (SegmentationClassAug) with VOC train ids SBD lacks (SegmentationClass)."""
    path = voc / LIST_MASKS[split] / f"{image_id}.png"
    if split == "trainaug" and not path.is_file():
        return voc / "SegmentationClass" / f"{image_id}.png"
    return path


def _check_chunk(pairs: list[tuple[str, str]]) -> list[str]:
    return [p for p in (check_pair(i, m) for i, m in pairs) if p]


def expected_sizes(root: Path) -> dict[str, int]:
    return demo_split_sizes(root) or dict(SPLIT_SIZES)


def check_data_root(
    root: Path,
    *,
    aug: bool,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check the VOC lists (and with `aug`, the SBD ones). Pixels are read in parallel."""
    voc = root / VOC_SUBDIR
    expected = expected_sizes(root)
    names = list(LIST_MASKS) if aug else ["train", "val", "trainval"]
    reports: list[SplitReport] = []
    jobs: list[tuple[SplitReport, list[tuple[str, str]]]] = []
    for name in names:
        lst = voc / SPLITS_SUBDIR / f"{name}.txt"
        if not lst.is_file():
            report = SplitReport(name, 0, expected.get(name))
            report.problems.append(f"missing list {lst}")
            reports.append(report)
            continue
        ids = [line.strip() for line in lst.read_text().splitlines() if line.strip()]
        report = SplitReport(name, len(ids), expected.get(name))
        if report.expected is not None and report.count != report.expected:
            report.problems.append(f"{lst.name} has {report.count} ids, expected {report.expected}")
        if len(set(ids)) != len(ids):
            report.problems.append(f"{lst.name} lists {len(ids) - len(set(ids))} ids twice")
        reports.append(report)
        if name == "trainval":  # its pairs are train's and val's
            continue
        jobs.append((report, [(str(voc / "JPEGImages" / f"{i}.jpg"), str(_mask_path(voc, name, i))) for i in ids]))
    workers = max(1, workers or os.cpu_count() or 1)
    for report, pairs in jobs:
        chunks = [pairs[i : i + 64] for i in range(0, len(pairs), 64)]
        if workers == 1 or len(chunks) == 1:
            results = map(_check_chunk, chunks)
            for chunk, found in zip(chunks, results):
                report.problems.extend(found)
                report.checked += len(chunk)
                if progress:
                    progress(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for chunk, found in zip(chunks, pool.map(_check_chunk, chunks)):
                    report.problems.extend(found)
                    report.checked += len(chunk)
                    if progress:
                        progress(len(chunk))
    return CheckReport(root=root, splits=reports)
