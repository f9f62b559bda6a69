"""The check `vocseg train`, `resume` and `eval` run before MMEngine's Runner is built.

It reads the split lists the run will use and checks every (image, mask) pair with the same
function as `vocseg prepare --check` (`vocseg.data.check.check_pair`): both exist (`.JPG` /
`.jpeg` found too), both decode, the mask is single-channel class indices in 0..20 or 255, and its
size is the image's as a viewer shows it (EXIF orientation applied, as the loader reads it). One
bad pair refuses the run with one line naming the first bad files and `vocseg prepare --check`.

Cost: one reduced-scale JPEG decode and one PNG decode per pair, over all cores (measured in
benchmarks/precheck_cost.py; see docs/prepare.md). A passing result is cached per list, keyed by
the list file's path, size and modification time and by the modification times of the image and
mask folders (adding, removing or renaming a file there changes them), in
`VOCdevkit/VOC2012/.vocseg-cache/` under the data root; a read-only data root is checked every
time. A file rewritten in place after the check is still caught by the loader
(`vocseg.data.loading`), in one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocseg.data.check import MaskRule, PairResult, SplitReport, check_pairs, fill_split
from vocseg.data.dataset import OWN_DIR
from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex
from vocseg.data.lists import read_id_list
from vocseg.data.voc import CLASSES, NUM_CLASSES
from vocseg.errors import VocsegError

CACHE_DIR = ".vocseg-cache"
CACHE_VERSION = 2  # bump when check_pair learns something new: old passes are then re-checked (2: void masks, absent classes)
SHOWN = 3  # further bad files named (by file name) after the first problem in the one-line refusal


@dataclass(frozen=True)
class ListSpec:
    """One list a dataset reads: `<image_dir>/<id>.jpg` with `<mask_dir>/<id>.png` for each id."""

    list_path: Path
    image_dir: Path
    mask_dir: Path
    num_classes: int = NUM_CLASSES  # mask ids 0..num_classes-1 (and the ignore index) are valid
    classes: tuple[str, ...] = ()  # the class names (own datasets: to name the classes a list lacks)


@dataclass
class PrecheckResult:
    pairs: int = 0  # distinct pairs the lists name
    checked: int = 0  # pairs read now (0 when every list was cached)
    warnings: list[str] = field(default_factory=list)


def _join(root: str, path: str) -> Path:
    return Path(path) if not root or os.path.isabs(path) else Path(root) / path


def specs_from_dataset(dataset: Mapping[str, Any]) -> list[ListSpec]:
    """The lists of an MMSeg dataset config (ConcatDataset and wrappers such as
    VocsegSeededDataset or RepeatDataset walked), joined as mmengine's BaseDataset joins them:
    `ann_file` and the `data_prefix` folders under `data_root` unless absolute; a relative
    `data_root` is taken from the current folder. Datasets without a list or labels are skipped."""
    if "datasets" in dataset:
        return [s for d in dataset["datasets"] for s in specs_from_dataset(d)]
    if isinstance(dataset.get("dataset"), Mapping):
        return specs_from_dataset(dataset["dataset"])
    ann = dataset.get("ann_file") or ""
    prefix = dataset.get("data_prefix") or {}
    if not ann or not prefix.get("seg_map_path"):
        return []
    root = str(dataset.get("data_root") or "")
    classes = tuple(str(c) for c in ((dataset.get("metainfo") or {}).get("classes") or ()))
    return [
        ListSpec(
            _join(root, str(ann)).absolute(),
            _join(root, str(prefix.get("img_path", ""))).absolute(),
            _join(root, str(prefix["seg_map_path"])).absolute(),
            len(classes) or NUM_CLASSES,
            classes,
        )
    ]


def specs_from_config(cfg: Mapping[str, Any], *, train: bool = True, val: bool = True) -> list[ListSpec]:
    """The lists a training config reads: its train dataset and (with a val loop) its val dataset."""
    specs: list[ListSpec] = []
    if train and cfg.get("train_dataloader"):
        specs += specs_from_dataset(cfg["train_dataloader"]["dataset"])
    if val and cfg.get("val_dataloader") and cfg.get("val_cfg") is not None:
        specs += specs_from_dataset(cfg["val_dataloader"]["dataset"])
    return list(dict.fromkeys(specs))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def files_stamp(pairs: list[tuple[str, str]]) -> str:
    """A digest of every listed file's size and modification time: a mask rewritten in place (its
    folder's time unchanged) is checked again. Two `stat` calls per pair, no decoding."""
    digest = hashlib.sha256()
    for image, mask in pairs:
        for path in (image, mask):
            try:
                st = os.stat(path)
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _cache_file(spec: ListSpec) -> Path:
    stat = spec.list_path.stat()
    key = json.dumps(
        [CACHE_VERSION, str(spec.list_path), stat.st_size, stat.st_mtime_ns, str(spec.image_dir), _mtime(spec.image_dir), str(spec.mask_dir), _mtime(spec.mask_dir)]
    )
    if spec.num_classes != NUM_CLASSES or spec.classes:
        key += f"|{spec.num_classes}|{','.join(spec.classes)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    own = spec.image_dir.parent / OWN_DIR
    if own.is_dir():  # an own dataset: its cache goes into vocseg's folder, never beside the user's files
        return own / "precheck" / f"precheck-{digest}.json"
    return spec.image_dir.parent / CACHE_DIR / f"precheck-{digest}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("ok") is True else None


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    from vocseg.files import owned_write_text

    try:
        owned_write_text(path, json.dumps(data) + "\n")
    except (OSError, VocsegError):
        pass  # a read-only data root, or a file there that vocseg did not write: checked again next time


