"""Verify a prepared data root: every listed id has its image and mask, both decode, sizes match
under vocseg's one reading of the data (`vocseg.data.images`: images as a viewer shows them, EXIF
orientation applied; masks as stored), labels are valid, and split sizes are the known ones (or the
demo dataset's own).

The same pair check runs before training and evaluation (`vocseg.data.precheck`), so what
`prepare --check` passes is what the loader (`vocseg.data.loading`) can read.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vocseg.data.dataset import ID_MASKS, MASKS, OWN_DIR, DatasetSpec, colour_lookup
from vocseg.data.demo import demo_split_sizes
from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex, draft_decode, mask_problem, read_mask
from vocseg.data.lists import read_id_list
from vocseg.data.voc import CLASSES, IGNORE_INDEX, NUM_CLASSES, SPLIT_SIZES, SPLITS_SUBDIR, VOC_SUBDIR
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

    dataset: str = ""  # what was found (`DatasetSpec.describe`); "" for VOC
    notes: list[str] = field(default_factory=list)  # how the split is made, where vocseg writes


@dataclass(frozen=True)
class PairResult:
    problem: str | None = None  # why the pair cannot train (one line naming the file)
    warning: str | None = None  # the pair loads, but its EXIF tag changes the picture's geometry
    bad_file: str | None = None  # the file the problem is about
    present: tuple[int, ...] = ()  # the class ids with pixels in the mask (empty: no labelled pixel)
    unknown: tuple[tuple[tuple[int, int, int], int], ...] = ()  # colours an RGB export's labelmap does not name, with pixel counts

    @property
    def void(self) -> bool:
        """The mask was read and holds no labelled pixel (every pixel is the ignore index)."""
        return self.problem is None and not self.present


@dataclass(frozen=True)
class MaskRule:
    """How masks are read: ids below `num_classes` (or `ignore_index`); with `colours`, an RGB
    export's masks mapped through its labelmap (24-bit colour code -> class id)."""

    num_classes: int = NUM_CLASSES
    ignore_index: int = IGNORE_INDEX
    colours: tuple[tuple[int, int], ...] | None = None


VOC_RULE = MaskRule()


def _other_files(path: str) -> list[str]:
    """Files beside `path` with its stem and another extension (`x.png` for a missing `x.jpg`)."""
    import glob

    stem = os.path.splitext(path)[0]
    return sorted(os.path.basename(p) for p in glob.glob(glob.escape(stem) + ".*"))


def missing(kind: str, path: str) -> str:
    others = _other_files(path)
    found = f" (found {', '.join(others[:3])}: not a {'JPEG' if kind == 'image' else 'PNG'} name vocseg reads)" if others else ""
    return f"missing {kind} {path}{found}"


def unconverted_source(mask_path: str) -> Path | None:
    """For a class-id mask vocseg derives from an RGB export (`.vocseg/SegmentationClassIds/ID.png`,
    `vocseg.data.dataset.convert_colour_export`) that is not there: the user's mask it comes from
    (`SegmentationClass/ID.*` beside `.vocseg/`), when that exists; else None."""
    path = Path(mask_path)
    if path.parent.name != ID_MASKS or path.parent.parent.name != OWN_DIR:
        return None
    masks = path.parent.parent.parent / MASKS
    if (masks / f"{path.stem}.png").is_file():  # the common name: no listing of the folder per mask
        return masks / f"{path.stem}.png"
    return FolderIndex(masks).find(path.stem, MASK_SUFFIXES)


def mask_fix(mask: str) -> str:
    """The problem line of an RGB mask drawn in VOC palette colours, with its fix."""
    root = Path(mask).parent.parent.parent.parent
    return (
        f"mask {mask} is an RGB colour picture in the VOC palette, not class indices: "
        f"`vocseg prepare --check --convert-rgb-masks --data-root {root}` converts such masks (originals kept)"
    )


