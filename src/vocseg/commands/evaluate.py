"""`vocseg eval`: per-class IoU/Acc of a checkpoint on a split, as a table, JSON, CSV and charts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

# Folders eval makes in its results folder: the split lists it evaluates and MMEngine's log folders.
EVAL_DIRS = r"lists|\d{8}_\d{6}"


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    target: Annotated[str, typer.Argument(help="A run folder (its newest checkpoint), a checkpoint .pth, or official:upernet-r50-40k (also -r50-20k, -r101-20k, -r101-40k).", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="val, train, trainval, aug, trainaug, or a file of image ids (one per line).")] = "val",
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Dataset root holding VOCdevkit/ (default: the config's).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write the per-class table as CSV here.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: RUN/eval, else runs/eval/NAME).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Official multi-scale (0.5-1.75) + flip test-time augmentation.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the confusion heatmap and IoU bar chart PNGs.")] = True,
    save_predictions: Annotated[Optional[Path], typer.Option("--save-predictions", help="Also write each predicted label map (VOC palette PNG) into this folder.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", min=0, help="Data loader workers (default: the config's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace result files (--json, --csv, in -o) that vocseg did not write.")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, Acc, Dice, Precision; mIoU, mAcc, aAcc (percent, mmseg's IoUMetric).

    Results go to RUN/eval/ (or --out): SPLIT.json, SPLIT.csv, SPLIT_confusion.png, SPLIT_iou.png.
    """
    from vocseg.commands.render import eval_report_table
    from vocseg.console import console
    from vocseg.evaluation.eval_result import write_csv, write_json
    from vocseg.evaluation.evaluate import evaluate as run_eval
    from vocseg.evaluation.evaluate import save_outputs
    from vocseg.files import check_may_write, check_output_folder

    # Outputs the user named are checked before the (long) evaluation: never an input, never a
    # file vocseg did not write unless --force.
    inputs = [p for p in (Path(target), config) if p is not None and not str(p).startswith("official:")]
    for option, path in (("--json", json_out), ("--csv", csv_out)):
        if path is not None:
            check_may_write(path, force=force, inputs=inputs, option=option)
    if out is not None:  # a folder the user named: results, lists/ and MMEngine's timestamped logs go there
        check_output_folder(out, force=force, option="-o", own_dirs=EVAL_DIRS, may_write=eval_writes(split))
    if save_predictions is not None:  # label maps named after image ids: never over the data's own masks or a user's files
        check_output_folder(save_predictions, option="--save-predictions", role="output")  # --force included: PNGs of the user's (or the dataset's masks) are never replaced
    result, _ = run_eval(target, split=split, config=config, data_root=data_root, tta=tta, verbose=verbose, out_dir=out, num_workers=num_workers, save_predictions=save_predictions)
    name = target if target.startswith("official:") else Path(result.checkpoint).name
    from vocseg.data.precheck import warning_line

    if line := warning_line(result.extra.get("data_warnings", [])):
        from rich.markup import escape

        console.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    console.print(eval_report_table(result, title=f"{name} on {result.split} ({result.num_images} images){' + TTA' if tta else ''}"))
    out_dir, tag = Path(result.extra["out_dir"]), result.extra["tag"]
    if out is not None:  # a folder the user named (RUN/eval and runs/eval/NAME are vocseg's own)
        names = [f"{tag}.json", f"{tag}.csv"] + ([f"{tag}_confusion.png", f"{tag}_iou.png"] if plots else [])
        for name in names:
            check_may_write(out_dir / name, force=force, inputs=inputs, option="-o")
    saved = save_outputs(result, out_dir, tag, plots=plots, force=force and out is not None)
    if json_out:
        write_json(result, json_out, force=force)
        saved.append(json_out)
    if csv_out:
        write_csv(result, csv_out, force=force)
        saved.append(csv_out)
    # Everything this evaluation wrote was recorded as it was written (vocseg.files; MMEngine's log
    # folder and config copy by vocseg.evaluation.evaluate): a re-run may replace it, nothing else.
    if save_predictions:  # each PNG was recorded as it was written (vocseg.visualization.overlays.save_label_png)
        saved.append(save_predictions)
    console.print("results: " + ", ".join(str(p) for p in saved))


def eval_writes(split: str) -> Callable[[str], bool]:
    """Whether eval could write a file of this name into its results folder: the results of the
    split (`<tag>.json/.csv`, `<tag>_iou.png`, `<tag>_images.json`, ...) and MMEngine's copy of the
    config (`*.py`). Other files of the user's in that folder are left alone."""
    stem = Path(split).stem if (Path(split).suffix or "/" in split) else split

    def writes(name: str) -> bool:
        path = Path(name)
        return path.suffix == ".py" or (stem in path.stem and path.suffix in (".json", ".csv", ".png"))

    return writes
