"""Verify a prepared data root: every listed id has its image and mask, both decode, sizes match,
labels are valid, and split sizes are the known ones (or the demo dataset's own)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vocseg.data.demo import demo_split_sizes
from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES, SPLIT_SIZES, SPLITS_SUBDIR, VOC_SUBDIR

FINE_MASKS = "SegmentationClass"
SBD_MASKS = "SegmentationClassAug"
VOC_LISTS = ("train", "val", "trainval")
AUG_LISTS = ("aug", "trainaug")
CHUNK = 64  # pairs per task: large enough that process overhead does not matter


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
        """Every distinct problem once (a broken pair shows in each list that holds it)."""
        return list(dict.fromkeys(p for s in self.splits for p in s.problems))

    @property
    def ok(self) -> bool:
        return not self.problems


def _image_problem(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(problem, size) of a JPEG; decoding at 1/8 scale still finds truncated or corrupt files."""
    from PIL import Image

    if not os.path.isfile(path):
        return f"missing image {path}", None
    try:
        with Image.open(path) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        return f"unreadable image {path}: {exc}", None
    return None, size


def _mask_problem(path: str) -> tuple[str | None, tuple[int, int] | None]:
    from PIL import Image

    if not os.path.isfile(path):
        return f"missing mask {path}", None
    try:
        with Image.open(path) as m:
            size = m.size
            mask = np.asarray(m)
    except Exception as exc:
        return f"unreadable mask {path}: {exc}", None
    if mask.ndim != 2:
        return f"mask {path} is not single-channel (shape {mask.shape})", size
    bad = np.unique(mask[(mask >= NUM_CLASSES) & (mask != IGNORE_INDEX)])
    if bad.size:
        return f"mask {path} has labels {bad[:5].tolist()} outside 0..{NUM_CLASSES - 1} and {IGNORE_INDEX}", size
    return None, size


def check_pair(image_path: str, mask_path: str) -> str | None:
    """None if the pair is sound, else what is wrong with it (one line, naming the file)."""
    image_problem, image_size = _image_problem(image_path)
    if image_problem:
        return image_problem
    mask_problem, mask_size = _mask_problem(mask_path)
    if mask_problem:
        return mask_problem
    if image_size != mask_size and image_size and mask_size:
        return f"size mismatch: {image_path} is {image_size[0]}x{image_size[1]}, {mask_path} is {mask_size[0]}x{mask_size[1]}"
    return None


def _check_chunk(pairs: list[tuple[str, str]]) -> list[str | None]:
    return [check_pair(i, m) for i, m in pairs]


def mask_path(voc: Path, split: str, image_id: str) -> Path:
    """The label an id is trained or evaluated with: fine VOC where it has one, SBD otherwise."""
    fine = voc / FINE_MASKS / f"{image_id}.png"
    if split in VOC_LISTS:
        return fine
    if split == "trainaug" and fine.is_file():
        return fine
    return voc / SBD_MASKS / f"{image_id}.png"


def expected_sizes(root: Path) -> dict[str, int]:
    return demo_split_sizes(root) or dict(SPLIT_SIZES)


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def check_data_root(
    root: Path,
    *,
    aug: bool,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check the VOC lists (and with `aug`, the SBD ones). Each distinct pair is read once, in parallel."""
    voc = root / VOC_SUBDIR
    expected = expected_sizes(root)
    reports: list[SplitReport] = []
    pairs_of: dict[str, list[tuple[str, str]]] = {}
    for name in VOC_LISTS + (AUG_LISTS if aug else ()):
        lst = voc / SPLITS_SUBDIR / f"{name}.txt"
        report = SplitReport(name, 0, expected.get(name))
        reports.append(report)
        if not lst.is_file():
            fix = "vocseg prepare --aug" if name in AUG_LISTS else "vocseg prepare --force"
            report.problems.append(f"missing list {lst} (run `{fix}`)")
            continue
        ids = read_list(lst)
        report.count = len(ids)
        if report.expected is not None and report.count != report.expected:
            report.problems.append(f"{lst} has {report.count} ids, expected {report.expected}")
        if len(set(ids)) != len(ids):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            report.problems.append(f"{lst} lists {len(twice)} ids more than once (e.g. {', '.join(twice[:3])})")
        pairs_of[name] = [(str(voc / "JPEGImages" / f"{i}.jpg"), str(mask_path(voc, name, i))) for i in dict.fromkeys(ids)]

    unique = list(dict.fromkeys(p for pairs in pairs_of.values() for p in pairs))
    if on_total:
        on_total(len(unique))
    results: dict[tuple[str, str], str | None] = {}
    chunks = [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    if workers == 1:
        for chunk in chunks:
            results.update(zip(chunk, _check_chunk(chunk)))
            if progress:
                progress(len(chunk))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk, found in zip(chunks, pool.map(_check_chunk, chunks)):
                results.update(zip(chunk, found))
                if progress:
                    progress(len(chunk))
    for report in reports:
        for pair in pairs_of.get(report.name, []):
            report.checked += 1
            if problem := results[pair]:
                report.problems.append(problem)
    return CheckReport(root=root, splits=reports)
