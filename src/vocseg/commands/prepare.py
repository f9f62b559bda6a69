"""`vocseg prepare`: get VOC 2012 (and SBD with --aug) into DATA_ROOT, convert, list, check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe  # the one place that decides whether the aug set is used


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Where VOCdevkit/ goes (default: $VOCSEG_DATA_ROOT, else the user data folder).")
    ] = None,
    aug: Annotated[Optional[bool], typer.Option("--aug/--no-aug", help="Also SBD (what `vocseg train` uses by default): convert its .mat labels and write aug.txt / trainaug.txt. --no-aug: VOC only (then train with --no-aug). With --check: checked when given or present.", show_default=False)] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Write the small built-in demo dataset (VOC + SBD layouts) instead of downloading.")] = False,
    check_only: Annotated[bool, typer.Option("--check", help="Only check an existing data root.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo every step, even those already complete.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Processes for conversion and checking (default: all cores).")] = None,
    mirror: Annotated[Optional[str], typer.Option("--mirror", help="Base URL of a VOC mirror to try first.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where downloaded archives are kept (default: the user cache folder).")] = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from-dir", help="Take the archives from this folder instead of downloading.")] = None,
    md5: Annotated[Optional[list[str]], typer.Option("--md5", help="Accept an unofficial archive: NAME=MD5 (e.g. VOCtrainval_11-May-2012.tar=...).")] = None,
) -> None:
    """Download, verify, extract and convert PASCAL VOC 2012 and SBD (--no-aug: VOC only), then check the result."""
    from vocseg.commands.render import check_table
    from vocseg.console import console
    from vocseg.recipe.recipe import default_data_root

    root = (data_root or default_data_root()).expanduser().resolve()
    if check_only:
        aug = bool(aug)  # not given: checked when aug.txt is there (run_check looks)
    elif aug is None:
        aug = Recipe.aug  # prepare what `vocseg train` uses by default
    if demo:
        from vocseg.data.prepare import prepare_demo

        prepare_demo(root, force=force, workers=workers, console=console)
        aug = True
    elif not check_only:
        from vocseg.data.prepare import prepare_voc

        prepare_voc(root, aug=aug, force=force, workers=workers, mirror=mirror, cache_dir=cache_dir, from_dir=from_dir, md5=md5 or [], console=console)
    from vocseg.data.prepare import run_check

    report = run_check(root, aug=aug, workers=workers, console=console)
    console.print(check_table(report))
    if not report.ok:
        from rich.markup import escape

        for problem in report.problems[:20]:
            console.print(f"  [red]-[/] {escape(problem)}", soft_wrap=True)  # whole paths, never broken
        more = len(report.problems) - 20
        raise VocsegError(
            f"{len(report.problems)} problems in {root}" + (f" ({more} more not shown)" if more > 0 else "") + ".",
            "Re-run `vocseg prepare` (add --force to redo every step).",
            exit_code=1,
        )
    console.print(f"[green]ok:[/] {root} is ready. Train with: vocseg train --data-root {root}{'' if aug or Recipe.aug is False else ' --no-aug'}")
