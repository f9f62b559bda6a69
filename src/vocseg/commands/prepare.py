"""`vocseg prepare`: get VOC 2012 (and SBD with --aug) into DATA_ROOT, convert, list, check."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vocseg.commands.options import DATA, ClassesOpt, DataRootOpt, WorkersOpt, command
from vocseg.data.voc import SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe  # the one place that decides whether the aug set is used

if TYPE_CHECKING:
    from vocseg.data.check import CheckReport

DOWNLOAD = "Download"


def register(app: typer.Typer) -> None:
    command(app, "prepare")(prepare)


def prepare(
    data_root: DataRootOpt = None,
    aug: Annotated[Optional[bool], typer.Option("--aug/--no-aug", help="Also SBD (what `vocseg train` uses by default): convert its .mat labels and write aug.txt / trainaug.txt. --no-aug: VOC only (then train with --no-aug). With --check: checked when given or present.", show_default=False, rich_help_panel=DATA)] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Write the small built-in demo dataset (VOC + SBD layouts) instead of downloading.", rich_help_panel=DATA)] = False,
    check_only: Annotated[bool, typer.Option("--check", help="Only check an existing data root.")] = False,
    redo: Annotated[bool, typer.Option("--redo", help="Redo every step, even those already complete (was --force).")] = False,
    workers: WorkersOpt = None,
    mirror: Annotated[Optional[str], typer.Option("--mirror", help="Base URL of a VOC mirror to try first.", rich_help_panel=DOWNLOAD)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where downloaded archives are kept (default: the user cache folder).", rich_help_panel=DOWNLOAD)] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from-dir", help="Take the archives from this folder instead of downloading.", rich_help_panel=DOWNLOAD)] = None,
    md5: Annotated[Optional[list[str]], typer.Option("--md5", metavar="NAME=MD5", help="Accept an unofficial archive: NAME=MD5 (e.g. VOCtrainval_11-May-2012.tar=...).", rich_help_panel=DOWNLOAD)] = None,
    own: Annotated[bool, typer.Option("--own", help="With --demo: a small own-classes dataset in labelme's layout (class_names.txt, palette PNG ids, no lists) instead of VOC's.", rich_help_panel=DATA)] = False,
    classes: ClassesOpt = None,
    convert_rgb_masks: Annotated[bool, typer.Option("--convert-rgb-masks", help="Masks saved as RGB pictures in VOC palette colours become palette PNGs of class ids; "
                                                    "the originals are moved to SegmentationClass-rgb-originals/ (resp. SegmentationClassAug-...).")] = False,
) -> None:
    """Download, verify, extract and convert PASCAL VOC 2012 and SBD (--no-aug: VOC only), then check the result."""
    from vocseg.console import console
    from vocseg.data.prepare import prepare_lock, run_check
    from vocseg.recipe.recipe import default_data_root

    force = redo
    workers = max(1, workers) if workers is not None else None  # 0 (in this process, for loaders) means one here
    root = (data_root or default_data_root()).expanduser().resolve()
    if own and not demo:
        raise VocsegError("--own goes with --demo (the own-classes demo dataset).", f"Run `vocseg prepare --demo --own --data-root {root}`.")
    if demo and own:
        from vocseg.data.demo import write_own_demo

        count = write_own_demo(root)
        console.print(f"own-classes demo: wrote {count} images in labelme's layout to {root}", soft_wrap=True)
    if own or not demo:
        if prepare_own(root, classes, check_only=check_only, workers=workers, demo=demo):
            return
    if check_only:
        aug = bool(aug)  # not given: checked when aug.txt is there (run_check looks)
    elif aug is None:
        aug = Recipe.aug  # prepare what `vocseg train` uses by default
    # --check alone only reads: no lock, so a read-only (shared) data root can be checked.
    if demo:  # someone's dataset (with or without a class file): refused before anything (the lock) is written
        refuse_demo_into_a_dataset(root)
    with prepare_lock(root) if not (check_only and not convert_rgb_masks) else nullcontext():
        if demo:
            from vocseg.data.prepare import prepare_demo

            prepare_demo(root, force=force, workers=workers, console=console)
            aug = True
        elif not check_only:
            from vocseg.data.prepare import prepare_voc

            prepare_voc(root, aug=aug, force=force, workers=workers, mirror=mirror, cache_dir=cache_dir, from_dir=from_dir, md5=md5 or [], console=console)
        if convert_rgb_masks:
            convert_colour_masks(root)
        report = run_check(root, aug=aug, workers=workers, console=console)
    from vocseg.console import command, shown

    print_report(report, again=command("prepare", "--check", "--data-root", root))
    has_aug = aug or (root / VOC_SUBDIR / SPLITS_SUBDIR / "aug.txt").is_file()  # --check alone: what is there

    train = ["train", "--data-root", root, *([] if has_aug or Recipe.aug is False else ["--no-aug"]), *demo_train_flags(root)]
    console.print(f"[green]ok:[/] {shown(root)} is ready. Train with: {shown(command(*train))}", soft_wrap=True)


def refuse_demo_into_a_dataset(root: Path) -> None:
    """Raise the one-line refusal when `root` holds a dataset of its own (images without a class
    file: `unknown_classes_error`; an own export with one): the demo goes to a folder of its own."""
    from vocseg.console import command
    from vocseg.data.dataset import detect, unknown_classes_error

    if detect(root).is_voc:
        refusal = unknown_classes_error(root, ("prepare", "--check", "--data-root", root))
        if refusal is not None:
            raise refusal
        return
    names = (f"{root.name}-demo", *(f"{root.name}-demo{i}" for i in range(2, 100)))
    other = next((root.parent / name for name in names if not (root.parent / name).exists()), root.parent / names[0])
    raise VocsegError(f"{root} holds a dataset of its own; the demo is written only into a folder of its own.",
                      f"Pass a new --data-root for the demo: `{command('prepare', '--demo', '--data-root', other)}`.")


def demo_train_flags(root: Path, *, own: bool = False) -> tuple[str, ...]:
    """The demo's training flags (`vocseg.data.demo.DEMO_TRAIN_FLAGS`, the README's demo recipe)
    for the "Train with:" hint when `root` is a demo dataset (`own`: the own-classes demo, written
    just now), else none: a bare `vocseg train` is the VOC recipe (r50, 160k iterations)."""
    from vocseg.data.demo import DEMO_TRAIN_FLAGS, demo_split_sizes

    return DEMO_TRAIN_FLAGS if own or demo_split_sizes(root) is not None else ()


def convert_colour_masks(root: Path) -> None:
    """`--convert-rgb-masks`: the listed masks saved as RGB in VOC palette colours become palette PNGs."""
    from vocseg.console import console
    from vocseg.data.check import listed_masks
    from vocseg.data.rgb_masks import colour_masks, convert_rgb_masks
    from vocseg.data.voc import VOC_SUBDIR

    if not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"{root} has no {VOC_SUBDIR}.", f"Pass the data root holding it (--data-root), or run `vocseg prepare --data-root {root}` first.")
    report = convert_rgb_masks(colour_masks(listed_masks(root)))
    if report.converted:
        kept = ", ".join(str(d) for d in sorted(report.backup_dirs))
        console.print(f"RGB masks: converted {len(report.converted)} to palette PNGs of class ids in place; the originals are in {kept}", soft_wrap=True)
    else:
        console.print("RGB masks: none in VOC palette colours to convert", soft_wrap=True)
    for path, why in report.unconvertible[:5]:
        console.print(f"  [yellow]-[/] not converted: {path}: {why}", soft_wrap=True)


def print_report(report: CheckReport, *, again: str) -> None:
    """The check's table, its notes and warnings, then its problems (a non-zero exit, whose hint
    says to run `again` after fixing them): the exit status answers "can `vocseg train` and
    `eval` use this tree?"."""
    from rich.markup import escape

    from vocseg.commands.render import check_table
    from vocseg.console import console

    if report.dataset:
        console.print(f"found {escape(report.dataset)}", soft_wrap=True)
    console.print(check_table(report))
    for note in report.notes:
        console.print(f"  {escape(note)}", soft_wrap=True)
    exif = [w for w in report.warnings if "EXIF orientation" in w]
    others = [w for w in report.warnings if w not in exif]
    for header, warnings in (
        (f"{len(exif)} images carry an EXIF orientation tag that turns or mirrors them:", exif),
        (f"{len(others)} things `train` and `eval` accept but you may not expect:", others),
    ):
        if not warnings:
            continue
        console.print(f"[bold yellow]warning:[/] {header}", soft_wrap=True)
        for warning in warnings[:8]:
            console.print(f"  [yellow]-[/] {escape(warning)}", soft_wrap=True)
        if len(warnings) > 8:
            console.print(f"  ({len(warnings) - 8} more)", soft_wrap=True)
    if not report.ok:
        count = f"{len(report.problems)} problem{'' if len(report.problems) == 1 else 's'}"
        console.print(f"[bold red]{count}[/] that `train` and `eval` refuse:", soft_wrap=True)  # apart from the warnings above
        for problem in report.problems[:20]:
            console.print(f"  [red]-[/] {escape(problem)}", soft_wrap=True)  # whole paths, never broken
        more = len(report.problems) - 20
        fix = f"Fix {'it' if len(report.problems) == 1 else 'them'}, then run `{again}` again."
        raise VocsegError(f"{count} in {report.root}" + (f" ({more} more not shown)" if more > 0 else "") + ".", fix, exit_code=1)


