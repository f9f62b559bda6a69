"""The steps of `vocseg prepare`, each skipped when its output is already complete.

fetch archives (download or --from-dir, md5-checked) -> extract safely -> convert SBD -> write
lists -> check. A data root that already holds extracted trees is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vocseg.console import command
from vocseg.data.check import CheckReport, check_data_root
from vocseg.data.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import FaultContext, VocsegError


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def convert_and_list(root: Path, *, force: bool, workers: int | None, console: Console) -> None:
    """SBD .mat -> SegmentationClassAug PNGs (skipping done ones), then aug.txt and trainaug.txt."""
    from vocseg.data.sbd import convert_sbd, pending_mats, write_aug_lists

    cls_dir = root / SBD_SUBDIR / "cls"
    if not cls_dir.is_dir():
        raise VocsegError(f"No SBD labels at {cls_dir}.", "Run `vocseg prepare --aug` to fetch SBD, or drop --aug.")
    pending, total = pending_mats(root, force=force)
    if pending:
        with _progress(console) as progress:
            task = progress.add_task("convert SBD labels", total=total, completed=total - len(pending))
            converted = convert_sbd(root, workers=workers, force=force, progress=lambda n: progress.advance(task, n))
        console.print(f"SBD labels: converted {converted} of {total} to {root / VOC_SUBDIR / 'SegmentationClassAug'}")
    else:
        console.print(f"SBD labels: all {total} already converted")
    lists = write_aug_lists(root)
    held = total - len(lists.aug)
    why = (f": the {total} SBD labels minus {held} images that are in VOC train (trained on VOC's finer labels) "
           "or VOC val (never trained on)") if held > 0 else ""
    console.print(f"lists: aug.txt {len(lists.aug)} ids{why}; trainaug.txt {len(lists.trainaug)} ids (VOC train + aug)", soft_wrap=True)


PREPARE_LOCK = ".vocseg-prepare.lock"


@contextmanager
def prepare_lock(root: Path) -> Iterator[None]:
    """One `vocseg prepare` per data root at a time (`vocseg.files.lock`, as for run folders): two
    would extract, convert and list into the same folders. The lock file goes when prepare ends."""
    from vocseg.files import LockBusy, lock, owned_mkdir

    owned_mkdir(root, role="data")
    with ExitStack() as stack:
        try:
            stack.enter_context(lock(root, PREPARE_LOCK))
        except LockBusy as busy:
            holder = f" (pid {busy.holder})" if busy.holder.isdigit() else ""
            raise VocsegError(
                f"{root} is being prepared by another vocseg process{holder}.",
                f"Wait for it to finish, then run `{command('prepare', '--check', '--data-root', root)}`; if you stop it, "
                "the next `vocseg prepare` resumes or redoes what it left.",
            ) from None
        yield


def prepare_demo(root: Path, *, force: bool, workers: int | None, console: Console) -> None:
    """Write the demo dataset (again with `force`, or when a previous run was interrupted), then convert and list.

    What the demo writes is recorded with the role "demo" as it is written (`vocseg.files`), and its
    marker last: a tree the record names as the demo's but without the marker is an interrupted
    demo, written again. Only the demo's own unchanged files are ever deleted: a real dataset (even
    one vocseg extracted) and the user's files stay, and a tree that is not the demo's refuses.
    """
    from vocseg.data.demo import DEMO_MARKER, DEMO_ROLE, write_demo_dataset
    from vocseg.files import folder_record, owned_rmtree, recorded

    tops = [root / VOC_SUBDIR.split("/")[0], root / SBD_SUBDIR.split("/")[0]]
    marker_ok = recorded(root / DEMO_MARKER, role=DEMO_ROLE)
    demo_trees = [t for t in tops if t.is_dir() and not t.is_symlink() and folder_record(t).dirs.get(".") == DEMO_ROLE]
    if marker_ok and not force and len(demo_trees) == len(tops):
        console.print(f"demo dataset: already in {root}")
    else:
        foreign = [t for t in tops if os.path.lexists(t) and t not in demo_trees and not (t.is_dir() and not t.is_symlink() and not os.listdir(t))]
        if foreign:
            raise VocsegError(
                f"{foreign[0]} is not vocseg's demo dataset (a real VOC/SBD tree or your own files); it is left as it is.",
                "Pick another --data-root for the demo (e.g. an empty folder).",
            )
        if demo_trees and not marker_ok:
            console.print(f"demo dataset: a previous run stopped halfway in {root}; writing it again")
        kept = [p for t in demo_trees for p in owned_rmtree(t)]
        if os.path.lexists(root / DEMO_MARKER):
            kept += owned_rmtree(root / DEMO_MARKER)
        if kept:
            raise VocsegError(
                f"{kept[0]} is not the demo's (a file you added or changed){f' ({len(kept) - 1} more)' if len(kept) > 1 else ''}; "
                "the demo's own files were removed, yours are left as they are.",
                f"Move them away and run `{command('prepare', '--demo', '--data-root', root)}` again, or pick another --data-root.",
            )
        with FaultContext(where=root, kept=f"{root} is marked unfinished (the demo's marker is written last): the next run writes the demo again",
                          next_command=command("prepare", "--demo", "--data-root", root)):
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
    from vocseg.data.extract import extracted_marker, recover_interrupted, tree_state
    from vocseg.data.fetch import parse_md5_overrides
    from vocseg.data.voc import ARCHIVES

    overrides = parse_md5_overrides(md5)  # a typo in --md5 fails before any download
    recover_interrupted(root)
    need: dict[str, bool] = {}
    for key in ("voc", "sbd") if aug else ("voc",):
        archive = ARCHIVES[key]
        state = tree_state(root, archive)
        if state == "partial" and not force:
            missing = next(p for p in archive.required if not (root / p).exists())
            raise VocsegError(
                f"{root / archive.top} exists but has no {root / missing}: an incomplete copy.",
                f"Complete it, move it away, or re-run with --redo to replace it with a fresh extraction of {archive.name}.",
            )
        need[key] = force or state != "complete"
        if not need[key]:
            marker = extracted_marker(root, archive)
            source = f"extracted from {marker.get('archive')} (md5 {marker.get('md5')})" if marker else "already there (not extracted by vocseg)"
            console.print(f"{archive.label}: {source} in {root / archive.top}, used as is")
    if any(need.values()):
        from vocseg.data.fetch import fetch_and_extract

        fetch_and_extract(
            root,
            aug=aug,
            force=force,
            mirror=mirror,
            cache_dir=cache_dir,
            from_dir=from_dir,
            md5_overrides=overrides,
            need_voc=need.get("voc", False),
            need_sbd=need.get("sbd", False),
            console=console,
        )
    if aug:
        convert_and_list(root, force=force, workers=workers, console=console)


def run_check(root: Path, *, aug: bool, workers: int | None, console: Console) -> CheckReport:
    if not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"{root} has no {VOC_SUBDIR}.", f"Run `{command('prepare', *(['--aug'] if aug else []), '--data-root', root)}` first.")
    aug = aug or (root / VOC_SUBDIR / SPLITS_SUBDIR / "aug.txt").is_file()
    with _progress(console) as progress:
        task = progress.add_task("check image/mask pairs", total=None)
        report = check_data_root(
            root,
            aug=aug,
            workers=workers or os.cpu_count(),
            progress=lambda n: progress.advance(task, n),
            on_total=lambda n: progress.update(task, total=n),
        )
    return report