def list_pairs(spec: ListSpec, indexes: dict[Path, FolderIndex]) -> list[tuple[str, str]]:
    """(image, mask) paths for each id of the list, with the spelling of the extension that exists."""
    ids = read_id_list(spec.list_path)
    images = indexes.setdefault(spec.image_dir, FolderIndex(spec.image_dir))
    masks = indexes.setdefault(spec.mask_dir, FolderIndex(spec.mask_dir))
    return [
        (
            str(images.find(i, IMAGE_SUFFIXES) or spec.image_dir / f"{i}.jpg"),
            str(masks.find(i, MASK_SUFFIXES) or spec.mask_dir / f"{i}.png"),
        )
        for i in dict.fromkeys(ids)
    ]


def data_root_of(spec: ListSpec) -> Path:
    """The folder holding VOCdevkit/ for a spec inside a VOC tree, else the image folder's parent."""
    voc = spec.image_dir.parent
    return voc.parent.parent if voc.parent.name == "VOCdevkit" else voc


def precheck(
    specs: Iterable[ListSpec],
    *,
    workers: int | None = None,
    use_cache: bool = True,
    on_start: Callable[[int], None] | None = None,
) -> PrecheckResult:
    """Check every pair the lists name; raise VocsegError (one line) at the first bad ones.

    `on_start(n)` is called before n pairs are read (not when every list is cached).
    """
    specs = list(dict.fromkeys(specs))
    result = PrecheckResult()
    todo: list[tuple[ListSpec, list[tuple[str, str]], Path | None]] = []
    indexes: dict[Path, FolderIndex] = {}
    for spec in specs:
        if not spec.list_path.is_file():
            raise VocsegError(
                f"Split list {spec.list_path} does not exist.",
                f"Run `vocseg prepare --check --data-root {data_root_of(spec)}` to see what the data root lacks.",
            )
        cache = _cache_file(spec) if use_cache else None
        cached = _read_cache(cache) if cache else None
        pairs = list_pairs(spec, indexes)
        if cached is not None and cached.get("files") == files_stamp(pairs):
            result.pairs += int(cached.get("pairs", 0))
            result.warnings += [str(w) for w in cached.get("warnings", [])]
            continue
        if not pairs:
            raise VocsegError(f"Split list {spec.list_path} holds no image ids.", "Pass a list with image ids (one per line).")
        todo.append((spec, pairs, cache))
    distinct = list(dict.fromkeys(p for _, pairs, _ in todo for p in pairs))
    if distinct:
        if on_start:
            on_start(len(distinct))
        found: dict[tuple[str, str], PairResult] = {}
        for n in dict.fromkeys(s.num_classes for s, _, _ in todo):
            subset = list(dict.fromkeys(p for s, pairs, _ in todo if s.num_classes == n for p in pairs))
            found.update(check_pairs(subset, workers=workers, rule=MaskRule(num_classes=n)))
        result.checked = len(distinct)
        bad = [(p, r) for p, r in found.items() if r.problem]
        if bad:
            spec = next(s for s, pairs, _ in todo if bad[0][0] in pairs)
            others = [os.path.basename(r.bad_file or p[0]) for p, r in bad[1 : 1 + SHOWN]]
            more = f" and {len(bad) - 1 - SHOWN} more" if len(bad) > 1 + SHOWN else ""
            also = f"; also {', '.join(others)}{more}" if others else ""
            raise VocsegError(
                f"{len(bad)} of {len(distinct)} image/mask pairs cannot be used: {bad[0][1].problem}{also}.",
                f"Nothing was started. `vocseg prepare --check --data-root {data_root_of(spec)}` lists every problem.",
            )
        for spec, pairs, cache in todo:
            split = SplitReport(spec.list_path.stem, len(pairs), None)
            classes = spec.classes or (CLASSES if spec.num_classes == NUM_CLASSES else tuple(f"class {i}" for i in range(spec.num_classes)))
            fill_split(split, pairs, found, classes, scored=spec.list_path.stem == "val")
            if split.problems:  # every mask of the list is void: nothing to learn or score
                raise VocsegError(
                    f"{spec.list_path}: {split.problems[0]}.",
                    f"Nothing was started. `vocseg prepare --check --data-root {data_root_of(spec)}` lists every problem.",
                )
            warnings = split.warnings
            result.pairs += len(pairs)
            result.warnings += warnings
            if cache is not None:
                _write_cache(cache, {"ok": True, "list": str(spec.list_path), "pairs": len(pairs), "warnings": warnings, "files": files_stamp(pairs)})
    result.warnings = list(dict.fromkeys(result.warnings))
    return result


def warning_line(warnings: list[str]) -> str | None:
    """One line for the warnings of a precheck (the first named), or None."""
    if not warnings:
        return None
    more = f" ({len(warnings) - 1} more warnings; `vocseg prepare --check` lists them)" if len(warnings) > 1 else ""
    return f"{warnings[0]}{more}"


CHECKED_ENV = "VOCSEG_DATA_CHECKED"  # set by `vocseg train` around the launch: its processes skip the check


def check_before_training(specs: list[ListSpec], *, console: Any | None = None, workers: int | None = None) -> PrecheckResult:
    """`precheck` with what the person at the terminal needs: a line when pairs are read (not
    when cached) and the EXIF warning, on `console` (a rich Console) when given."""

    def started(n: int) -> None:
        if console is not None:
            console.print(f"checking the {n} image/mask pairs of {', '.join(s.list_path.name for s in specs)} (cached once they pass)", soft_wrap=True)

    result = precheck(specs, workers=workers, on_start=started)
    line = warning_line(result.warnings)
    if line and console is not None:
        from rich.markup import escape

        console.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    return result