def present_classes(mask: object, num_classes: int) -> tuple[int, ...]:
    """Class ids (below num_classes) with at least one pixel in a 2-D id mask."""
    import numpy as np

    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]
    return tuple(int(i) for i in np.nonzero(counts)[0])


def map_colours(mask: object, rule: MaskRule) -> tuple[object, tuple[tuple[tuple[int, int, int], int], ...]]:
    """(id mask, unknown colours with pixel counts) of an RGB mask under a labelmap rule."""
    import numpy as np

    from vocseg.data.rgb_masks import colour_codes

    arr = np.asarray(mask)[..., :3]
    table = dict(rule.colours or ())
    codes, inverse, counts = np.unique(colour_codes(arr), return_inverse=True, return_counts=True)
    ids = np.array([table.get(int(c), rule.ignore_index) for c in codes], dtype=np.uint8)
    unknown = tuple((((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255), int(n)) for c, n in zip(codes, counts) if int(c) not in table)
    return ids[inverse.reshape(arr.shape[:2])], unknown


def check_pair(image_path: str, mask_path: str, rule: MaskRule = VOC_RULE) -> PairResult:
    """Whether an (image, mask) pair trains: both decode, the mask is class indices in
    0..num_classes-1 or 255 (VOC: 0..20; an RGB export: colours of its labelmap), and the mask has
    the size of the image as a viewer shows it."""
    if not os.path.isfile(image_path):
        return PairResult(missing("image", image_path), bad_file=image_path)
    try:
        image_size, orientation = draft_decode(Path(image_path))
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        return PairResult(f"unreadable image {image_path}: {exc}", bad_file=image_path)
    if not os.path.isfile(mask_path):
        source = unconverted_source(mask_path)
        if source is not None:  # the user's RGB mask, of which vocseg has no class-id copy: name that file
            from vocseg.console import command

            return PairResult(f"mask {source} has no class-id copy in {Path(mask_path).parent} yet: "
                              f"`{command('prepare', '--data-root', source.parent.parent)}` writes it, or names the colour or damage that keeps it out",
                              bad_file=str(source))
        return PairResult(missing("mask", mask_path), bad_file=mask_path)
    try:
        mask = read_mask(Path(mask_path))
    except Exception as exc:
        return PairResult(f"unreadable mask {mask_path}: {exc}", bad_file=mask_path)
    unknown: tuple[tuple[tuple[int, int, int], int], ...] = ()
    if rule.colours is not None and mask.ndim == 3 and mask.shape[2] in (3, 4):
        mask, unknown = map_colours(mask, rule)
    elif mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    why = mask_problem(mask, rule.num_classes, rule.ignore_index)
    if why:
        from vocseg.data.rgb_masks import palette_indices

        if rule == VOC_RULE and mask.ndim == 3 and palette_indices(mask) is not None:
            return PairResult(mask_fix(mask_path), bad_file=mask_path)
        return PairResult(f"mask {mask_path} {why}", bad_file=mask_path)
    present = present_classes(mask, rule.num_classes)
    mask_size = (mask.shape[1], mask.shape[0])
    warning = None
    if orientation != 1:
        turn = ORIENTATION_NAMES[orientation]
        warning = (
            f"image {image_path} has EXIF orientation {orientation} (viewers show it {turn}): vocseg reads it so, "
            f"{image_size[0]}x{image_size[1]}; its mask must be drawn on that picture"
            + (" (a square image cannot be checked by size)" if image_size[0] == image_size[1] else "")
        )
    if unknown:
        return PairResult(unknown=unknown, bad_file=mask_path, present=present, warning=warning,
                          problem=f"mask {mask_path} has colours not in the labelmap: " + ", ".join(f"{c} ({n} pixels)" for c, n in unknown[:3]))
    if image_size != mask_size:
        tag = f" as a viewer shows it (EXIF orientation {orientation} turns the stored {image_size[1]}x{image_size[0]})" if orientation in (5, 6, 7, 8) else ""
        return PairResult(
            f"size mismatch: {image_path} is {image_size[0]}x{image_size[1]}{tag}, {mask_path} is {mask_size[0]}x{mask_size[1]}"
            + ("; remove the image's EXIF orientation tag if the mask matches the stored pixels" if tag else ""),
            warning,
            mask_path,
            present,
        )
    return PairResult(None, warning, present=present)


def check_chunk(pairs: list[tuple[str, str]], rule: MaskRule = VOC_RULE) -> list[PairResult]:
    return [check_pair(i, m, rule) for i, m in pairs]


def check_pairs(
    pairs: Sequence[tuple[str, str]],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    rule: MaskRule = VOC_RULE,
) -> dict[tuple[str, str], PairResult]:
    """`check_pair` over distinct pairs, in chunks, in a process pool when `workers` > 1."""
    unique = list(dict.fromkeys(pairs))
    results: dict[tuple[str, str], PairResult] = {}
    chunks = [unique[i : i + CHUNK] for i in range(0, len(unique), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    if workers == 1:
        for chunk in chunks:
            results.update(zip(chunk, check_chunk(chunk, rule)))
            if progress:
                progress(len(chunk))
        return results
    from concurrent.futures.process import BrokenProcessPool

    from vocseg.data.pool import process_pool

    try:
        with process_pool(workers) as pool:
            for chunk, found in zip(chunks, pool.map(functools.partial(check_chunk, rule=rule), chunks)):
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
            if name in AUG_LISTS:
                report.problems.append(f"missing list {lst} (run `vocseg prepare --aug --data-root {root}`)")
            elif vocseg_extracted(root):
                report.problems.append(f"missing list {lst}: the extraction vocseg made is incomplete (run `vocseg prepare --redo --data-root {root}` to extract it again)")
            elif name == "trainval":
                report.warnings.append(f"no list {lst}: `vocseg train` and `eval` do not need it (they read train.txt and val.txt)")
            else:
                report.problems.append(f"missing list {lst}: `vocseg train` and `eval` read it (write one image id per line, or let `vocseg prepare` extract VOC into an empty --data-root)")
            continue
        try:
            ids = read_id_list(lst)
        except VocsegError as exc:
            report.problems.append(exc.message)
            continue
        report.count = len(ids)
        if report.expected is not None and report.count != report.expected:
            what = "a subset?" if report.count < report.expected else "more than the official split: ids added?"
            report.warnings.append(f"{lst.name} has {report.count} ids; VOC's has {report.expected}: {what} (train and eval use the list as it is)")
        if len(set(ids)) != len(ids):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            report.problems.append(f"{lst} lists {len(twice)} ids more than once (e.g. {', '.join(twice[:3])})")
        pairs_of[name] = [(str(image_path(voc, i, index)), str(mask_path(voc, name, i, index))) for i in dict.fromkeys(ids)]

    unique = list(dict.fromkeys(p for pairs in pairs_of.values() for p in pairs))
    if on_total:
        on_total(len(unique))
    results = check_pairs(unique, workers=workers, progress=progress)
    for report in reports:
        fill_split(report, pairs_of.get(report.name, []), results, CLASSES, scored=report.name == "val")
    return CheckReport(root=root, splits=reports)


def vocseg_extracted(root: Path) -> bool:
    """Whether vocseg's own extraction made the VOC tree (its marker is there)."""
    from vocseg.data.extract import EXTRACTED_MARKER

    return (root / VOC_SUBDIR / EXTRACTED_MARKER).is_file()


def fill_split(report: SplitReport, pairs: list[tuple[str, str]], results: dict[tuple[str, str], PairResult], classes: Sequence[str], *, scored: bool) -> None:
    """A split's problems and warnings from its pairs' results: bad pairs (problems), EXIF turns,
    masks with no labelled pixel (a warning each; a problem when every mask of the split is void),
    and, for a split that is scored (val), the classes it does not hold: their IoU is undefined and
    eval excludes them from mIoU."""
    void: list[str] = []
    seen: set[int] = set()
    for pair in pairs:
        report.checked += 1
        result = results[pair]
        if result.problem:
            report.problems.append(result.problem)
        if result.warning:
            report.warnings.append(result.warning)
        if result.void:
            void.append(pair[1])
        seen.update(result.present)
    if void and len(void) == len(pairs):
        report.problems.append(f"every mask of {report.name} ({len(void)}) holds no labelled pixel (all ignore): nothing to train or score; check that the export wrote the class layers, not only the ignore layer")
    else:
        report.warnings += [f"mask {m} holds no labelled pixel (all ignore): it teaches nothing" for m in void]
    if pairs and not report.problems:
        absent = [classes[c] for c in range(len(classes)) if c not in seen]
        if absent:
            role = "eval excludes them from mIoU (their IoU is undefined)" if scored else "training on it never shows them, and an eval on it excludes them"
            report.warnings.append(f"{report.name} holds no pixel of {len(absent)} classes ({', '.join(absent[:8])}{', ...' if len(absent) > 8 else ''}): {role}")


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


def check_own_dataset(
    spec: DatasetSpec,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check an own dataset (`vocseg.data.dataset`) without writing anything: its train/val lists,
    or the seeded split vocseg would write; every pair with the dataset's class count; an RGB
    export's colours against its labelmap (an unknown colour is a problem naming its pixels and files)."""
    from vocseg.data.dataset import planned_split

    assert spec.base is not None
    notes: list[str] = []
    if "train" in spec.lists and "val" in spec.lists:
        splits = {name: read_id_list(path) for name, path in spec.lists.items()}
        notes.append(f"split: {spec.split_note or 'the export' + chr(39) + 's own lists'} ({spec.lists['train']}, {spec.lists['val']})")
    else:
        splits, note = planned_split(spec)
        notes.append(f"split: no train/val lists; `vocseg train` / `config` use {note}, written to {spec.own_dir / 'splits'} (nothing else in {spec.base} is written)")
    if spec.colour_masks:
        notes.append(f"masks: RGB colours mapped through {spec.class_file}; class-id PNGs go to {spec.mask_dir} when you train (originals untouched)")
    rule = MaskRule(
        num_classes=spec.num_classes,
        ignore_index=spec.ignore_index,
        colours=tuple(sorted(colour_lookup(spec).items())) if spec.colour_masks else None,
    )
    index: dict[str, FolderIndex] = {}
    masks = FolderIndex(spec.source_mask_dir)
    reports: list[SplitReport] = []
    pairs_of: dict[str, list[tuple[str, str]]] = {}
    for name, ids in splits.items():
        report = SplitReport(name, len(ids), None)
        reports.append(report)
        if not ids:
            report.problems.append(f"split {name} holds no image id (the dataset needs at least 2 images with masks)")
        pairs_of[name] = [
            (str(image_path(spec.base, i, index)), str(masks.find(i, MASK_SUFFIXES) or spec.source_mask_dir / f"{i}.png")) for i in dict.fromkeys(ids)
        ]
    unique = list(dict.fromkeys(p for pairs in pairs_of.values() for p in pairs))
    if on_total:
        on_total(len(unique))
    results = check_pairs(unique, workers=workers, progress=progress, rule=rule)
    for report in reports:
        fill_split(report, pairs_of[report.name], results, spec.classes, scored=report.name == "val")
    unknown: dict[tuple[int, int, int], list[tuple[int, str]]] = {}
    for (_, mask), result in results.items():
        for colour, count in result.unknown:
            unknown.setdefault(colour, []).append((count, os.path.basename(mask)))
    notes += [
        f"colour {c} is not in {spec.class_file.name if spec.class_file else 'the labelmap'}: {sum(n for n, _ in found)} pixels in "
        f"{len(found)} masks ({', '.join(f for _, f in found[:3])}{', ...' if len(found) > 3 else ''}); add it to the labelmap or repaint it"
        for c, found in unknown.items()
    ]
    return CheckReport(root=spec.base, splits=reports, dataset=spec.describe(), notes=notes)