def prepare_own(root: Path, classes: Path | None, *, check_only: bool, workers: int | None, demo: bool) -> bool:
    """An own dataset under `root` (a class file found or given): check it (and without --check,
    write vocseg's split and converted masks into its .vocseg/ folder). Never downloads VOC into it.
    Returns False when `root` holds no dataset at all (then VOC is what `vocseg prepare` fetches)."""
    import os

    from vocseg.console import command, console, shown
    from vocseg.data.check import check_own_dataset
    from vocseg.data.dataset import detect, materialize, unknown_classes_error

    spec = detect(root, classes.expanduser().resolve() if classes else None)
    if spec.is_voc:
        if (root / VOC_SUBDIR).is_dir():
            return False  # PASCAL VOC (or vocseg's VOC demo): the VOC steps and check
        refusal = unknown_classes_error(root, ("prepare", "--check", "--data-root", root))
        if refusal is not None:
            raise refusal
        if check_only:
            raise VocsegError(f"{root} holds no dataset ({VOC_SUBDIR}/, or JPEGImages/ with class_names.txt or labelmap.txt).",
                              f"Get VOC with `vocseg prepare --data-root {root}` (2 GB), or point --data-root at your dataset.")
        return False
    if not check_only:
        spec = materialize(spec, console_print=lambda line: console.print(line, soft_wrap=True))
    report = check_own_dataset(spec, workers=workers or os.cpu_count())
    print_report(report, again=command("prepare", "--check", "--data-root", root))
    train = ["train", "--data-root", root, *(["--classes", classes] if classes else []), *(demo_train_flags(root, own=True) if demo else [])]
    console.print(f"[green]ok:[/] {shown(root)} is ready ({spec.num_classes} classes). Train with: {shown(command(*train))}", soft_wrap=True)
    return True

