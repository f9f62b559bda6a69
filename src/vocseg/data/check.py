"""Verify a prepared data root: every listed id has its image and mask, both decode, sizes match
under vocseg's one reading of the data (`vocseg.data.images`: images as a viewer shows them, EXIF
orientation applied; masks as stored), labels are valid, and split sizes are the known ones (or the
demo dataset's own).

The same pair check runs before training and evaluation (`vocseg.data.precheck`), so what
`prepare --check` passes is what the loader (`vocseg.data.loading`) can read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vocseg.data.demo import demo_split_sizes
from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex, draft_decode, mask_problem, read_mask
from vocseg.data.lists import read_id_list
from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES, SPLIT_SIZES, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError

FINE_MASKS = "SegmentationClass"
SBD_MASKS = "SegmentationClassAug"
IMAGES = "JPEGImages"
VOC_LISTS = ("train", "val", "trainval")
AUG_LISTS = ("aug", "trainaug")
CHUNK = 64  # pairs per task: large enough that process overhead does not matter
ORIENTATION_NAMES = {
    2: "mirrored", 3: "turned 180 degrees", 4: "flipped upside down", 5: "transposed",
    6: "turned 90 degrees clockwise", 7: "transversed", 8: "turned 90 degrees counter-clockwise",
}  # fmt: skip


@dataclass
class SplitReport:
    name: str
    count: int
    expected: int | None
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    root: Path
    splits: list[SplitReport]

    @property
    def problems(self) -> list[str]:
        """Every distinct problem once (a broken pair shows in each list that holds it)."""
        return list(dict.fromkeys(p for s in self.splits for p in s.problems))

    @property
    def warnings(self) -> list[str]:
        """Every distinct warning once: pairs that load but may not mean what the user thinks."""
        return list(dict.fromkeys(w for s in self.splits for w in s.warnings))

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class PairResult:
    problem: str | None = None  # why the pair cannot train (one line naming the file)
    warning: str | None = None  # the pair loads, but its EXIF tag changes the picture's geometry
    bad_file: str | None = None  # the file the problem is about


def _other_files(path: str) -> list[str]:
    """Files beside `path` with its stem and another extension (`x.png` for a missing `x.jpg`)."""
    import glob

    stem = os.path.splitext(path)[0]
    return sorted(os.path.basename(p) for p in glob.glob(glob.escape(stem) + ".*"))


def missing(kind: str, path: str) -> str:
    others = _other_files(path)
    found = f" (found {', '.join(others[:3])}: not a {'JPEG' if kind == 'image' else 'PNG'} name vocseg reads)" if others else ""
    return f"missing {kind} {path}{found}"


def mask_fix(mask: str) -> str:
    """The problem line of an RGB mask drawn in VOC palette colours, with its fix."""
    root = Path(mask).parent.parent.parent.parent
    return (
        f"mask {mask} is an RGB colour picture in the VOC palette, not class indices: "
        f"`vocseg prepare --check --convert-rgb-masks --data-root {root}` converts such masks (originals kept)"
    )


def check_pair(image_path: str, mask_path: str) -> PairResult:
    """Whether an (image, mask) pair trains: both decode, the mask is class indices in
    0..20 or 255, and the mask has the size of the image as a viewer shows it."""
    if not os.path.isfile(image_path):
        return PairResult(missing("image", image_path), bad_file=image_path)
    try:
        image_size, orientation = draft_decode(Path(image_path))
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        return PairResult(f"unreadable image {image_path}: {exc}", bad_file=image_path)
    if not os.path.isfile(mask_path):
        return PairResult(missing("mask", mask_path), bad_file=mask_path)
    try:
        mask = read_mask(Path(mask_path))
    except Exception as exc:
        return PairResult(f"unreadable mask {mask_path}: {exc}", bad_file=mask_path)
    why = mask_problem(mask, NUM_CLASSES, IGNORE_INDEX)
    if why:
        from vocseg.data.rgb_masks import palette_indices

        if mask.ndim == 3 and palette_indices(mask) is not None:
            return PairResult(mask_fix(mask_path), bad_file=mask_path)
        return PairResult(f"mask {mask_path} {why}", bad_file=mask_path)
    mask_size = (mask.shape[1], mask.shape[0])
    warning = None
    if orientation != 1:
        turn = ORIENTATION_NAMES[orientation]
        warning = (
            f"image {image_path} has EXIF orientation {orientation} (viewers show it {turn}): vocseg reads it so, "
            f"{image_size[0]}x{image_size[1]}; its mask must be drawn on that picture"
            + (" (a square image cannot be checked by size)" if image_size[0] == image_size[1] else "")
        )
    if image_size != mask_size:
        tag = f" as a viewer shows it (EXIF orientation {orientation} turns the stored {image_size[1]}x{image_size[0]})" if orientation in (5, 6, 7, 8) else ""
        return PairResult(
            f"size mismatch: {image_path} is {image_size[0]}x{image_size[1]}{tag}, {mask_path} is {mask_size[0]}x{mask_size[1]}"
            + ("; remove the image's EXIF orientation tag if the mask matches the stored pixels" if tag else ""),
            warning,
            mask_path,
        )
    return PairResult(None, warning)


def check_chunk(pairs: list[tuple[str, str]]) -> list[PairResult]:
    return [check_pair(i, m) for i, m in pairs]


def check_pairs(
    pairs: Sequence[tuple[str, str]],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[tuple[str, str], PairResult]:
    """`check_pair` over distinct pairs, in chunks, in a process pool when `workers` > 1."""
    unique = list(dict.fromkeys(pairs))
    results: dict[tuple[str, str], PairResult] = {}
    chunks = [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    if workers == 1:
        for chunk in chunks:
            results.update(zip(chunk, check_chunk(chunk)))
            if progress:
                progress(len(chunk))
        return results
    from concurrent.futures.process import BrokenProcessPool

    from vocseg.data.pool import process_pool

    try:
        with process_pool(workers) as pool:
            for chunk, found in zip(chunks, pool.map(check_chunk, chunks)):
                results.update(zip(chunk, found))
                if progress:
                    progress(len(chunk))
    except BrokenProcessPool:
        raise VocsegError(
            "A checking process died (out of memory, or killed).", "Re-run with fewer processes: --workers 1."
        ) from None
    return results


def mask_path(voc: Path, split: str, image_id: str, index: dict[str, FolderIndex] | None = None) -> Path:
    """The label an id is trained or evaluated with: fine VOC where it has one, SBD otherwise."""
    index = index if index is not None else {}
    fine_index = index.setdefault(FINE_MASKS, FolderIndex(voc / FINE_MASKS))
    fine = fine_index.find(image_id, MASK_SUFFIXES)
    expected_fine = voc / FINE_MASKS / f"{image_id}.png"
    if split in VOC_LISTS:
        return fine or expected_fine
    if split == "trainaug" and fine is not None:
        return fine
    sbd_index = index.setdefault(SBD_MASKS, FolderIndex(voc / SBD_MASKS))
    return sbd_index.find(image_id, MASK_SUFFIXES) or voc / SBD_MASKS / f"{image_id}.png"


def image_path(voc: Path, image_id: str, index: dict[str, FolderIndex] | None = None) -> Path:
    """`JPEGImages/<id>.jpg`, or the `.JPG` / `.jpeg` spelling that exists."""
    index = index if index is not None else {}
    found = index.setdefault(IMAGES, FolderIndex(voc / IMAGES)).find(image_id, IMAGE_SUFFIXES)
    return found or voc / IMAGES / f"{image_id}.jpg"


def expected_sizes(root: Path) -> dict[str, int]:
    return demo_split_sizes(root) or dict(SPLIT_SIZES)


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
    index: dict[str, FolderIndex] = {}
    for name in VOC_LISTS + (AUG_LISTS if aug else ()):
        lst = voc / SPLITS_SUBDIR / f"{name}.txt"
        report = SplitReport(name, 0, expected.get(name))
        reports.append(report)
        if not lst.is_file():
            fix = "vocseg prepare --aug" if name in AUG_LISTS else "vocseg prepare --redo"
            report.problems.append(f"missing list {lst} (run `{fix}`)")
            continue
        try:
            ids = read_id_list(lst)
        except VocsegError as exc:
            report.problems.append(exc.message)
            continue
        report.count = len(ids)
        if report.expected is not None and report.count != report.expected:
            report.problems.append(f"{lst} has {report.count} ids, expected {report.expected}")
        if len(set(ids)) != len(ids):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            report.problems.append(f"{lst} lists {len(twice)} ids more than once (e.g. {', '.join(twice[:3])})")
        pairs_of[name] = [(str(image_path(voc, i, index)), str(mask_path(voc, name, i, index))) for i in dict.fromkeys(ids)]

    unique = list(dict.fromkeys(p for pairs in pairs_of.values() for p in pairs))
    if on_total:
        on_total(len(unique))
    results = check_pairs(unique, workers=workers, progress=progress)
    for report in reports:
        for pair in pairs_of.get(report.name, []):
            report.checked += 1
            result = results[pair]
            if result.problem:
                report.problems.append(result.problem)
            if result.warning:
                report.warnings.append(result.warning)
    return CheckReport(root=root, splits=reports)


def listed_masks(root: Path) -> list[Path]:
    """Every mask file the data root's lists name (those that exist), each once."""
    voc = root / VOC_SUBDIR
    index: dict[str, FolderIndex] = {}
    found: dict[Path, None] = {}
    for name in VOC_LISTS + AUG_LISTS:
        lst = voc / SPLITS_SUBDIR / f"{name}.txt"
        if lst.is_file():
            for image_id in read_id_list(lst):
                path = mask_path(voc, name, image_id, index)
                if path.is_file():
                    found[path] = None
    return list(found)
