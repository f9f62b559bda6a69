"""SBD -> VOC: `cls/*.mat` to `SegmentationClassAug/*.png`, and the aug / trainaug split lists.

Pixel-identical to mmseg's `tools/dataset_converters/voc_aug.py` (plain 2-D uint8 PNG of
`GTcls.Segmentation`), with the same list sets, written sorted so runs are reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vocseg.errors import VocsegError
from vocseg.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR


def read_sbd_mat(path: Path) -> np.ndarray:
    """GTcls.Segmentation of an SBD `.mat` as uint8 (as mmseg's converter reads it)."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
        return data["GTcls"][0]["Segmentation"][0].astype(np.uint8)
    except Exception as exc:  # scipy raises many types for a damaged file
        raise VocsegError(f"Corrupt SBD label file {path}: {type(exc).__name__}.", "Delete it and re-extract benchmark.tgz (vocseg prepare --aug --force).") from None


def convert_one(mat_path: Path, out_dir: Path) -> str:
    """Convert one `.mat` to `out_dir/<id>.png` atomically; return the id."""
    from PIL import Image

    mask = read_sbd_mat(mat_path)
    target = out_dir / f"{mat_path.stem}.png"
    tmp = out_dir / f".{mat_path.stem}.{os.getpid()}.png"
    Image.fromarray(mask).save(tmp, "PNG")
    os.replace(tmp, target)
    return mat_path.stem


def _convert_chunk(args: tuple[list[str], str, str]) -> list[str]:
    names, in_dir, out_dir = args
    return [convert_one(Path(in_dir) / n, Path(out_dir)) for n in names]


def convert_sbd(
    root: Path,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Convert every `cls/*.mat` under `root`'s SBD tree; skip PNGs already there unless `force`.

    Returns the number converted. Work goes out in chunks so process start-up and pickling stay
    small next to the decoding itself.
    """
    in_dir = root / SBD_SUBDIR / "cls"
    out_dir = root / VOC_SUBDIR / "SegmentationClassAug"
    if not in_dir.is_dir():
        raise VocsegError(f"No SBD labels at {in_dir}.", "Run `vocseg prepare --aug` to fetch and extract SBD.")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in in_dir.iterdir() if p.suffix == ".mat")
    if not force:
        done = {p.stem for p in out_dir.iterdir() if p.suffix == ".png"}
        names = [n for n in names if n[:-4] not in done]
    if not names:
        return 0
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1:
        for name in names:
            convert_one(in_dir / name, out_dir)
            if progress:
                progress(1)
        return len(names)
    chunk = max(1, min(64, len(names) // (workers * 8) or 1))
    chunks = [names[i : i + chunk] for i in range(0, len(names), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done_ids in pool.map(_convert_chunk, [(c, str(in_dir), str(out_dir)) for c in chunks]):
            if progress:
                progress(len(done_ids))
    return len(names)


def read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise VocsegError(f"Split list {path} is missing.", "Re-extract the dataset (vocseg prepare --force).")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class AugLists:
    aug: list[str]
    trainaug: list[str]


def aug_lists(voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Iterable[str], sbd_val: Iterable[str]) -> AugLists:
    """mmseg's sets: trainaug = (VOC train | SBD) - VOC val; aug = SBD - (VOC train | VOC val). Sorted."""
    train, val, sbd = set(voc_train), set(voc_val), set(sbd_train) | set(sbd_val)
    return AugLists(aug=sorted(sbd - train - val), trainaug=sorted((train | sbd) - val))


def write_aug_lists(root: Path) -> AugLists:
    splits = root / VOC_SUBDIR / SPLITS_SUBDIR
    sbd = root / SBD_SUBDIR
    lists = aug_lists(read_ids(splits / "train.txt"), read_ids(splits / "val.txt"), read_ids(sbd / "train.txt"), read_ids(sbd / "val.txt"))
    for name, ids in (("aug.txt", lists.aug), ("trainaug.txt", lists.trainaug)):
        tmp = splits / f".{name}.tmp"
        tmp.write_text("".join(f"{i}\n" for i in ids))
        tmp.replace(splits / name)
    return lists
