"""The steps of `vocseg prepare`, each skipped when its output is already complete.

fetch archives (download or --from-dir, md5-checked) -> extract safely -> convert SBD -> write
lists -> check. A data root that already holds extracted trees is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vocseg.check import CheckReport, check_data_root
from vocseg.errors import VocsegError
from vocseg.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=False
    )


def convert_and_list(root: Path, *, force: bool, workers: int | None, console: Console) -> None:
    """SBD .mat -> SegmentationClassAug PNGs (skipping done ones), then aug.txt and trainaug.txt."""
    from vocseg.sbd import convert_sbd, write_aug_lists

    cls_dir = root / SBD_SUBDIR / "cls"
    if not cls_dir.is_dir():
        raise VocsegError(f"No SBD labels at {cls_dir}.", "Run `vocseg prepare --aug` to fetch SBD, or drop --aug.")
    total = sum(1 for p in cls_dir.iterdir() if p.suffix == ".mat")
    with _progress(console) as progress:
        task = progress.add_task("convert SBD labels", total=total)
        done_before = total
        converted = convert_sbd(root, workers=workers, force=force, progress=lambda n: progress.advance(task, n))
        progress.update(task, completed=total)
    if converted == 0 and done_before:
        console.print(f"SBD labels: all {total} already converted")
    lists = write_aug_lists(root)
    console.print(f"lists: aug.txt {len(lists.aug)} ids, trainaug.txt {len(lists.trainaug)} ids (sorted)")


def prepare_demo(root: Path, *, force: bool, workers: int | None, console: Console) -> None:
    from vocseg.demo_data import DEMO_MARKER, write_demo_dataset

    if (root / DEMO_MARKER).is_file() and not force:
        console.print(f"demo dataset: already in {root}")
    else:
        if (root / VOC_SUBDIR).exists() and not (root / DEMO_MARKER).is_file():
            raise VocsegError(f"{root} already holds a VOCdevkit that is not the demo dataset.", "Pick another --data-root for the demo.")
        splits = write_demo_dataset(root)
        console.print(f"demo dataset: wrote {splits.trainval + splits.aug} images to {root} (train {splits.train}, val {splits.val}, SBD aug {splits.aug})")
    convert_and_list(root, force=force, workers=workers, console=console)


def prepare_voc(
    root: Path,
    *,
    aug: bool,
    force: bool,
    workers: int | None,
    mirror: str | None,
    cache_dir: Path | None,
    from_dir: Path | None,
    md5: list[str],
    console: Console,
) -> None:
    """Real VOC 2012 (+ SBD): fetch and extract what is not already there, then convert."""
    voc_ready = (root / VOC_SUBDIR / SPLITS_SUBDIR / "val.txt").is_file() and (root / VOC_SUBDIR / "JPEGImages").is_dir()
    sbd_ready = (root / SBD_SUBDIR / "cls").is_dir() and (root / SBD_SUBDIR / "train.txt").is_file()
    if force or not voc_ready or (aug and not sbd_ready):
        from vocseg.fetch import fetch_and_extract

        fetch_and_extract(
            root, aug=aug, force=force, mirror=mirror, cache_dir=cache_dir, from_dir=from_dir, md5_overrides=md5,
            need_voc=force or not voc_ready, need_sbd=aug and (force or not sbd_ready), console=console,
        )
    else:
        console.print(f"VOC 2012{' and SBD' if aug else ''}: already extracted in {root}, used as is")
    if aug:
        convert_and_list(root, force=force, workers=workers, console=console)


def run_check(root: Path, *, aug: bool, workers: int | None, console: Console) -> CheckReport:
    if not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"{root} has no {VOC_SUBDIR}.", f"Run `vocseg prepare{' --aug' if aug else ''} --data-root {root}` first.")
    aug = aug or (root / VOC_SUBDIR / SPLITS_SUBDIR / "aug.txt").is_file()
    with _progress(console) as progress:
        task = progress.add_task("check image/mask pairs", total=None)
        report = check_data_root(root, aug=aug, workers=workers or os.cpu_count(), progress=lambda n: progress.advance(task, n))
        progress.update(task, total=progress.tasks[0].completed)
    return report
